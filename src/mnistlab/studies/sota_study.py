"""The state-of-the-art study: An et al.'s (2020) M3, M5 and M7 over several seeds, under two
protocols side by side, with their two-level ensembles; one command, resumable.

    mnistlab sota --out sota-study                     # the whole study; on a GPU, CUDA graphs + bf16
    mnistlab sota --out sota-study                     # again after an interruption: finishes it
    mnistlab sota --out smoke --models m5 --seeds 0-1 --set epochs=2 --set train_subset=1000   # CPU-sized

The protocols, named in every table:
  paper  An et al.'s: train on all 60,000 images, keep the last epoch's (EMA) weights, report the mean
         over seeds; ensembles take every member (majority vote, as the paper, and mean probability).
         Nothing is selected, so the test set decides nothing.
  val    ours: hold out 5,000 training images (stratified, seed 0, the same for every run); keep each
         run's best-on-validation epoch; build the paper's two-level ensemble (per-architecture
         ensembles, then one across architectures) with members chosen greedily on validation only.
The paper chose its checkpoints and ensembles on the test set; neither protocol here does.

The study directory holds `plan.json` (the --set values every run shares: a rerun must agree; it
may name other models, seeds or protocols, so a study can be trained in parts, one GPU session per
model, and summarised at the end), one run directory per
(protocol, model, seed) under `runs/` with that run's output probabilities (`outputs.safetensors`:
validation, and test from the same final weights), and the results: `study.json` (every number,
per seed), `table.md`, `report.md`, `throughput.json` (training images/s, eager vs CUDA graph).
A rerun skips finished runs, resumes interrupted ones from their last checkpoint (the engine makes
that bit-identical on a CPU), and restarts runs that died before their first checkpoint.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import atomic, machine, rundir, schema
from ..analysis.ensembles import greedy
from ..errors import MnistlabError
from ..models import MODELS as ZOO
from ..models.predictor import combine
from ..rundir import RunDir
from ..stats import over_seeds
from ..training.config import resolve
from ..training.engine import resume, train

MODELS = ("m3", "m5", "m7")
PROTOCOLS = ("paper", "val")
PROTOCOL_WORDS = {
    "paper": "paper protocol: all 60,000 train, last-epoch EMA weights, no selection",
    "val": "validation protocol: 55,000 train, best-on-validation epoch, members chosen on 5,000 validation",
}
VALIDATION = 5000
# The goals, in accuracy (0-1).
GOAL_SINGLE, GOAL_ENSEMBLE = 0.9975, 0.9985
OUTPUTS = RunDir.OUTPUTS  # each run's probabilities (save_outputs=true)


@dataclass
class Plan:
    models: list[str] = field(default_factory=lambda: list(MODELS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    overrides: dict = field(default_factory=dict)  # --set key=value, applied to every run

    def as_dict(self) -> dict:
        return {"models": self.models, "seeds": self.seeds, "protocols": self.protocols, "overrides": self.overrides}


def check_plan(plan: Plan) -> None:
    bad_p = [p for p in plan.protocols if p not in PROTOCOLS]
    if bad_p or not plan.protocols:
        raise MnistlabError(f"--protocols {','.join(plan.protocols)}: expected some of {', '.join(PROTOCOLS)}")
    bad_m = [m for m in plan.models if m not in ZOO]
    if bad_m or not plan.models:
        raise MnistlabError(f"--models {','.join(plan.models)}: expected zoo models such as {', '.join(MODELS)}",
                            hint="`mnistlab models` lists them")
    for key in ("model", "validation", "seed", "out", "name", "evaluate_test", "save_outputs"):
        if key in plan.overrides:
            raise MnistlabError(f"--set {key}=...: the study sets {key} itself (--models the models; the protocol "
                                "validation; --seeds the seeds; --out the directory)")


def recipe_for(model: str) -> str:
    """An et al.'s recipe for their models; for any other zoo model (a smoke test's small one), that
    recipe's training with the model swapped in."""
    return f"an2020-{model}" if model in MODELS else "an2020-m5"


