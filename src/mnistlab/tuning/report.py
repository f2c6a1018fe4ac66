"""The study report: one self-contained HTML page (PNG pictures embedded, no CDN) and the PNGs.

Optuna's matplotlib visualisations draw the optimisation history, the parameter importances
(fANOVA), the slices (validation accuracy against each parameter), the per-epoch validation
curves that pruning acted on, and for accuracy-vs-time studies the Pareto front.
"""

from __future__ import annotations

import html
import io
import json
import time
import warnings
from pathlib import Path

from .. import __version__, atomic
from ..analysis.report import CSS, _img

PICTURES = {
    "history": "optimisation history: validation accuracy of each trial and the best so far",
    "importances": "parameter importances (fANOVA on the finished trials)",
    "slices": "validation accuracy against each parameter",
    "intermediate": "validation accuracy per epoch of each trial (what the pruner compared)",
    "pareto": "Pareto front: validation accuracy vs training seconds",
}


def pictures(study, summary: dict, out: Path) -> dict[str, Path]:
    """The study's pictures as PNGs in `out`; a picture Optuna cannot draw yet (too few trials) is left out."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    single = len(summary["objectives"]) == 1
    acc = {"target": None if single else (lambda t: t.values[0]), "target_name": "validation accuracy"}
    draw = {
        "history": lambda: ovm.plot_optimization_history(study, **acc),
        "importances": lambda: ovm.plot_param_importances(study, **acc),
        "slices": lambda: ovm.plot_slice(study, **acc),
    }
    if single:
        draw["intermediate"] = lambda: ovm.plot_intermediate_values(study)
    else:
        draw["pareto"] = lambda: ovm.plot_pareto_front(study, target_names=["validation accuracy",
                                                                            "training seconds"])
    written = {}
    for key, fn in draw.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn()
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError, KeyError):
            continue  # e.g. importances need two finished trials that differ
        axes = list(getattr(ax, "flat", [ax]))
        fig = axes[0].figure
        legend = axes[0].get_legend()
        if key == "intermediate" and legend is not None and len(study.trials) > 12:
            legend.remove()  # one entry per trial: unreadable past a dozen
        if key == "pareto":
            _mark_baseline(axes[0], study)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        path = out / f"study-{key}.png"
        atomic.write_bytes(path, buf.getvalue())
        written[key] = path
    return written


def _mark_baseline(ax, study) -> None:
    """Point at the recipe's own values (the baseline trial), the point every other is measured against."""
    for t in study.trials:
        if t.user_attrs.get("baseline") and t.values is not None:
            ax.annotate("the recipe's own values", xy=(t.values[0], t.values[1]), xytext=(0, 30),
                        textcoords="offset points", ha="center", fontsize=9,
                        arrowprops={"arrowstyle": "->", "color": "0.3"})
            return


def write(study, summary: dict, out: Path) -> Path:
    """`out/study.html`: the headline, the chosen configuration, the pictures and every trial."""
    pics = pictures(study, summary, out)
    c, chosen, test = summary["trials"], summary["chosen"], summary["test"]
    esc = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>study {esc(summary['study'])}</title><style>{CSS}</style></head><body><header>"
             f"<h1>Study {esc(summary['study'])}</h1><p>{esc(summary['recipe'])} over {esc(summary['space']['source'])};"
             f" objectives {esc(', '.join(summary['objectives']))}; {summary['sampler']} sampler (seed "
             f"{summary['seed']}), pruner {esc(summary['pruner'])}; mnistlab {__version__}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}</p></header><main>"]
    test_card = (f"<div class='card'><div class='v'>{test['accuracy']:.2%}</div><div class='k'>test accuracy of "
                 f"trial {test['trial']}, evaluated once after the search</div></div>"
                 if test.get("accuracy") is not None else "")
    parts.append("<section><h2>Headline</h2><div class='headline'>"
                 f"<div class='card'><div class='v'>{chosen['val_acc']:.2%}</div><div class='k'>validation accuracy "
                 f"of the chosen trial ({chosen['number']})</div></div>{test_card}"
                 f"<div class='card'><div class='v'>{c['complete']} + {c['pruned']}</div><div class='k'>trials "
                 f"complete + pruned ({c['fail']} failed)</div></div></div>")
    if summary.get("baseline"):
        b = summary["baseline"]
        parts.append(f"<p>Trial {b['number']} is the recipe's own values: validation {b['val_acc']:.2%} in "
                     f"{b['train_s']:.0f} s of training. The chosen trial is "
                     f"{100 * (chosen['val_acc'] - b['val_acc']):+.2f} points from it.</p>")
    parts.append(f"<p>Every trial trained on the training split less a {summary['validation']}-image stratified "
                 "holdout and was scored on that holdout; no trial read the test set "
                 f"(<code>evaluate_test=false</code>). The test set was read {test.get('evaluations', 0)} time(s) by "
                 "this study, for the chosen trial only.</p></section>")
    recipe = Path(summary["best_recipe"]).read_text()
    parts.append(f"<section><h2>Chosen configuration</h2><pre><code>{esc(recipe)}</code></pre>"
                 f"<p><code>mnistlab train --recipe {esc(summary['best_recipe'])}</code></p></section>")
    if pics:
        parts.append("<section><h2>Pictures</h2><div class='figs'>" +
                     "".join(_img(path, PICTURES[key]) for key, path in pics.items()) + "</div></section>")
    if summary["pareto"]:
        parts.append("<section><h2>Pareto front</h2><table><tr><th>trial</th><th>val acc (%)</th>"
                     "<th>training s</th><th>parameters</th></tr>" + "".join(
                         f"<tr><td>{t['number']}</td><td class='num'>{100 * t['val_acc']:.2f}</td>"
                         f"<td class='num'>{t['train_s']:.1f}</td><td>{esc(_params(t['params']))}</td></tr>"
                         for t in summary["pareto"]) + "</table></section>")
    parts.append("<section><h2>Trials</h2><table><tr><th>trial</th><th>state</th><th>val acc (%)</th>"
                 "<th>training s</th><th>parameters</th><th>run</th></tr>")
    for t in study.get_trials(deepcopy=False):
        val, secs = t.user_attrs.get("val_acc"), t.user_attrs.get("train_s")
        note = " (the recipe)" if t.user_attrs.get("baseline") else ""
        note += f" ({esc(t.user_attrs['diverged'][:60])}...)" if t.user_attrs.get("diverged") else ""
        parts.append(f"<tr><td>{t.number}{note}</td><td>{t.state.name.lower()}</td>"
                     f"<td class='num'>{'' if val is None else f'{100 * val:.2f}'}</td>"
                     f"<td class='num'>{'' if secs is None else f'{secs:.1f}'}</td>"
                     f"<td>{esc(_params(t.params))}</td><td><code>{esc(Path(t.user_attrs.get('run_dir', '')).name)}"
                     "</code></td></tr>")
    parts.append("</table></section>")
    env = summary.get("environment", {})
    parts.append(f"<section><h2>Machine</h2><pre><code>{esc(json.dumps(env, indent=1)[:3000])}</code></pre>"
                 "</section></main></body></html>")
    path = out / "study.html"
    atomic.write_text(path, "".join(parts))
    return path


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
