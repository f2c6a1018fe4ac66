"""Reports: one self-contained HTML page (pictures embedded) and a Markdown summary of runs.

    mnistlab report runs/seed-cnn-mnist-s0 runs/seed-mlp-seeds --out report/

Each argument is a run directory or a group directory of seeds (`--seeds`); a group is one row with
mean +- std over its seeds. Runs not yet evaluated on the test split are evaluated first.
"""

from __future__ import annotations

import base64
import html
import json
import os
import statistics
import time
from pathlib import Path

from .. import __version__, atomic
from ..errors import MnistlabError
from ..rundir import RunDir
from .evaluate import evaluate


def _evaluation(run: RunDir) -> dict:
    from .attack import robust_figures

    existing = run.read_json(f"{RunDir.EVAL}/test.json")
    if existing and all(Path(p).is_file() for p in existing.get("pictures", {}).values()):
        existing.pop("robust", None)
        robust = robust_figures(run.path)  # attacks run since the evaluation count too
        return {**existing, "robust": robust} if robust else existing
    return evaluate(run.path, split="test")


def _row(name: str, runs: list[RunDir]) -> dict:
    summaries = [s for s in (r.read_summary() for r in runs) if s is not None]
    if not summaries:
        raise MnistlabError(f"{name}: no finished run (summary.json) inside", hint="finish or resume the run first")

    def agg(key, scale=1.0):
        vals = [s[key] * scale for s in summaries if s.get(key) is not None]
        if not vals:
            return None
        return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "n": len(vals), "values": vals}

    first = summaries[0]
    return {"name": name, "model": first["model"], "params": first["params"], "dataset": first["dataset"],
            "recipe": first.get("recipe") or "", "epochs": first["epochs_run"],
            "seeds": [s["seed"] for s in summaries], "wall_s": agg("wall_s"), "val_acc": agg("val_acc", 100),
            "test_acc": agg("test_acc", 100)}


def _fmt(stat, digits=2, unit=""):
    if stat is None:
        return "n/a"
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}{unit}"
    return f"{stat['mean']:.{digits}f}{unit}"


def _img(path: str | os.PathLike, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}' \
           f"</figcaption></figure>"


CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 0; color: #1d2230;
       background: #f5f6fa; line-height: 1.45; }
