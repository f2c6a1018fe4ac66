"""When does starting from another model pay off? Test accuracy against labels per class, three ways.

    mnistlab transfer-curve --source runs/fast-fashion-mnist-s0 --dataset mnist --labels 1,5,10,100,1000 --seeds 0-2

At each label budget and seed the same recipe trains three models on the same labelled images (drawn
by `labels_per_class` with the seed): from scratch; a linear probe (the source's feature extractor
frozen, a new head trained); and a full fine-tune (a new head, the feature extractor at a tenth of
the learning rate unless `--lr-backbone` says otherwise). Every run is an ordinary run directory
under OUT/runs/ (so `report` shows it with the curve). Nothing is chosen on the test set: the
settings are fixed before any run, there is no validation split to select epochs on (with 10 labels
there is none to be had honestly), and each run's last weights are tested once.

A budget's runs take the same number of optimizer steps (`--steps`, at least one epoch): a run on 10
images would otherwise stop after one step, a run on 10,000 after a hundred.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from .. import atomic, rundir, schema
from ..data import load
from ..errors import MnistlabError
from ..machine import describe
from ..models import checkpoint
from ..models.source import locate
from ..pictures import figure as _figure
from ..pictures import save_figure
from ..rundir import RunDir
from ..stats import over_seeds
from ..training import config
from ..training.engine import train

MODES = ("scratch", "probe", "finetune")
CURVE_FILE = "curve.json"


def mode_overrides(mode: str, source: str, lr: float, lr_backbone: float | None) -> dict:
    if mode == "scratch":
        return {}
    if mode == "probe":
        return {"init_from": source, "head": "new", "freeze": "features"}
    if mode == "finetune":
        return {"init_from": source, "head": "new", "lr_backbone": lr_backbone if lr_backbone else lr / 10}
    raise MnistlabError(f"mode {mode!r}: expected one of {', '.join(MODES)}")


def schedule(per_class: int, num_classes: int, batch_size: int, steps: int) -> tuple[int, int]:
    """(batch size, epochs) for a budget: equal batches no larger than the recipe's, about `steps` steps.

    Equal, because a last batch of a few images (100 labelled images in batches of 96 leave 4) takes a
    full step of its own every epoch: it cost a frozen-feature probe 14 points at 10 labels per class."""
    n = per_class * num_classes
    per_epoch = math.ceil(n / min(batch_size, n))
    batch = math.ceil(n / per_epoch)
    return batch, max(1, round(steps / per_epoch))


def transfer_curve(source: str, dataset: str = "mnist", labels=(1, 5, 10, 100, 1000), seeds=(0, 1, 2), *,
                   recipe: str = "fast", modes=MODES, steps: int = 300, lr_backbone: float | None = None,
                   overrides: dict | None = None, out: str = "transfer-curve", quiet: bool = False) -> dict:
    """Train every (mode, budget, seed), write OUT/curve.json and OUT/curve.png; return the curve."""

    labels, seeds, modes = [int(n) for n in labels], [int(s) for s in seeds], list(modes)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise MnistlabError(f"--modes {','.join(modes)}: expected some of {', '.join(MODES)}")
    if not labels or any(n < 1 for n in labels) or len(set(labels)) != len(labels):
        raise MnistlabError(f"--labels {labels}: expected distinct positive counts of images per class, e.g. 1,10,100")
    if steps < 1:
        raise MnistlabError(f"--steps {steps}: expected a positive number of optimizer steps")
    if any(m != "scratch" for m in modes):
        locate(source)  # a missing source fails now, not after the scratch runs
    base = config.resolve(recipe, {**(overrides or {}), "dataset": dataset, "validation": 0})
    ds = load(dataset, data_dir=base.data_dir or None)
    smallest = int(ds.train.class_counts().min())
    if max(labels) > smallest:
        raise MnistlabError(f"--labels {max(labels)}: {dataset}'s smallest class has {smallest} training images",
                            hint=f"choose budgets up to {smallest}")
    out_dir = Path(out)
    runs_dir = out_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    for n in labels:
        batch, epochs = schedule(n, ds.num_classes, base.batch_size, steps)
        for mode in modes:
            for seed in seeds:
                name = f"{mode}-n{n}-s{seed}"
                run = RunDir(runs_dir / name)
                summary = run.read_summary() if run.summary.is_file() else None  # a finished run is kept: resumable
                if summary is None:
                    if run.path.exists() or run.path.is_symlink():  # interrupted: start that run again
                        rundir.remove_run(runs_dir, run.path)
                    cfg = dataclasses.replace(base, labels_per_class=n, seed=seed, batch_size=batch, epochs=epochs,
                                              checkpoint_every=epochs, out=str(runs_dir), name=name, progress=False,
                                              **mode_overrides(mode, source, base.lr, lr_backbone))
                    config.validate(cfg)
                    summary = train(cfg, quiet=True)
                rows.append({"mode": mode, "labels_per_class": n, "seed": seed, "test_acc": summary["test_acc"],
                             "train_s": summary["train_s"], "epochs": epochs, "batch_size": batch,
                             "run_dir": summary["run_dir"]})
                if not quiet:
                    print(f"{mode:8s} {n:5d} per class, seed {seed}: test {summary['test_acc']:.2%} "
                          f"({summary['train_s']:.1f}s training)", flush=True)
    curve = {"source": source if any(m != "scratch" for m in modes) else None,
             "source_dataset": _source_dataset(source) if any(m != "scratch" for m in modes) else None,
             "dataset": dataset, "recipe": recipe, "overrides": overrides or {}, "labels": labels, "seeds": seeds,
             "modes": modes, "steps": steps, "lr": base.lr,
             "lr_backbone": lr_backbone if lr_backbone else base.lr / 10, "protocol":
             "fixed settings, no validation split, last weights, test set read once per run",
             "table": _table(rows, modes, labels), "runs": rows, "wall_s_this_call": time.perf_counter() - t0}
    curve["environment"] = describe()
    curve["picture"] = str(plot(curve, out_dir / "curve.png"))
    atomic.write_text(out_dir / CURVE_FILE, json.dumps(curve, indent=2))
    if not quiet:
        print(format_table(curve))
        print(f"{out_dir / CURVE_FILE}  {curve['picture']}  ({curve['wall_s_this_call'] / 60:.1f} minutes)")
    return curve


def _source_dataset(source: str) -> str | None:
    meta, _ = checkpoint.read_header(locate(source).checkpoint)
    if meta.get("pretraining"):
        return f"{meta.get('dataset')} without labels ({meta['pretraining']})"
    return meta.get("dataset")


def _table(rows: list[dict], modes, labels) -> list[dict]:
    table = []
    for n in labels:
        entry = {"labels_per_class": n}
        for mode in modes:
            accs = [r["test_acc"] for r in rows if r["mode"] == mode and r["labels_per_class"] == n]
            times = [r["train_s"] for r in rows if r["mode"] == mode and r["labels_per_class"] == n]
            stat = over_seeds(accs)
            entry[mode] = {"mean": stat["mean"], "std": stat["std"], "n": stat["n"], "train_s": over_seeds(times)["mean"]}
        table.append(entry)
    return table


def format_table(curve: dict) -> str:
    modes = curve["modes"]
    head = "labels/class  " + "  ".join(f"{m:>18s}" for m in modes)
    lines = [f"test accuracy, mean +- std over seeds {curve['seeds']} ({curve['dataset']}, from "
             f"{curve.get('source_dataset') or 'nothing'}):", head]
    for e in curve["table"]:
        lines.append(f"{e['labels_per_class']:>12d}  " + "  ".join(
            f"{100 * e[m]['mean']:>9.2f} +- {100 * e[m]['std']:4.2f}" for m in modes))
    return "\n".join(lines)


LABELS = {"scratch": "from scratch", "probe": "linear probe (frozen features)", "finetune": "fine-tune"}


def plot(curve: dict, path: Path) -> Path:
    plt, fig, ax = _figure(6, 4)
    xs = curve["labels"]
    for mode in curve["modes"]:
        mean = [100 * e[mode]["mean"] for e in curve["table"]]
        std = [100 * e[mode]["std"] for e in curve["table"]]
        ax.plot(xs, mean, marker="o", label=LABELS[mode])
        ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images per class")
    ax.set_ylabel(f"test accuracy on {curve['dataset']} (%)")
    src = curve.get("source_dataset")
    ax.set_title(f"{curve['recipe']} on {curve['dataset']}" + (f", features from {src}" if src else "")
                 + f"\nmean ± std over seeds {','.join(map(str, curve['seeds']))}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


_MEAN_STD = schema.obj({"mean": schema.number(0, 1), "std": schema.number(0, 1)})
CURVE_SPEC = schema.obj({"seeds": schema.listof(schema.integer(), 1000), "protocol": schema.text(1000),
                         "modes": schema.listof(schema.choice("scratch", "probe", "finetune"), 3),
                         "table": schema.listof(schema.obj({"labels_per_class": schema.integer(0)}), 10_000)})


def read_curve(curve_dir: Path) -> dict:
    """A transfer curve's curve.json, checked: every table row has a mean and std for every mode."""
    path = Path(curve_dir) / CURVE_FILE
    curve = schema.read_json(path, CURVE_SPEC, hint="run `mnistlab transfer-curve` again to rewrite it")
    for i, row in enumerate(curve["table"]):
        for mode in curve["modes"]:
            schema.check(row.get(mode), _MEAN_STD, str(path), f"table[{i}].{mode}")
    return curve


def curve_of(run: RunDir) -> Path | None:
    """The transfer-curve directory a run belongs to (OUT/runs/RUN), if it does."""
    parent = run.path.resolve().parent.parent
    return parent if (parent / CURVE_FILE).is_file() and run.path.resolve().parent.name == "runs" else None
