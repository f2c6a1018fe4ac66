"""The study report: one self-contained HTML page (PNG pictures embedded, no CDN) and the PNGs.

Optuna's matplotlib visualisations draw the optimisation history, the parameter importances
(fANOVA), the slices (validation accuracy against each parameter), the per-epoch validation
curves that pruning acted on, and for accuracy-vs-time studies the Pareto front.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from ... import atomic, pages
from ..._version import __version__
from ...pictures import pyplot, save_figure

# fANOVA fits a random forest to the complete trials: on a handful it draws noise as if it were a
# finding (and importing scikit-learn for it cost each small study's process 1.5 s), so below this many
# complete trials the picture is left out.
IMPORTANCE_TRIALS = 5

PICTURES = {
    "history": "optimisation history: validation accuracy of each trial and the best so far",
    "importances": f"parameter importances (fANOVA on the complete trials, drawn from {IMPORTANCE_TRIALS} on)",
    "slices": "validation accuracy against each parameter",
    "intermediate": "validation accuracy per epoch of each trial (what the pruner compared)",
    "pareto": "Pareto front: validation accuracy vs training seconds",
}


def pictures(study, summary: dict, out: Path) -> dict[str, Path]:
    """The study's pictures as PNGs in `out`; a picture Optuna cannot draw yet (too few trials) is left out."""
    pyplot()  # matplotlib on the headless backend, before Optuna draws with it
    from optuna.visualization import matplotlib as ovm

    single = len(summary["objectives"]) == 1
    acc = {"target": None if single else (lambda t: t.values[0]), "target_name": "validation accuracy"}
    draw = {"history": lambda: ovm.plot_optimization_history(study, **acc)}
    if summary["trials"]["complete"] >= IMPORTANCE_TRIALS:
        draw["importances"] = lambda: ovm.plot_param_importances(study, **acc)
    draw["slices"] = lambda: ovm.plot_slice(study, **acc)
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
        written[key] = save_figure(fig, out / f"study-{key}.png", dpi=90, crop=True)
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
    """`out/study.html`: the headline, the chosen configuration, the pictures and every trial, through the
    one autoescaping template (pages.render): parameters, names and notes from the study are text."""
    pics = pictures(study, summary, out)
    c, chosen, test = summary["trials"], summary["chosen"], summary["test"]
    b = summary.get("baseline")

    def pct(v):
        return "" if not isinstance(v, (int, float)) else f"{100 * v:.2f}"

    def secs(v):
        return "" if not isinstance(v, (int, float)) else f"{v:.1f}"

    rows = []
    for t in study.get_trials(deepcopy=False):
        note = " (the recipe)" if t.user_attrs.get("baseline") else ""
        if t.user_attrs.get("diverged"):
            note += f" ({str(t.user_attrs['diverged'])[:60]}...)"
        rows.append({"number": t.number, "note": note, "state": t.state.name.lower(), "val": pct(t.user_attrs.get("val_acc")),
                     "secs": secs(t.user_attrs.get("train_s")), "params": _params(t.params),
                     "run": Path(str(t.user_attrs.get("run_dir", ""))).name})
    page = pages.render(
        "study.html", styles=(pages.asset("page.css"),), study=summary["study"],
        subtitle=f"{summary['recipe']} over {summary['space']['source']}; objectives {', '.join(summary['objectives'])}; "
                 f"{summary['sampler']} sampler (seed {summary['seed']}), pruner {summary['pruner']}; mnistlab "
                 f"{__version__}, {time.strftime('%Y-%m-%d %H:%M')}",
        chosen_val=f"{chosen['val_acc']:.2%}", chosen_number=chosen["number"],
        test_acc=f"{test['accuracy']:.2%}" if test.get("accuracy") is not None else "", test_trial=test.get("trial"),
        counts=f"{c['complete']} + {c['pruned']}", failed=c["fail"],
        baseline=(f"Trial {b['number']} is the recipe's own values: validation {b['val_acc']:.2%} in {b['train_s']:.0f} s "
                  f"of training. The chosen trial is {100 * (chosen['val_acc'] - b['val_acc']):+.2f} points from it."
                  if b else ""),
        validation=summary["validation"], evaluations=test.get("evaluations", 0),
        recipe=Path(summary["best_recipe"]).read_text(), recipe_path=summary["best_recipe"],
        pictures=[pages.picture(path, out, PICTURES[key]) for key, path in pics.items()],
        pareto=[{"number": t["number"], "val": pct(t["val_acc"]), "secs": secs(t["train_s"]), "params": _params(t["params"])}
                for t in summary["pareto"]],
        trials=rows, machine=json.dumps(summary.get("environment", {}), indent=1)[:3000])
    path = out / "study.html"
    atomic.write_text(path, page)
    return path


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
