"""Beyond MNIST's test set: a model's accuracy on digits it has never seen the like of (`mnistlab shift`).

    mnistlab shift runs/seed-cnn-mnist-s0                    # every set; RUN/shift/shift-test.json, PNGs, page
    mnistlab shift default --sets corruptions,uci --n 2000

The sets (`data.shift_sets`): MNIST-C-style corruptions, variants (turned 30 degrees, thin, thick,
inverted), sweeps (rotation, scale, translation, shear, stroke thickness) and other styles, each with
and without MNIST-form preprocessing. For each: accuracy, errors, and the drop from clean (points of
accuracy lost against the same model on the unshifted images); the mean and the worst over the
corruptions; for each style, what preprocessing is worth (accuracy in MNIST's form less as it comes).

Any model a verb takes: a run, a checkpoint, an ensemble file, a classical model or one's own, loaded
by `load_predictor` (fp32, channels-last: the one inference path). Writes shift-SPLIT.json, the sweeps'
curves, a picture of what each set looks like, a gallery of each set's mistakes and a page beside the
model (RUN/shift/; --out elsewhere).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .. import atomic, pages
from ..data import shift_sets
from ..errors import MnistlabError
from ..models.predictor import Predictor, load_predictor
from ..models.source import locate
from ..pictures import figure, image_grid, save_figure, save_png, titled
from ..progress import Stages
from ..rundir import RunDir
from . import plots

DIGITS = [str(d) for d in range(10)]

# The goals of the packaged default model (issue 46), each a figure of a record: what `bench shift` and
# every result show beside their figures. (name, how it is read, at least)
GOALS = [
    ("clean", "clean", 0.994),
    ("MNIST-C-style mean over the 15", "corruption_mean", 0.97),
    ("MNIST-C-style worst", "corruption_worst", 0.85),
    ("rotated +-30 degrees", "rotate-30", 0.98),
    ("thinned strokes", "thin", 0.97),
    ("thickened strokes", "thick", 0.97),
    ("printed, fonts not used in training", "printed", 0.97),
    ("UCI digits", "uci", 0.98),
]
GALLERY = 32  # mistakes per set's gallery


def check_digit_model(predictor: Predictor) -> None:
    meta = predictor.meta
    if list(meta.get("in_shape", [])) != [1, 28, 28] or list(meta.get("classes", [])) != DIGITS:
        raise MnistlabError(f"{meta.get('source')}: shift measures models of the ten digits on 28x28 images; this one "
                            f"reads {'x'.join(map(str, meta.get('in_shape', [])))} images into "
                            f"{meta.get('num_classes')} classes ({meta.get('dataset')})",
                            hint="pass a model trained on MNIST (or another dataset of 28x28 digits)")


def base_for(predictor: Predictor, split: str, data_dir=None) -> shift_sets.Base:
    """MNIST test, or the validation images the model's run held out (its holdout record)."""
    if split == "val":
        holdout = predictor.meta.get("holdout")
        if not holdout:
            raise MnistlabError(f"{predictor.meta.get('source')} records no validation split (trained without one, or "
                                "by an older mnistlab)", hint="measure --split test")
        if predictor.meta.get("dataset") != "mnist":
            raise MnistlabError(f"--split val: the model was trained on {predictor.meta.get('dataset')}, and the "
                                "validation sets are built from MNIST's training images", hint="measure --split test")
        return shift_sets.base_split("val", holdout, data_dir)
    return shift_sets.base_split(split, None, data_dir)


def measure(predictor: Predictor, built: list[shift_sets.ShiftSet], *, batch_size: int | None = None,
            keep: Callable[[shift_sets.ShiftSet], bool] = lambda s: False,
            done: Callable[[], None] = lambda: None) -> tuple[list[dict], dict]:
    """(a row per set: accuracy, errors, n, ...; {set name: probabilities} of the sets `keep` says);
    `done()` after each set."""
    rows, kept = [], {}
    for s in built:
        probs = predictor.probs(torch.from_numpy(s.images), **({"batch_size": batch_size} if batch_size else {}))
        pred = probs.argmax(1).numpy()
        correct = pred == s.labels
        row = {"name": s.name, "group": s.group, "about": s.about, "n": int(len(s.labels)),
               "accuracy": float(correct.mean()) if len(correct) else None, "errors": int((~correct).sum())}
        if s.sweep is not None:
            row.update(sweep=s.sweep, value=s.value)
        if "mnist_form" in s.facts:
            row["mnist_form"] = bool(s.facts["mnist_form"])
        rows.append(row)
        if keep(s):
            kept[s.name] = probs
        done()
    return rows, kept


