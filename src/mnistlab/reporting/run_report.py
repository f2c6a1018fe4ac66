"""Reports: one self-contained HTML page (pictures embedded) and a Markdown summary of runs.

    mnistlab report runs/seed-cnn-mnist-s0 runs/seed-mlp-seeds --out report/

Each argument is a run directory or a group directory of seeds (`--seeds`); a group is one row with
mean +- std over its seeds. Runs not yet evaluated on the test split are evaluated first.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from .. import atomic, pages
from .._version import __version__
from ..analysis.evaluation import evaluate
from ..analysis.robust import format_robust, robust_figures
from ..errors import MnistlabError
from ..rundir import RunDir
from ..stats import over_seeds
from ..studies.transfer_study import LABELS, curve_of, read_curve
from ..studies.tuning.search import read_study_summary, study_of

PICTURES = ("confusion", "per_class", "reliability", "mistakes")  # what a report shows of every evaluation


def _evaluation(run: RunDir) -> dict:
    """The run's test evaluation: the one it has if it has every picture a report shows (an evaluation
    made with pictures=False has none), else a new one."""
    existing = run.read_eval("test")
    pics = (existing or {}).get("pictures") or {}
    if existing and all(isinstance(pics.get(k), str) and Path(pics[k]).is_file() for k in PICTURES):
        existing.pop("robust", None)
        robust = robust_figures(run)  # attacks run since the evaluation count too
        return {**existing, "robust": robust} if robust else existing
    return evaluate(run.path, split="test")


def representative(runs: list[RunDir]) -> RunDir:
    """The run whose details stand for a group: the median seed by test accuracy (the lower of the middle
    two), not whichever sorts first; a run alone stands for itself."""
    scored = [(s.get("test_acc"), r.path.name, r) for r in runs if (s := r.read_summary()) and s.get("test_acc") is not None]
    if not scored:
        return runs[0]
    scored.sort(key=lambda t: (t[0], t[1]))
    return scored[(len(scored) - 1) // 2][2]


def _row(name: str, runs: list[RunDir]) -> dict:
    summaries = [s for s in (r.read_summary() for r in runs) if s is not None]
    if not summaries:
        raise MnistlabError(f"{name}: no finished run (summary.json) inside", hint="finish or resume the run first")

    def agg(key, scale=1.0):
        return over_seeds(s[key] * scale for s in summaries if s.get(key) is not None)

    first = summaries[0]
    return {"name": name, "model": first["model"], "params": first.get("params") or 0, "dataset": first["dataset"],
            "recipe": first.get("recipe") or "", "epochs": first.get("epochs_run") or 0,
            "seeds": [s.get("seed") for s in summaries], "wall_s": agg("wall_s"), "val_acc": agg("val_acc", 100),
            "test_acc": agg("test_acc", 100)}


def _fmt(stat, digits=2, unit=""):
    if stat is None:
        return "n/a"
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}{unit}"
    return f"{stat['mean']:.{digits}f}{unit}"


def report(paths: list[str | os.PathLike], out: str | os.PathLike = "report", title: str = "mnistlab report") -> dict:
    """Write `<out>/report.html` (self-contained) and `<out>/report.md` for the given runs or groups."""
    if not paths:
        raise MnistlabError("report needs at least one run directory")
    groups = {}
    for p in paths:  # a name per argument, told apart where two share one (two groups' seed-0)
        path = Path(os.fspath(p))
        name = path.name if path.name not in groups else f"{path.parent.name}/{path.name}"
        groups[name] = RunDir.runs_in(path)
    rows = [_row(name, runs) for name, runs in groups.items()]
    shown = {name: representative(runs) for name, runs in groups.items()}
    evals = {name: _evaluation(shown[name]) for name in groups}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / "report.html", out / "report.md"
    atomic.write_text(html_path, _html(title, rows, evals, groups, shown))
    atomic.write_text(md_path, _markdown(title, rows, evals, groups, shown))
    return {"html": str(html_path), "markdown": str(md_path), "rows": rows}


def _html(title: str, rows: list[dict], evals: dict, groups: dict, shown: dict) -> str:
    """The page, through the one autoescaping template (pages.render): every value from a run is text.
    The headline is the first run or group named (the one the report is about; the others are what it
    is compared with), its errors and F1 those of the run whose details are shown."""
    best = rows[0]
    e0 = evals[best["name"]]
    seeds = (f" (mean ± std over seeds {best['seeds']}; errors, F1 and ECE of {shown[best['name']].path.name}, "
             "the median seed)" if len(best["seeds"]) > 1 else f", seed {best['seeds'][0]}")
    return pages.render(
        "report.html", styles=(pages.asset("page.css"),), title=title,
        subtitle=f"{len(rows)} model(s) on {', '.join(sorted({r['dataset'] for r in rows}))}; mnistlab {__version__}, "
                 f"{time.strftime('%Y-%m-%d %H:%M')}",
        headline={"accuracy": _fmt(best["test_acc"]), "who": best["name"] + seeds, "errors": e0["errors"],
                  "n": e0["n"], "f1": f"{e0['macro_avg']['f1']:.4f}", "ece": f"{e0['ece']:.4f}"},
        rows=[{"name": r["name"], "model": r["model"], "recipe": r["recipe"], "params": f"{r['params']:,}",
               "epochs": r["epochs"], "seeds": ", ".join(map(str, r["seeds"])), "wall": _fmt(r["wall_s"], 1),
               "val": _fmt(r["val_acc"]), "test": _fmt(r["test_acc"])} for r in rows],
        sections=[_run_section(r, evals[r["name"]], groups[r["name"]], shown[r["name"]]) for r in rows])


CAPTIONS = {"curves": "training curves", "confusion": "confusion matrix (test)",
            "per_class": "per-class recall and precision (test)", "reliability": "reliability diagram (test)",
            "mistakes": "misclassified test images: true>predicted confidence",
            "recall_vs_count": "recall on the test split against each class's training examples"}


def _run_section(r: dict, e: dict, runs: list[RunDir], run: RunDir) -> dict:
    confused = "; ".join(f"{m['true']} read as {m['predicted']}: {m['count']}" for m in e["most_confused"][:5])
    pics = {k: v for k, v in (e.get("pictures") or {}).items() if isinstance(v, str)}
    return {
        "name": r["name"], "note": (f"pictures and per-class numbers: {run.path.name}, the group's median seed"
                                    if len(runs) > 1 else ""),
        "line": f"Test accuracy {e['accuracy']:.2%} ({e['errors']} errors), top-2 {e.get('top2') or 0:.2%}, "
                f"cross-entropy {e['cross_entropy']:.4f}, ECE {e['ece']:.4f}"
                + (f", balanced accuracy {e['balanced_accuracy']:.2%}, macro-F1 {e['macro_f1']:.4f}"
                   if isinstance(e.get("balanced_accuracy"), float) and isinstance(e.get("macro_f1"), float) else "")
                + f". Most confused: {confused or 'none'}.",
        "pictures": [pages.picture(pics[key], run.path, caption) for key, caption in CAPTIONS.items() if key in pics],
        "robust": format_robust(e["robust"]) if e.get("robust") else [],
        "attacks": _attacks(run),
        "per_class": [{"class": c["class"], "precision": f"{c['precision']:.4f}", "recall": f"{c['recall']:.4f}",
                       "f1": f"{c['f1']:.4f}", "support": c["support"]} for c in e["per_class"]],
        "tuning": _tuning(run), "transfer": _transfer(run), "variant": _variant(run), "inspect": _inspect(run),
        "maps": _maps(run),
        "card": _model_card(r, e, run),
    }


def _attacks(run: RunDir) -> list[dict]:
    """The curves and galleries of every `mnistlab attack` on the run."""
    shown = []
    for _, doc in run.attack_results():
        pics = doc.get("pictures") or {}
        what = f"{doc['method']} ({doc['norm']}) on {doc['n']} {doc['split']} images"
        if isinstance(pics.get("curve"), str):
            shown.append(pages.picture(pics["curve"], run.path, f"{what}: robust accuracy against epsilon"))
        if isinstance(pics.get("gallery"), str):
            shown.append(pages.picture(pics["gallery"], run.path, f"{what}: original, perturbation, adversarial at "
                                       f"eps {max(doc['eps']):g}"))
    return shown


def _tuning(run: RunDir) -> dict | None:
    """For a trial of a `mnistlab tune` study: which study, whether it was chosen, and its report."""

    study_dir = study_of(run)
    if study_dir is None:
        return None
    s = read_study_summary(study_dir)
    c = s.get("trials") or {}
    page = study_dir / "study.html"
    history = study_dir / "study-history.png"
    return {"study": str(s.get("study")), "chosen": (s.get("chosen") or {}).get("run_dir") == str(run.path.resolve()),
            "counts": f"{c.get('complete', 0)} complete, {c.get('pruned', 0)} pruned trials",
            "objectives": ", ".join(s.get("objectives") or []), "link": pages.file_link(page, study_dir),
            "page": str(page),
            "pictures": [pages.picture(history, study_dir, "the study: validation accuracy of each trial")]
            if history.is_file() else []}


INSPECT_CAPTIONS = {"filters": "first-layer filters", "top-units": "images that most excite penultimate units",
                    "saliency": "saliency (|input gradient| of the predicted logit)"}


def _inspect(run: RunDir) -> list[dict]:
    """The pictures of `mnistlab inspect`, when it has been run on this run."""
    r = run.read_inspect()
    if not r:
        return []
    pics = r["pictures"]
    shown = [pages.picture(pics[k], run.path, c) for k, c in INSPECT_CAPTIONS.items() if isinstance(pics.get(k), str)]
    shown += [pages.picture(v, run.path, f"feature maps of {r['split']} image {k.split('-', 1)[1]}")
              for k, v in pics.items() if k.startswith("featuremaps-") and isinstance(v, str)]
    return shown


def _maps(run: RunDir) -> list[dict]:
    """The maps `mnistlab map RUN` made: each PNG, its numbers, and a link to its interactive page."""
    shown = []
    for m in run.read_maps():
        caption = (f"{m['method']} of {m['features']} ({m['n']:,} {m['split']} images, seed {m['seed']}): 5-NN accuracy "
                   f"on the map {100 * m['separation_5nn']:.2f}%")
        pic = pages.picture(m["files"]["png"], run.path, caption)
        link = pages.file_link(m["files"]["html"], run.path)
        if link:
            pic.update(link=link, link_text="interactive map")
        shown.append(pic)
    return shown


def _transfer(run: RunDir) -> dict | None:
    """For a run that started from another's weights: the source and what was frozen; for a run of a
    transfer curve, the curve."""

    summary = run.read_summary() or {}
    t, labelled = summary.get("transfer"), summary.get("labelled")
    curve_dir = curve_of(run)
    if not (t or labelled or curve_dir):
        return None
    lines = []
    if t and t.get("loaded") is not None:
        lines.append(f"Initialised from {t.get('source')} ({t.get('source_model')} trained on {t.get('source_dataset')}): "
                     f"{t['loaded']} tensors loaded, head {t.get('head')}, {t.get('frozen')} parameter tensors frozen, "
                     f"{t.get('trainable_params') or 0:,} parameters trained.")
    if labelled:
        lines.append(f"Trained on {labelled['per_class']} labelled images per class ({labelled['count']} in all, "
                     f"drawn with seed {labelled['seed']}).")
    curve = None
    if curve_dir:
        c = read_curve(curve_dir)
        curve = {"dir": str(curve_dir), "seeds": ", ".join(map(str, c["seeds"])), "protocol": c["protocol"],
                 "modes": [LABELS.get(m, m) for m in c["modes"]],
                 "rows": [[e["labels_per_class"]] + [f"{100 * e[m]['mean']:.2f} ± {100 * e[m]['std']:.2f}"
                                                     for m in c["modes"]] for e in c["table"]],
                 "pictures": [pages.picture(curve_dir / "curve.png", curve_dir, "test accuracy against labels per class")]
                 if (curve_dir / "curve.png").is_file() else []}
    return {"lines": lines, "curve": curve}


def _variant(run: RunDir) -> list[str]:
    """For a run on a dataset variant (or with its labels cleaned): what it trained on, in sentences."""
    summary = run.read_summary() or {}
    v, c = summary.get("variant"), summary.get("cleaning")
    lines = []
    if isinstance(v, dict):
        spec = ", ".join(f"{k.replace('_', ' ')} {v[k]}" for k in ("imbalance", "label_noise", "labels_per_class")
                         if v.get(k))
        val = v.get("validation") if isinstance(v.get("validation"), dict) else {}
        lines.append(f"Trained on a variant of {summary.get('dataset')} ({spec}; seed {v.get('seed')}): {v.get('count')} "
                     f"training examples, class counts {v.get('class_counts')}"
                     + (f", {v.get('flipped')} labels flipped" if v.get("label_noise") else "")
                     + (f"; validation {val.get('mode')}" if val else "") + f". SHA-256 of the examples "
                     f"{str(v.get('sha256'))[:16]}; their positions, labels and flips in {RunDir.VARIANT}.")
    if isinstance(c, dict):
        found = c.get("planted_flips") if isinstance(c.get("planted_flips"), dict) else None
        lines.append(f"Label cleaning ({c.get('method')}, {c.get('folds')} folds) removed {c.get('removed')} of "
                     f"{c.get('examples')} training examples"
                     + (f"; of the planted flips, precision {found['precision']:.1%} and recall {found['recall']:.1%}"
                        if found and isinstance(found.get("precision"), float) and isinstance(found.get("recall"), float)
                        else "") + ".")
    return lines


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>&~])")


def md(text) -> str:
    """Text from a run (a name, a model reference, a class name) as literal Markdown: every character
    Markdown or the HTML inside it would act on escaped, line breaks made spaces."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _markdown(title: str, rows: list[dict], evals: dict, groups: dict, shown: dict) -> str:
    md_lines = [f"# {md(title)}", "", "| run | model | params | epochs | seeds | wall time (s) | val acc (%) | test acc (%) |",
                "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md_lines.append(f"| {md(r['name'])} | {md(r['model'])} | {r['params']:,} | {r['epochs']} | "
                     f"{md(', '.join(map(str, r['seeds'])))} | {_fmt(r['wall_s'], 1)} | {_fmt(r['val_acc'])} | "
                     f"{_fmt(r['test_acc'])} |")
    for r in rows:
        e, runs = evals[r["name"]], groups[r["name"]]
        detail = f" (details of {md(shown[r['name']].path.name)}, the group's median seed)" if len(runs) > 1 else ""
        confused = "; ".join(f"{md(m['true'])} read as {md(m['predicted'])}: {m['count']}" for m in e["most_confused"][:5])
        md_lines += ["", f"## {md(r['name'])}{detail}", "",
                     f"Test accuracy {e['accuracy']:.2%} ({e['errors']} errors of {e['n']}), macro F1 "
                     f"{e['macro_avg']['f1']:.4f}, ECE {e['ece']:.4f}.", "", f"Most confused: {confused or 'none'}."]
        if e.get("robust"):
            md_lines += ["", "Robust accuracy:", "", *(f"- {md(line)}" for line in format_robust(e["robust"]))]
        study_dir = study_of(runs[0])
        if study_dir is not None:
            md_lines += ["", f"A trial of the study in {md(study_dir)}: report {md(study_dir / 'study.html')}."]
    return "\n".join(md_lines) + "\n"


def _model_card(row: dict, e: dict, run: RunDir) -> dict:
    cfg = run.read_json(RunDir.CONFIG) or {}
    keys = ["model", "model_args", "dataset", "validation", "epochs", "batch_size", "optimizer", "lr", "schedule",
            "augment", "ema", "label_smoothing", "seed"]
    recipe = ", ".join(f"{k}={cfg[k]!r}" for k in keys if k in cfg and cfg[k] not in ("", {}, None))
    return {"model": f"{row['model']}, {row['params']:,} parameters", "dataset": e["dataset"], "recipe": recipe[:2000],
            "data": f"{e['dataset']}, content hash {e['dataset_hash'][:16]}; validation split of "
                    f"{cfg.get('validation')!r} training examples (stratified, seed 0) for model selection; test split "
                    "used once", "ece": f"{e['ece']:.4f}"}