def run_config(plan: Plan, protocol: str, model: str, seed: int, study: Path):
    gpu = {}
    if torch.cuda.is_available():  # the fast path: every step one CUDA graph, bf16 where native, NHWC
        gpu = {"device": "cuda", "cuda_graphs": True, "channels_last": True, "precision": "auto"}
    settings = {**gpu, **plan.overrides, "model": model, "seed": seed, "progress": False, "save_outputs": True,
                "validation": 0 if protocol == "paper" else VALIDATION,
                "out": str(study / "runs" / protocol / model), "name": f"seed-{seed}"}
    return resolve(recipe_for(model), settings)  # checked field by field and as a whole


# ----------------------------------------------------------------------------------------------
# Training the runs (resumable)


def run_path(study: Path, protocol: str, model: str, seed: int) -> Path:
    return study / "runs" / protocol / model / f"seed-{seed}"


def train_run(plan: Plan, protocol: str, model: str, seed: int, study: Path, say) -> Path:
    """The run for (protocol, model, seed), trained, resumed or found finished; its outputs written."""

    path = rundir.no_links_below(study, run_path(study, protocol, model, seed))  # received studies too
    cfg = run_config(plan, protocol, model, seed, study)
    if (path / RunDir.SUMMARY).is_file():
        if not (path / OUTPUTS).is_file():  # the engine writes them before the summary
            raise MnistlabError(f"{path} finished without {OUTPUTS}", hint=f"delete {path}; the next run trains it again")
        return path
    if (path / RunDir.LAST).is_file():
        say(f"{protocol} {model} seed {seed}: resuming {path}")
        resume(path, quiet=True)
    else:
        if path.exists():  # died before its first checkpoint: nothing to keep
            rundir.remove_run(study, path)
        say(f"{protocol} {model} seed {seed}: training ({cfg.epochs} epochs, {cfg.device})")
        path.parent.mkdir(parents=True, exist_ok=True)
        train(cfg, quiet=True)
    return path


# What the study needs of each finished run's summary, on top of RunDir's checks of its types.
STUDY_RUN_SPEC = schema.obj({"test_acc": schema.number(0, 1), "epochs_run": schema.integer(0),
                             "train_s": schema.number(0), "device": schema.text(100),
                             "precision": schema.obj({"chosen": schema.text(20)})})
PLAN_SPEC = schema.obj({"overrides": schema.obj()})
THROUGHPUT_SPEC = schema.listof(schema.obj({"model": schema.text(100), "path": schema.text(100),
                                            "images_per_s": schema.number(0), "precision": schema.text(20),
                                            "device": schema.text(100), "speedup": schema.number(0, optional=True)}),
                                100)


def read_summary(path: Path) -> dict:
    """A finished run's summary.json, checked for the fields the study reads."""
    hint = f"delete {path}; the next run trains it again"
    try:
        summary = RunDir(path).read_summary()
        if summary is None:
            raise MnistlabError(f"{path / RunDir.SUMMARY} does not exist")
        return schema.check(summary, STUDY_RUN_SPEC, str(path / RunDir.SUMMARY))
    except MnistlabError as exc:
        raise MnistlabError(exc.message, hint=hint) from None


def read_outputs(path: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, labels) of one split from a run's outputs file."""
    return RunDir(path).read_outputs(split)


# ----------------------------------------------------------------------------------------------
# Ensembles: selection sees validation outputs only; the test outputs are read after it is fixed


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs.argmax(1) == labels).float().mean().item()


def select_two_level(val: dict[str, list[torch.Tensor]], labels: torch.Tensor, method: str = "mean") -> dict:
    """The two-level ensemble's members, chosen on validation only: for each architecture, greedy
    forward selection among its seeds; then greedy selection among the architectures' ensembles.
    `val` maps model -> its runs' validation probabilities. Returns the choice and its validation
    accuracies; nothing here can see a test output."""

    per_model, level1 = {}, []
    for model, probs in val.items():
        chosen, trace = greedy(torch.stack(probs), labels, method)
        per_model[model] = {"members": chosen, "val_acc": trace[-1]}
        level1.append(combine(torch.stack([probs[i] for i in chosen]), method))
    models = list(val)
    top, trace = greedy(torch.stack(level1), labels, method)
    return {"method": method, "per_model": per_model, "models": [models[i] for i in top], "val_acc": trace[-1]}


