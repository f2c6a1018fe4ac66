"""A run's robust-accuracy figures, as `evaluate` and `report` list them: the end-of-training figure of
an adversarially trained run (summary.json) and every `mnistlab attack` result in RUN/eval/."""

from __future__ import annotations

from ..attacks.registry import ATTACKS
from ..rundir import RunDir


def robust_figures(run: RunDir) -> list[dict]:
    """The robust accuracies recorded for a run, each with its attack named: the end-of-training figure in
    summary.json (adversarially trained runs) and every `mnistlab attack` result in RUN/eval/. One row
    per epsilon; [] for a run never attacked."""
    rows = []
    summary = run.read_summary() or {}
    if summary.get("robust"):
        r = summary["robust"]
        checks = r.get("masking_checks")
        rows.append({"attack": r["attack"], "eps": r.get("eps"), "accuracy": r["accuracy"], "n": r["n"],
                     "split": r["split"], "clean_accuracy": r["clean_accuracy"],
                     "checks_passed": None if checks is None else checks.get("passed"), "file": str(run.summary)})
    for file, doc in run.attack_results():  # each checked against RunDir's ATTACK_SPEC
        for e, a in zip(doc["eps"], doc["robust_accuracy"]):
            checks = doc.get("masking_checks")
            target = "" if not doc["targeted"] else (", targeted" if doc.get("target") is None  # (optional in the spec)
                                                      else f", targeted at {doc['target']}")
            rows.append({"attack": describe(doc) + target,
                         "eps": e, "accuracy": a, "n": doc["n"], "split": doc["split"],
                         "clean_accuracy": doc["clean_accuracy"],
                         "checks_passed": None if checks is None else checks.get("passed"), "file": str(file)})
    return rows


def format_robust(rows: list[dict]) -> list[str]:
    """Lines for `evaluate` and `report`: robust accuracy, attack, eps, images, the checks' verdict."""
    out = []
    for r in rows:
        verdict = {None: "masking checks not run", True: "masking checks passed",
                   False: "masking checks FAILED"}[r["checks_passed"]]
        eps = f" at eps {r['eps']:g}" if r.get("eps") is not None else ""
        out.append(f"{r['accuracy']:.2%} under {r['attack']}{eps} ({r['n']} {r['split']} images; clean "
                   f"{r['clean_accuracy']:.2%}; {verdict})")
    return out




def describe(doc: dict) -> str:
    """The attack in words, as a robust-accuracy figure should name it (each attack's entry words it)."""
    entry = ATTACKS.get(doc["method"])
    what = entry.named(doc) if entry is not None else str(doc["method"])
    restarts = doc.get("restarts", 1)
    return f"{what} {doc['norm']}" + (f", {restarts} restarts" if restarts > 1 else "")