def summarise(rows: list[dict]) -> dict:
    """The figures a table leads with: clean, the corruptions' mean and worst, each style's
    preprocessing worth, and the goals where their sets were measured."""
    by = {r["name"]: r for r in rows}
    clean = by["clean"]["accuracy"]
    for r in rows:
        r["drop"] = None if r["accuracy"] is None else clean - r["accuracy"]
    corr = [r for r in rows if r["group"] == "corruptions"]
    out = {"clean": clean}
    if corr:
        worst = min(corr, key=lambda r: r["accuracy"])
        out.update(corruption_mean=float(np.mean([r["accuracy"] for r in corr])), corruption_worst=worst["accuracy"],
                   corruption_worst_name=worst["name"], corruptions_measured=len(corr))
    out["preprocessing"] = {r["name"]: r["accuracy"] - by[f"{r['name']}-raw"]["accuracy"] for r in rows
                            if r["group"] == "styles" and f"{r['name']}-raw" in by}
    goals = []
    for name, key, least in GOALS:
        value = out.get(key) if key in ("clean", "corruption_mean", "corruption_worst") else by.get(key, {}).get("accuracy")
        if key.startswith("corruption") and out.get("corruptions_measured") != 15:
            value = None  # a mean over some of the corruptions is not the goal's
        if value is not None:
            goals.append({"name": name, "set": key, "value": value, "goal": least, "met": value >= least})
    out["goals"] = goals
    return out


def shift(source, *, sets=None, n: int | None = None, split: str = "test", out: str | os.PathLike | None = None,
          pictures: bool = True, data_dir=None, quiet: bool = False, batch_size: int | None = None) -> dict:
    """Measure a model on every shift set chosen (see the module docstring); write the files."""
    t0 = time.perf_counter()
    located = locate(source)
    predictor = load_predictor(located.checkpoint)
    check_digit_model(predictor)
    if n is not None and n < 1:
        raise MnistlabError(f"--n {n}: expected at least 1 image per set")
    base = base_for(predictor, split, data_dir)
    names = shift_sets.choose(sets)
    with Stages(total=2 * len(names), desc="shift", unit="set", quiet=quiet) as show:
        show.say(f"shift: {len(names)} sets from {base.description}" + (f" (the first {n:,} images)" if n else "")
                 + f"; made once, then read from the cache in {shift_sets.cache_dir() / 'shift'}")
        t_build = time.perf_counter()
        built = shift_sets.build_sets(names, base, n, data_dir=data_dir, progress=lambda name: show.update())
        build_s = time.perf_counter() - t_build
        skipped = built[-1].facts.get("skipped", []) if built else []
        show.update(len(skipped))  # never made: nothing to measure
        images = sum(len(s.labels) for s in built)
        show.say(f"made or read {len(built)} sets ({images:,} images) in {build_s:.1f} s; measuring")
        t_measure = time.perf_counter()
        rows, kept = measure(predictor, built, batch_size=batch_size, keep=lambda s: pictures and s.group != "sweeps",
                             done=show.update)
        measure_s = time.perf_counter() - t_measure
        show.say(f"measured in {measure_s:.1f} s ({images / max(measure_s, 1e-9):,.0f} images/s)"
                 + ("; drawing the pictures and the page" if pictures else ""))
    summary = summarise(rows)
    out_dir = located.output_dir(out, RunDir.SHIFT)
    record = {"source": str(source), "model": predictor.meta.get("model"), "method": predictor.method,
              "members": len(predictor.models), "split": split, "base": base.description, "n": n,
              **summary, "sets": rows, "skipped": [{"name": k, "why": v} for k, v in skipped],
              "sweeps": {s: {"axis": axis, "points": [r for r in rows if r.get("sweep") == s]}
                         for s, (axis, _) in shift_sets.SWEEPS.items() if any(r.get("sweep") == s for r in rows)},
              "seconds": {"build": build_s, "measure": measure_s}}
    if pictures:
        record["pictures"] = draw(built, kept, record, out_dir, split)
    record["seconds"]["total"] = time.perf_counter() - t0
    name = f"shift-{split}"
    atomic.write_text(out_dir / f"{name}.json", json.dumps(record, indent=2))
    record["json"] = str(out_dir / f"{name}.json")
    if pictures:
        record["page"] = str(write_page(record, out_dir / f"{name}.html"))
    return record