def two_level(probs: dict[str, list[torch.Tensor]], members: dict[str, list[int]], models: list[str],
              method: str) -> torch.Tensor:
    """The two-level ensemble's probabilities: each architecture's members combined, then those combined."""

    level1 = {m: combine(torch.stack([probs[m][i] for i in members[m]]), method) for m in models}
    return combine(torch.stack([level1[m] for m in models]), method)


def summarise(plan: Plan, study: Path) -> dict:
    """Every number of the study, from the runs' summaries and outputs."""
    out = {"protocols": {}}
    for protocol in plan.protocols:
        paths = {m: [run_path(study, protocol, m, s) for s in plan.seeds] for m in plan.models}
        singles = {}
        for m, ps in paths.items():
            per_seed = []
            for s, p in zip(plan.seeds, ps):
                summary = read_summary(p)
                per_seed.append({"seed": s, "test_acc": summary["test_acc"], "val_acc": summary["val_acc"],
                                 "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
                                 "train_s": summary["train_s"], "precision": summary["precision"]["chosen"],
                                 "holdout": summary["holdout"], "run_dir": str(p)})
            test, val = over_seeds(r["test_acc"] for r in per_seed), over_seeds(r["val_acc"] for r in per_seed)
            singles[m] = {"per_seed": per_seed, "test_acc_mean": test["mean"],
                          "val_acc_mean": val["mean"] if val else None, "test_acc_std": test["std"],
                          "train_s_mean": over_seeds(r["train_s"] for r in per_seed)["mean"]}
        entry = {"singles": singles, "ensembles": []}
        if protocol == "paper":
            test = {m: [read_outputs(p, "test")[0] for p in ps] for m, ps in paths.items()}
            labels = read_outputs(paths[plan.models[0]][0], "test")[1]
            every = {m: list(range(len(plan.seeds))) for m in plan.models}
            for method in ("vote", "mean"):
                for m in plan.models:
                    entry["ensembles"].append({"name": f"{m} x{len(plan.seeds)} ({method})", "method": method,
                                               "members": {m: plan.seeds},
                                               "test_acc": accuracy(two_level(test, every, [m], method), labels)})
                if len(plan.models) > 1:
                    entry["ensembles"].append({
                        "name": f"two-level: {'+'.join(plan.models)}, every seed ({method})", "method": method,
                        "members": {m: plan.seeds for m in plan.models},
                        "test_acc": accuracy(two_level(test, every, plan.models, method), labels)})
        else:
            holdouts = {r["run_dir"]: r["holdout"] for m in plan.models for r in singles[m]["per_seed"]}
            if len({json.dumps(h, sort_keys=True) for h in holdouts.values()}) != 1 or None in holdouts.values():
                raise MnistlabError(f"the val runs of {study} did not all hold out the same images ({holdouts})",
                                    hint="a selection split must be one set of images no member trained on")
            val = {m: [read_outputs(p, "val")[0] for p in ps] for m, ps in paths.items()}
            val_labels = read_outputs(paths[plan.models[0]][0], "val")[1]
            choice = select_two_level(val, val_labels, "mean")
            # The choice is fixed; only now are the test outputs read, once, for the final numbers.
            test = {m: [read_outputs(p, "test")[0] for p in ps] for m, ps in paths.items()}
            labels = read_outputs(paths[plan.models[0]][0], "test")[1]
            members = {m: c["members"] for m, c in choice["per_model"].items()}
            for m in plan.models:
                entry["ensembles"].append({
                    "name": f"{m}, seeds chosen on val (mean)", "method": "mean",
                    "members": {m: [plan.seeds[i] for i in members[m]]},
                    "val_acc": choice["per_model"][m]["val_acc"],
                    "test_acc": accuracy(two_level(test, members, [m], "mean"), labels)})
            entry["ensembles"].append({
                "name": "two-level, chosen on val (mean)", "method": "mean",
                "members": {m: [plan.seeds[i] for i in members[m]] for m in choice["models"]},
                "val_acc": choice["val_acc"], "test_acc": accuracy(two_level(test, members, choice["models"], "mean"),
                                                                   labels)})
            entry["selection"] = choice
        out["protocols"][protocol] = entry
    return out