header { background: #1d2b53; color: white; padding: 24px 32px; }
header h1 { margin: 0 0 4px; font-size: 26px; } header p { margin: 0; opacity: .85; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 48px; }
section { background: white; border-radius: 10px; box-shadow: 0 1px 3px rgba(0,0,0,.08); padding: 18px 22px;
          margin: 18px 0; }
h2 { margin: 0 0 12px; font-size: 20px; color: #1d2b53; } h3 { font-size: 16px; margin: 18px 0 8px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid #e6e8ef; }
th { background: #eef1f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.headline { display: flex; gap: 14px; flex-wrap: wrap; }
.card { flex: 1 1 180px; background: #eef1f8; border-radius: 8px; padding: 12px 16px; }
.card .v { font-size: 26px; font-weight: 650; color: #1d2b53; } .card .k { font-size: 13px; color: #556; }
.figs { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; flex: 1 1 440px; } figure img { max-width: 100%; border: 1px solid #e6e8ef; border-radius: 6px; }
figcaption { font-size: 13px; color: #556; margin-top: 4px; }
code { background: #eef1f8; padding: 1px 5px; border-radius: 4px; font-size: 13px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; font-size: 14px; } dt { font-weight: 600; }
"""


def report(paths: list[str | os.PathLike], out: str | os.PathLike = "report", title: str = "mnistlab report") -> dict:
    """Write `<out>/report.html` (self-contained) and `<out>/report.md` for the given runs or groups."""
    if not paths:
        raise MnistlabError("report needs at least one run directory")
    groups = {Path(p).name: RunDir.runs_in(p) for p in paths}
    rows = [_row(name, runs) for name, runs in groups.items()]
    evals = {name: _evaluation(runs[0]) for name, runs in groups.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / "report.html", out / "report.md"
    atomic.write_text(html_path, _html(title, rows, evals, groups))
    atomic.write_text(md_path, _markdown(title, rows, evals, groups))
    return {"html": str(html_path), "markdown": str(md_path), "rows": rows}


def _html(title: str, rows: list[dict], evals: dict, groups: dict) -> str:
    best = max(rows, key=lambda r: r["test_acc"]["mean"] if r["test_acc"] else -1)
    e0 = evals[best["name"]]
    seeds = (f" (mean ± std over seeds {best['seeds']})" if len(best["seeds"]) > 1 else f", seed {best['seeds'][0]}")
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1>"
             f"<p>{len(rows)} model(s) on {html.escape(', '.join(sorted({r['dataset'] for r in rows})))}; "
             f"mnistlab {__version__}, {time.strftime('%Y-%m-%d %H:%M')}</p></header><main>"]
    parts.append("<section><h2>Headline</h2><div class='headline'>"
                 f"<div class='card'><div class='v'>{_fmt(best['test_acc'])}%</div><div class='k'>test accuracy, "
                 f"{html.escape(best['name'] + seeds)}</div></div>"
                 f"<div class='card'><div class='v'>{e0['errors']}</div><div class='k'>errors in {e0['n']} test images"
                 f"</div></div><div class='card'><div class='v'>{e0['macro_avg']['f1']:.4f}</div><div class='k'>macro "
                 f"F1</div></div><div class='card'><div class='v'>{e0['ece']:.4f}</div><div class='k'>expected "
                 "calibration error</div></div></div></section>")
    parts.append("<section><h2>Runs</h2><table><tr><th>run</th><th>model</th><th>recipe</th><th>params</th>"
                 "<th>epochs</th><th>seeds</th><th>wall time (s)</th><th>val acc (%)</th><th>test acc (%)</th></tr>")
    for r in rows:
        parts.append(f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(r['model'])}</td>"
                     f"<td>{html.escape(r['recipe'])}</td><td class='num'>{r['params']:,}</td>"
                     f"<td class='num'>{r['epochs']}</td><td>{', '.join(map(str, r['seeds']))}</td>"
                     f"<td class='num'>{_fmt(r['wall_s'], 1)}</td><td class='num'>{_fmt(r['val_acc'])}</td>"
                     f"<td class='num'>{_fmt(r['test_acc'])}</td></tr>")
    parts.append("</table><p>Accuracy figures are mean ± sample std over the listed seeds; the test split was "
                 "evaluated once per run, after model selection on the validation split.</p></section>")
    parts += [_run_section(r, evals[r["name"]], groups[r["name"]]) for r in rows]
    parts.append("</main></body></html>")
    return "".join(parts)


CAPTIONS = {"curves": "training curves", "confusion": "confusion matrix (test)",
            "per_class": "per-class recall and precision (test)", "reliability": "reliability diagram (test)",
            "mistakes": "misclassified test images: true>predicted confidence"}


def _run_section(r: dict, e: dict, runs: list[RunDir]) -> str:
    note = (f" <small>(pictures and per-class numbers: {html.escape(runs[0].path.name)}, the group's first run)"
            f"</small>" if len(runs) > 1 else "")
    confused = "; ".join(f"{m['true']} read as {m['predicted']}: {m['count']}" for m in e["most_confused"][:5])
    parts = [f"<section><h2>{html.escape(r['name'])}{note}</h2>",
             f"<p>Test accuracy {e['accuracy']:.2%} ({e['errors']} errors), top-2 {e.get('top2', 0):.2%}, "
             f"cross-entropy {e['cross_entropy']:.4f}, ECE {e['ece']:.4f}. Most confused: "
             f"{html.escape(confused) or 'none'}.</p><div class='figs'>"]
    pics = e.get("pictures", {})
    parts += [_img(pics[key], caption) for key, caption in CAPTIONS.items() if key in pics]
    parts.append("</div>")
    if e.get("robust"):
        from .attack import format_robust

        parts.append("<h3>Robust accuracy</h3><ul>" + "".join(f"<li>{html.escape(line)}</li>"
                                                              for line in format_robust(e["robust"])) + "</ul>")
    parts.append("<h3>Per class</h3><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
                 "<th>support</th></tr>")
    for c in e["per_class"]:
        parts.append(f"<tr><td>{html.escape(c['class'])}</td><td class='num'>{c['precision']:.4f}</td>"
                     f"<td class='num'>{c['recall']:.4f}</td><td class='num'>{c['f1']:.4f}</td>"
                     f"<td class='num'>{c['support']}</td></tr>")
    parts.append("</table>")
    parts.append(_tuning_html(runs[0]))
    parts.append(_transfer_html(runs[0]))
    parts.append(_inspect_html(runs[0]))
    parts.append(_maps_html(runs[0]))
    parts.append(_model_card_html(r, e, runs[0]))
    parts.append("</section>")
    return "".join(parts)


def _tuning_html(run: RunDir) -> str:
    """For a trial of a `mnistlab tune` study: which study, whether it was chosen, and its report."""
    from ..tuning.study import study_of

    study_dir = study_of(run)
    if study_dir is None:
        return ""
    s = json.loads((study_dir / "summary.json").read_text())
    chosen = s.get("chosen", {}).get("run_dir") == str(run.path.resolve())
    c = s.get("trials", {})
    history = study_dir / "study-history.png"
    return (f"<h3>Tuning</h3><p>A trial of study <code>{html.escape(str(s.get('study')))}</code> "
            f"({c.get('complete', 0)} complete, {c.get('pruned', 0)} pruned trials; objectives "
            f"{html.escape(', '.join(s.get('objectives', [])))}){': the chosen one' if chosen else ''}. "
            f"Study report: <a href='{html.escape((study_dir / 'study.html').resolve().as_uri())}'>"
            f"{html.escape(str(study_dir / 'study.html'))}</a>.</p>"
            + (f"<div class='figs'>{_img(history, 'the study: validation accuracy of each trial')}</div>"
               if history.is_file() else ""))


INSPECT_CAPTIONS = {"filters": "first-layer filters", "top-units": "images that most excite penultimate units",
                    "saliency": "saliency (|input gradient| of the predicted logit)"}


def _inspect_html(run: RunDir) -> str:
    """The pictures of `mnistlab inspect`, when it has been run on this run."""
    from .inspect import pictures_of

    r = pictures_of(run.path)
    if not r:
        return ""
    pics = r.get("pictures", {})
    shown = [_img(pics[k], c) for k, c in INSPECT_CAPTIONS.items() if k in pics and Path(pics[k]).is_file()]
    shown += [_img(v, f"feature maps of {r['split']} image {k.split('-')[1]}") for k, v in pics.items()
              if k.startswith("featuremaps-") and Path(v).is_file()]
    return ("<h3>What the network learned</h3><div class='figs'>" + "".join(shown) + "</div>") if shown else ""


def _maps_html(run: RunDir) -> str:
    """The maps `mnistlab map RUN` made: each PNG, its numbers, and a link to its interactive page."""
    from .maps import maps_of

    shown = []
    for m in maps_of(run.path):
        png, page = Path(m["files"]["png"]), Path(m["files"]["html"])
        if not png.is_file():
            continue
        caption = (f"{m['method']} of {m['features']} ({m['n']:,} {m['split']} images, seed {m['seed']}): 5-NN accuracy "
                   f"on the map {100 * m['separation_5nn']:.2f}%")
        link = (f"<figcaption><a href='{html.escape(page.resolve().as_uri())}'>interactive map: "
                f"{html.escape(str(page))}</a></figcaption>" if page.is_file() else "")
        shown.append(_img(png, caption).replace("</figure>", link + "</figure>"))
    return ("<h3>Maps</h3><div class='figs'>" + "".join(shown) + "</div>") if shown else ""


def _transfer_html(run: RunDir) -> str:
    """For a run that started from another's weights: the source and what was frozen; for a run of a
    transfer curve, the curve."""
    from .transfer_curve import CURVE_FILE, LABELS, curve_of

    summary = run.read_summary() or {}
    t, labelled = summary.get("transfer"), summary.get("labelled")
    curve_dir = curve_of(run)
    if not (t or labelled or curve_dir):
        return ""
    lines = []
    if t and t.get("loaded") is not None:
        lines.append(f"Initialised from <code>{html.escape(str(t['source']))}</code> ({html.escape(str(t['source_model']))}"
                     f" trained on {html.escape(str(t['source_dataset']))}): {t['loaded']} tensors loaded, head "
                     f"{html.escape(t['head'])}, {t['frozen']} parameter tensors frozen, {t['trainable_params']:,} "
                     "parameters trained.")
    if labelled:
        lines.append(f"Trained on {labelled['per_class']} labelled images per class ({labelled['count']} in all, "
                     f"drawn with seed {labelled['seed']}).")
    out = "<h3>Transfer</h3>" + "".join(f"<p>{line}</p>" for line in lines)
    if curve_dir:
        c = json.loads((curve_dir / CURVE_FILE).read_text())
        head = "".join(f"<th>{html.escape(LABELS[m])}</th>" for m in c["modes"])
        rows = "".join(f"<tr><td class='num'>{e['labels_per_class']}</td>" + "".join(
            f"<td class='num'>{100 * e[m]['mean']:.2f} ± {100 * e[m]['std']:.2f}</td>" for m in c["modes"]) + "</tr>"
            for e in c["table"])
        out += (f"<p>A run of the transfer curve in <code>{html.escape(str(curve_dir))}</code> (test accuracy, %, mean ± "
                f"std over seeds {html.escape(', '.join(map(str, c['seeds'])))}; {html.escape(c['protocol'])}).</p>"
                f"<table><tr><th>labels per class</th>{head}</tr>{rows}</table>")
        if (curve_dir / "curve.png").is_file():
            out += f"<div class='figs'>{_img(curve_dir / 'curve.png', 'test accuracy against labels per class')}</div>"
    return out


def _markdown(title: str, rows: list[dict], evals: dict, groups: dict) -> str:
    md = [f"# {title}", "", "| run | model | params | epochs | seeds | wall time (s) | val acc (%) | test acc (%) |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['name']} | {r['model']} | {r['params']:,} | {r['epochs']} | {', '.join(map(str, r['seeds']))} "
                  f"| {_fmt(r['wall_s'], 1)} | {_fmt(r['val_acc'])} | {_fmt(r['test_acc'])} |")
    for r in rows:
        e, runs = evals[r["name"]], groups[r["name"]]
        detail = f" (details of {runs[0].path.name}, the group's first run)" if len(runs) > 1 else ""
        confused = "; ".join(f"{m['true']} read as {m['predicted']}: {m['count']}" for m in e["most_confused"][:5])
        md += ["", f"## {r['name']}{detail}", "",
               f"Test accuracy {e['accuracy']:.2%} ({e['errors']} errors of {e['n']}), macro F1 "
               f"{e['macro_avg']['f1']:.4f}, ECE {e['ece']:.4f}.", "", f"Most confused: {confused or 'none'}."]
        if e.get("robust"):
            from .attack import format_robust

            md += ["", "Robust accuracy:", "", *(f"- {line}" for line in format_robust(e["robust"]))]
        from ..tuning.study import study_of

        study_dir = study_of(runs[0])
        if study_dir is not None:
            md += ["", f"A trial of the study in {study_dir}: report {study_dir / 'study.html'}."]
    return "\n".join(md) + "\n"


def _model_card_html(row: dict, e: dict, run: RunDir) -> str:
    cfg = run.read_json(RunDir.CONFIG) or {}
    keys = ["model", "model_args", "dataset", "validation", "epochs", "batch_size", "optimizer", "lr", "schedule",
            "augment", "ema", "label_smoothing", "seed"]
    recipe = ", ".join(f"{k}={cfg[k]!r}" for k in keys if k in cfg and cfg[k] not in ("", {}, None))
    return (
        "<h3>Model card</h3><dl>"
        f"<dt>Model</dt><dd>{html.escape(row['model'])}, {row['params']:,} parameters</dd>"
        f"<dt>Data</dt><dd>{html.escape(e['dataset'])}, content hash <code>{e['dataset_hash'][:16]}</code>; "
        f"validation split of {cfg.get('validation')} training examples (stratified, seed 0) for model selection; "
        "test split used once</dd>"
        f"<dt>Training recipe</dt><dd><code>{html.escape(recipe)}</code></dd>"
        f"<dt>Intended use</dt><dd>Teaching, benchmarking and demonstrating classifiers of 28x28 "
        f"{html.escape(e['dataset'])} images brought into the dataset's own form (centred, size-normalised, "
        "light on dark).</dd>"
        "<dt>Limits</dt><dd>Trained on one dataset's distribution only: images that are not in its form "
        "(uncentred, dark-on-light, several characters, photographs) are misread, often with high confidence. "
        f"Calibration error on test: {e['ece']:.4f}. Not for decisions about people.</dd></dl>"
    )