# ---------- pictures and the page ----------

def _file_name(set_name: str) -> str:
    return set_name.replace(":", "_")


def draw(built, kept: dict, record: dict, out_dir: Path, split: str) -> dict:
    """The sweeps' curves, a picture of every set's first images, and each set's mistakes."""
    out = {}
    if record["sweeps"]:
        out["curves"] = str(curves([record], out_dir / f"curves-{split}.png"))
    out["examples"] = str(examples(built, out_dir / f"sets-{split}.png"))
    galleries = {}
    for s in built:
        if s.name in kept:
            path = plots.mistakes_gallery(torch.from_numpy(s.images), torch.from_numpy(s.labels), kept[s.name], DIGITS,
                                          out_dir / f"mistakes-{split}-{_file_name(s.name)}.png", limit=GALLERY)
            if path is not None:
                galleries[s.name] = str(path)
    out["mistakes"] = galleries
    return out


def curves(records: list[dict], out, labels: list[str] | None = None) -> Path:
    """Accuracy against each sweep's parameter, one panel per sweep, a line per record (model)."""
    sweeps = [s for s in shift_sets.SWEEPS if any(s in r["sweeps"] for r in records)]
    cols = min(3, len(sweeps))
    rows = (len(sweeps) + cols - 1) // cols
    plt, fig, axes = figure(4.2 * cols, 3.4 * rows, nrows=rows, ncols=cols, squeeze=False)
    for ax, sweep in zip(axes.flat, sweeps):
        for i, r in enumerate(records):
            points = (r["sweeps"].get(sweep) or {}).get("points", [])
            if points:
                ax.plot([p["value"] for p in points], [100 * p["accuracy"] for p in points], "o-", ms=3,
                        label=(labels[i] if labels else Path(str(r["source"])).name))
        ax.set_title(sweep)
        ax.set_xlabel(shift_sets.SWEEPS[sweep][0])
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(sweeps):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, out)


def examples(built, out, per_set: int = 8) -> Path:
    """The first images of every set (a sweep: its points' first image each), one row per set."""
    rows, captions = [], []
    for s in built:
        if s.sweep is not None:
            continue
        k = min(per_set, len(s.images))
        rows += list(s.images[:k]) + [np.zeros((28, 28), np.uint8)] * (per_set - k)
        captions += [s.name] + [""] * (per_set - 1)
    for sweep in shift_sets.SWEEPS:
        points = [s for s in built if s.sweep == sweep]
        if points:
            pick = [points[round(i * (len(points) - 1) / max(1, per_set - 1))] for i in range(per_set)]
            rows += [p.images[0] for p in pick]
            captions += [f"{sweep} {p.value:g}" for p in pick]
    grid = image_grid(np.stack(rows), captions, scale=2, cols=per_set)
    return save_png(titled(grid, "what each set looks like: its first images (sweeps: one image along the sweep)"),
                    out)


def table_rows(record: dict) -> list[list[str]]:
    """[set, group, images, accuracy, change from clean in points] of every set but the sweeps' points
    (their curves say them)."""
    out = []
    for r in record["sets"]:
        if r["group"] == "sweeps":
            continue
        acc = "n/a" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%"
        drop = "" if r["name"] == "clean" or r.get("drop") is None else f"{-100 * r['drop']:+.2f}"
        out.append([r["name"], r["group"], f"{r['n']:,}", acc, drop])
    return out


def sweep_rows(record: dict) -> list[list[str]]:
    """[sweep, "value: accuracy, ..."] of each sweep."""
    return [[s, ", ".join(f"{p['value']:g}: {100 * p['accuracy']:.1f}%" for p in v["points"])]
            for s, v in record["sweeps"].items()]


def write_page(record: dict, path: Path) -> Path:
    root = path.parent
    pics = record.get("pictures") or {}
    figures = []
    if pics.get("curves"):
        figures.append(pages.picture(pics["curves"], root, "accuracy along each sweep"))
    if pics.get("examples"):
        figures.append(pages.picture(pics["examples"], root, "what each set looks like"))
    galleries = [pages.picture(p, root, f"{name}: the most confident mistakes") for name, p in
                 (pics.get("mistakes") or {}).items()]
    page = pages.render("shift.html", styles=(pages.asset("page.css"),), title=f"shift: {record['source']}",
                        record=record, table=table_rows(record),
                        sweeps=sweep_rows(record), figures=figures, galleries=galleries,
                        goals=record.get("goals") or [])
    return atomic.write_text(path, page + "\n")