def table_rows(results: dict, plan: Plan) -> list[dict]:
    rows = []
    for protocol, entry in results["protocols"].items():
        for m, single in entry["singles"].items():
            rows.append({"name": f"{m} single, mean of seeds {fmt_seeds(plan.seeds)}", "protocol": protocol,
                         "val_acc": single["val_acc_mean"], "test_acc": single["test_acc_mean"],
                         "test_std": single["test_acc_std"],
                         "n": len(single["per_seed"]), "train_s": single["train_s_mean"],
                         "goal": "single >= 99.75%", "met": single["test_acc_mean"] >= GOAL_SINGLE})
        for e in entry["ensembles"]:
            rows.append({"name": e["name"], "protocol": protocol, "val_acc": e.get("val_acc"), "test_acc": e["test_acc"],
                         "n": sum(len(v) for v in e["members"].values()), "goal": "ensemble >= 99.85%",
                         "met": e["test_acc"] >= GOAL_ENSEMBLE})
    return rows


def fmt_seeds(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ",".join(map(str, seeds))


def markdown_table(rows: list[dict]) -> str:
    def pct(v):
        return "" if v is None else f"{100 * v:.2f}"

    lines = ["| protocol | model or ensemble | members | val % | test % | std | train s | goal |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        std = "" if "test_std" not in r else f"{100 * r['test_std']:.3f}"
        train_s = "" if "train_s" not in r else f"{r['train_s']:.0f}"
        lines.append(f"| {r['protocol']} | {r['name']} | {r['n']} | {pct(r.get('val_acc'))} | {pct(r['test_acc'])} "
                     f"| {std} | {train_s} | {r['goal']}: {'met' if r['met'] else 'not met'} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Throughput: eager vs CUDA graph


def throughput(model: str, overrides: dict, steps: int) -> list[dict]:
    """Training images/s of `model` with An et al.'s recipe, eager and (on a GPU) as a CUDA graph:
    the second of two short epochs (the first pays for cudnn's search and the graph's capture)."""
    import tempfile


    base = {k: v for k, v in overrides.items() if k not in ("epochs", "train_subset")}
    modes = [("eager", {"cuda_graphs": False})]
    if torch.cuda.is_available():
        modes = [("eager", {"device": "cuda", "cuda_graphs": False, "channels_last": True}),
                 ("cuda graph", {"device": "cuda", "cuda_graphs": True, "channels_last": True})]
    rows = []
    for label, mode in modes:
        with tempfile.TemporaryDirectory() as out:
            cfg = resolve(recipe_for(model), {**base, **mode, "model": model, "epochs": 2, "validation": 0,
                                              "evaluate_test": False, "progress": False, "out": out, "name": "t"})
            cfg.train_subset = cfg.batch_size * steps
            summary = train(cfg, quiet=True)
            epochs = [r for r in RunDir(summary["run_dir"]).read_log()[0] if "images_per_s" in r]
        rows.append({"model": model, "path": label, "images_per_s": epochs[-1]["images_per_s"],
                     "precision": summary["precision"]["chosen"], "device": summary["device"],
                     "batch_size": cfg.batch_size, "steps": steps})
    if len(rows) == 2:
        rows[1]["speedup"] = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    return rows


# ----------------------------------------------------------------------------------------------
# The study


def run_study(out: str | Path, plan: Plan, *, quiet: bool = False, throughput_steps: int = 50) -> dict:
    """Train what is missing, then write the results. Safe to rerun: see the module's docstring.
    `throughput_steps` steps per timed epoch of the eager-vs-graph measurement (0: skip it)."""
    check_plan(plan)
    if not 0 <= throughput_steps <= 100_000:
        raise MnistlabError(f"--throughput-steps {throughput_steps}: expected 0 (skip) to 100000")
    study = Path(out)
    say = (lambda text: None) if quiet else (lambda text: print(text, flush=True))
    plan_file = study / "plan.json"
    if plan_file.is_file():
        before = schema.read_json(plan_file, PLAN_SPEC, hint="delete it, or choose another --out")
        if before != {"overrides": plan.overrides}:
            raise MnistlabError(f"{study} holds runs trained with other settings (--set): {before.get('overrides')!r}, "
                                f"not {plan.overrides!r}",
                                hint="rerun it with the same --set values (--models, --seeds and --protocols may "
                                "differ: a study can be built in parts), or choose another --out")
    for protocol in plan.protocols:  # check every config before hours of training
        for m in plan.models:
            run_config(plan, protocol, m, plan.seeds[0], study)
    if not plan_file.is_file():
        study.mkdir(parents=True, exist_ok=True)
        atomic.write_text(plan_file, json.dumps({"overrides": plan.overrides}, indent=2))
    t0 = time.perf_counter()
    todo = [(p, m, s) for p in plan.protocols for m in plan.models for s in plan.seeds]
    for i, (protocol, model, seed) in enumerate(todo, 1):
        train_run(plan, protocol, model, seed, study, lambda text: say(f"[{i}/{len(todo)}] {text}"))
    results = {"plan": plan.as_dict(), "machine": machine.describe(), "argv": sys.argv,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "study_s": time.perf_counter() - t0,
               **summarise(plan, study)}
    tp_file = study / "throughput.json"
    if throughput_steps and not tp_file.is_file():
        say(f"measuring training throughput, eager vs CUDA graph ({throughput_steps} steps)")
        tp = [row for m in plan.models for row in throughput(m, plan.overrides, throughput_steps)]
        atomic.write_text(tp_file, json.dumps(tp, indent=2))
    results["throughput"] = (schema.read_json(tp_file, THROUGHPUT_SPEC, hint="delete it; the next run measures again")
                             if tp_file.is_file() else [])
    results["rows"] = table_rows(results, plan)
    atomic.write_text(study / "study.json", json.dumps(results, indent=2))
    atomic.write_text(study / "table.md", markdown_table(results["rows"]) + "\n")
    atomic.write_text(study / "report.md", report(results, plan))
    say(markdown_table(results["rows"]))
    say(f"wrote {study / 'report.md'}, {study / 'table.md'}, {study / 'study.json'}")
    return results


def report(results: dict, plan: Plan) -> str:
    m = machine.one_line(results["machine"])
    lines = ["# An et al. (2020) M3/M5/M7: singles and two-level ensembles", "",
             f"Machine: {m}. Command: `{' '.join(results['argv'])}`. Seeds {fmt_seeds(plan.seeds)}; "
             f"settings beyond the recipes: {plan.overrides or 'none'}.", ""]
    for p in plan.protocols:
        lines.append(f"- **{p}**: {PROTOCOL_WORDS[p]}.")
    lines += ["", "The paper's 99.91% chose checkpoints and ensembles on the test set; no number here did.", "",
              markdown_table(results["rows"]), "", "## Per seed", "",
              "| protocol | model | seed | test % | val % | best epoch | train s | precision |", "|---|---|---|---|---|---|---|---|"]
    for p, entry in results["protocols"].items():
        for model, single in entry["singles"].items():
            for r in single["per_seed"]:
                val = "" if r["val_acc"] is None else f"{100 * r['val_acc']:.2f}"
                lines.append(f"| {p} | {model} | {r['seed']} | {100 * r['test_acc']:.2f} | {val} | "
                             f"{r['best_epoch'] or r['epochs_run']} | {r['train_s']:.0f} | {r['precision']} |")
    if "val" in results["protocols"]:
        sel = results["protocols"]["val"]["selection"]
        lines += ["", "## Chosen on validation", ""]
        for model, c in sel["per_model"].items():
            lines.append(f"- {model}: seeds {[plan.seeds[i] for i in c['members']]} (val {100 * c['val_acc']:.2f}%)")
        lines.append(f"- across architectures: {', '.join(sel['models'])} (val {100 * sel['val_acc']:.2f}%)")
    if results["throughput"]:
        lines += ["", "## Training throughput", "", "| model | path | images/s | precision | device | speedup |",
                  "|---|---|---|---|---|---|"]
        for r in results["throughput"]:
            sp = f"{r['speedup']:.2f}x" if "speedup" in r else ""
            lines.append(f"| {r['model']} | {r['path']} | {r['images_per_s']:,.0f} | {r['precision']} | "
                         f"{r['device']} | {sp} |")
    return "\n".join(lines) + "\n"
