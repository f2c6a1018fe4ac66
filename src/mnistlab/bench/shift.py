"""The shift suite: the zoo beyond MNIST's test set, in one table. What each model family buys, and what
augmentation buys, on MNIST-C-style corruptions, turned and restroked digits, and other styles
(`mnistlab shift`, `analysis.distribution_shift`).

Every row but the last is trained here (`training.engine.train`, the recipe as it is, seed 0, 5,000
images held out, the test set read once); the last is the packaged default model as shipped
(`_models/README.md`). Each is then measured on every set; the sets are made once and cached,
so the models see the same pixels. Writes shift-curves.png (every model along every sweep) beside the
JSON.

    mnistlab bench shift            # the full run: every model trained as its recipe says, every image
    mnistlab bench shift --quick    # 5,000 training images, one epoch, 500 images per set: a smoke run
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..analysis import distribution_shift
from ..models.default import DEFAULT_MODEL
from ..training.config import resolve
from ..training.engine import train
from .registry import suite

# name, recipe (None: settings alone), settings
ROWS = [
    ("logreg", None, {"model": "logreg", "epochs": 3, "optimizer": "adam", "lr": 1e-3}),
    ("seed-mlp", "seed-mlp", {}),
    ("seed-cnn (the Keras tutorial's CNN)", "seed-cnn", {}),
    ("fast", "fast", {}),
    # the packaged default's own recipe: width 24, rotation +-10, shift and zoom 10% (`_models/README.md`)
    ("fast w24 + seed augment (the default's recipe)", "fast",
     {"model_args": {"width": 24}, "epochs": 4, "augment": "seed", "batch_size": 128, "lr": 0.2}),
    # the same network with the generic augmentations and synthetic digits, as long as the row above
    # (its recipe's 20 epochs take about an hour on 2 CPU cores)
    ("fast w24 + robust augment and synthetic digits", "robust", {"epochs": 4}),
]
COLUMNS = ["clean", "corruption_mean", "corruption_worst", "rotate-30", "thin", "thick", "inverted", "uci", "uci-raw",
           "drawn", "drawn-raw", "printed", "printed-raw"]


def row_of(name: str, record: dict, train_s: float | None) -> dict:
    acc = {r["name"]: r["accuracy"] for r in record["sets"]}
    row = {"name": name, "epochs": record.get("epochs"), "synthetic": record.get("synthetic")}
    for col in COLUMNS:
        value = record.get(col) if col in ("clean", "corruption_mean", "corruption_worst") else acc.get(col)
        row[col] = None if value is None else round(100 * value, 2)
    row["worst_corruption"] = record.get("corruption_worst_name")
    row["train_s"] = train_s
    row["shift_s"] = round(record["seconds"]["total"], 1)
    row["goals_met"] = f"{sum(g['met'] for g in record['goals'])}/{len(record['goals'])}"
    row["sets"] = acc
    return row


def said(row: dict) -> None:
    """A line per model as the suite goes (it trains six): the table comes at the end."""
    trained = f"trained in {row['train_s']:.0f} s, " if row["train_s"] is not None else ""
    print(f"{row['name']}: {trained}clean {row['clean']:.2f}%, corruptions' mean {row['corruption_mean']:.2f}%, "
          f"measured in {row['shift_s']:.0f} s", flush=True)


@suite
def bench_shift(quick: bool = False, out_dir: str = "bench-results") -> list[dict]:
    n = 500 if quick else None
    rows, records = [], []
    with tempfile.TemporaryDirectory(prefix="mnistlab-bench-shift-") as tmp:
        for name, recipe, settings in ROWS:
            overrides = {**settings, "out": tmp, "progress": False, "validation": 5000, "seed": 0,
                         "name": f"row{len(rows)}"}
            if quick:
                overrides.update(train_subset=5000, epochs=1)
            summary = train(resolve(recipe, overrides), quiet=True)
            record = distribution_shift.shift(summary["run_dir"], n=n, pictures=False, quiet=True)
            record.update(epochs=summary["epochs_run"], synthetic=sum((summary.get("synthetic") or {}).values()))
            rows.append(row_of(name, record, round(summary["train_s"], 1)))
            records.append(record)
            said(rows[-1])
        record = distribution_shift.shift(DEFAULT_MODEL, n=n, out=tmp, pictures=False, quiet=True)
        rows.append(row_of("the packaged default (_models/)", record, None))
        records.append(record)
        said(rows[-1])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    picture = distribution_shift.curves(records, out / "shift-curves.png", labels=[r["name"] for r in rows])
    print(f"wrote {picture} (every model along every sweep)")
    return rows
