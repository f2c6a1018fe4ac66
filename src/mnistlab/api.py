"""The Python API: one function per CLI verb, of the verb's own name, flags and defaults. The CLI's
handlers parse their flags and call exactly these; a notebook calls them directly.

    import mnistlab
    run = mnistlab.train(recipe="seed-cnn", epochs=3, seeds=[0, 1, 2])      # settings: the --set keys
    ev = mnistlab.evaluate(run.runs[0].run_dir)                              # ev.accuracy, ev.confusion_matrix
    mnistlab.attack(run.runs[0].run_dir, method="pgd", eps=[0.1, 0.3])       # a split: files in RUN/eval/
    mnistlab.map(run.runs[0].run_dir)

Settings are keyword arguments named as the recipe keys (`mnistlab train --help` lists them); an
unknown one is an error that suggests the nearest name, as the CLI's are. Every function returns a
result object (`mnistlab.results`) with the figures as attributes and a notebook display.
"""

from __future__ import annotations

import functools
import os
import tempfile
from inspect import Parameter, signature
from pathlib import Path

from . import lists, names, user_code
from .analysis import (
    attack_reports,
    checks,
    data_audit,
    ensembles,
    evaluation,
    inspection,
    maps,
)
from .attacks import AttackResult
from .attacks import attack as attack_images
from .data import Dataset
from .data import load as load_dataset
from .errors import MnistlabError
from .models import carried_code, registry
from .models.classical import CLASSICAL
from .models.classical import options as classical_options
from .reporting import run_report
from .results import (
    AttackReport,
    Audit,
    Check,
    Curve,
    Evaluation,
    Inspection,
    Listing,
    Map,
    RecipeText,
    Report,
    Run,
    Runs,
    Saved,
    SotaStudy,
    Study,
    Trusted,
)
from .rundir import RunDir
from .serving import onnx_export, prediction
from .studies import sota_study, transfer_study
from .studies.tuning import search
from .training import config, engine, pretraining


def _settings(settings: dict, where: str = "setting") -> dict:
    """Keyword settings checked as config keys (the nearest name suggested for an unknown one). Your
    own model, optimizer or loss may be an object (a class, a function, an nn.Module), and the dataset a
    `Dataset`: each gets the name the run records (user_code.adopt; Dataset.name)."""
    settings = dict(settings)
    for role in ("model", "optimizer", "loss"):
        if role in settings and not isinstance(settings[role], str):
            settings[role] = user_code.adopt(settings[role], role)
    if isinstance(settings.get("dataset"), Dataset):
        settings["dataset"] = _dataset_name(settings["dataset"])
    for key, value in settings.items():
        config.coerce(key, value, source=where)
    return settings


def _dataset_name(dataset):
    """A `Dataset` of one's own, known to every verb in this process by its name; a name as it is."""
    if isinstance(dataset, Dataset):
        load_dataset(dataset)  # registers it
        return dataset.name
    return dataset


def _trusting(fn):
    """Adds `trust_code=False`: True lets a run's recorded copy of changed or missing user code run."""
    @functools.wraps(fn)
    def wrapper(*args, trust_code: bool = False, **kwargs):
        with user_code.trusting(trust_code):
            return fn(*args, **kwargs)

    params = list(signature(fn).parameters.values())
    at = next((i for i, p in enumerate(params) if p.kind is Parameter.VAR_KEYWORD), len(params))
    params.insert(at, Parameter("trust_code", Parameter.KEYWORD_ONLY, default=False, annotation="bool"))
    wrapper.__signature__ = signature(fn).replace(parameters=params)
    return wrapper


@_trusting
def train(recipe: str | None = None, *, seeds=None, resume: str | os.PathLike | None = None, dry_run: bool = False,
          quiet: bool = False, **settings) -> Run | Runs:
    """Train a model as `mnistlab train` does: a recipe, then settings on top (`epochs=3`, `model="m5"`,
    `model_args={"width": 32}`, ...); `seeds` (a list, or "0-4") trains one run per seed under one group
    directory; `resume` continues an interrupted run. Returns the `Run` (or `Runs` over seeds)."""
    overrides = _settings(settings, "train")
    if dry_run:  # a smoke run: one short epoch on a slice of the data, in a folder removed after it
        if resume is not None:
            raise MnistlabError("--dry-run with --resume: a dry run starts nothing to resume",
                                hint="dry-run the recipe itself, or resume without --dry-run")
        overrides.update({"epochs": 1, "train_subset": 1024, "validation": 512, "progress": False,
                          "evaluate_test": False})
        with tempfile.TemporaryDirectory(prefix="mnistlab-dry-run-") as scratch:
            result = _train(recipe, {**overrides, "out": scratch}, seeds, quiet)
        if not quiet:
            print("dry run: the run was written to a temporary folder, now removed; nothing kept")
        return result
    if resume is not None:
        return Run(engine.resume(resume, overrides, quiet=quiet))
    return _train(recipe, overrides, seeds, quiet)


def _train(recipe, overrides: dict, seeds, quiet: bool) -> Run | Runs:
    cfg = config.resolve(recipe, overrides)
    if seeds is not None:
        summary = engine.train_seeds(cfg, lists.seeds(seeds), quiet=quiet)
        return Runs(summary, [Run(RunDir(r).read_summary()) for r in summary["runs"]])
    return Run(engine.train(cfg, quiet=quiet))


def pretrain(recipe: str = "fast", *, dataset: str = "mnist", method: str = "contrastive", epochs: int = 5,
             batch_size: int = 256, lr: float = 2e-3, temperature: float = 0.2, seed: int = 0, out: str = "runs",
             quiet: bool = False, **settings) -> Run:
    """`mnistlab pretrain`: a model's features learned from the training images without labels (SimCLR)."""
    dataset = _dataset_name(dataset)  # a Dataset of one's own: its name, registered
    overrides = {"dataset": dataset, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "out": out,
                 "weight_decay": 0.0, "warmup": 0.1, **_settings(settings, "pretrain")}
    cfg = config.resolve(recipe, overrides)
    if not cfg.name:
        cfg.name = f"pretrain-{names.short(cfg.recipe or cfg.model)}-{names.short(cfg.dataset)}-s{cfg.seed}"
    return Run(pretraining.pretrain(cfg, method=method, temperature=temperature, quiet=quiet))


@_trusting
def evaluate(model, *, split: str = "test", dataset: str | None = None, tta: bool = False, out=None,
             pictures: bool = True, data_dir=None, not_digit: bool = False) -> Evaluation:
    """`mnistlab evaluate`: accuracy, top-k, per-class precision/recall/F1, confusion matrix, calibration
    and pictures of a run directory, checkpoint or ensemble file, measured as its run measured it; the
    share its not-a-digit score flags when the model has one (`not_digit=True` fits it if missing)."""
    dataset = _dataset_name(dataset)  # a Dataset of one's own: its name, registered
    return Evaluation(evaluation.evaluate(model, split=split, dataset=dataset, tta=tta, out=out, pictures=pictures,
                                            data_dir=data_dir, not_digit=not_digit))


@_trusting
def ensemble(models, *, method: str = "mean", select: bool = False, out, split: str = "test",
             data_dir=None, quiet: bool = False) -> Saved:
    """`mnistlab ensemble`: combine models (mean or vote), members chosen on validation with `select`,
    saved as one file that evaluate, predict and serve take; each member compared with the ensemble."""
    return Saved(ensembles.ensemble(models, method=method, select=select, out=out, split=split, data_dir=data_dir,
                                       quiet=quiet))


@_trusting
def attack(model, images=None, labels=None, *, method: str = "pgd", eps=(0.05, 0.1, 0.2, 0.3), norm: str = "linf",
           targeted: bool = False, target: int | None = None, split: str = "test", n: int = 1000,
           steps: int | None = None, restarts: int = 1, targets: int = 9, queries: int = 5000, checks: bool = True,
           check_n: int = 200, seed: int = 0, out=None, data_dir=None, step_size: float | None = None,
           batch_size: int = 500, quiet: bool = False) -> AttackResult | AttackReport:
    """Adversarial attacks. With `images` and `labels` (uint8, or float in [0,1]): those images, in memory,
    returning an `AttackResult` (robust accuracy per eps, adversarial images, masking checks). Without:
    `mnistlab attack` on the first `n` images of `split` for one model or a list of models, writing JSON,
    curves and galleries (several: into `out`, with one comparison picture)."""
    eps = lists.items(eps, "--eps", float, "numbers separated by commas, like 0.1,0.2,0.3") \
        if isinstance(eps, str) else eps
    if targeted and target is None:
        raise MnistlabError("targeted=True needs target=CLASS_INDEX (--targeted needs --target)")
    if images is not None:
        if labels is None:
            raise MnistlabError("attack(model, images, labels): the labels are missing")
        return attack_images(model, images, labels, method=method, eps=eps, norm=norm, target=target, steps=steps,
                             step_size=step_size, restarts=restarts, targets=targets, queries=queries, seed=seed,
                             batch_size=batch_size, checks=checks, check_n=check_n, quiet=quiet)
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    done = attack_reports.attack_models(models, out=out, method=method, norm=norm, eps=eps,
                                     target=target if (targeted or target is not None) else None, split=split, n=n,
                                     steps=steps, restarts=restarts, targets=targets, queries=queries, seed=seed,
                                     checks=checks, check_n=check_n, data_dir=data_dir, quiet=quiet)
    return AttackReport(done, done["docs"])


def audit(dataset: str = "mnist", *, split: str = "test", folds: int = 5, model: str = "audit", seed: int = 0,
          clean_seeds: int = 0, top: int = 40, out=None, data_dir=None, quiet: bool = False,
          recipe: str | None = None) -> Audit:
    """`mnistlab audit`: label issues, near-duplicates and outliers of a split, from out-of-fold scores
    (`model`: the recipe each fold trains; `recipe` is its older name). `.table`: the ranked issues."""
    dataset = _dataset_name(dataset)  # a Dataset of one's own: its name, registered
    summary, table = data_audit.run(dataset, split=split, folds=folds, recipe=recipe or model, seed=seed, out=out,
                                   clean_seeds=clean_seeds, top=top, data_dir=data_dir, quiet=quiet)
    return Audit(summary, table)


def check(model="fast", *, optimizer=None, loss=None, seeds="0-2", quick: bool = False, mechanics_only: bool = False,
          out=None, quiet: bool = False, **settings) -> Check:
    """`mnistlab check`: does an implementation work? Mechanics checks in seconds, then the model trained
    over `seeds` at a fixed budget beside references, and a verdict (`analysis/checks.py`). `model` is a
    zoo name, `file.py:Name` or an object; an `optimizer` or a `loss` of one's own is checked instead,
    against Adam and SGD or cross-entropy on the same model."""
    chosen = {"model": model, **{k: v for k, v in (("optimizer", optimizer), ("loss", loss)) if v is not None}}
    overrides = _settings({**chosen, **settings}, "check")
    role = "loss" if loss is not None else "optimizer" if optimizer is not None else "model"
    cfg = config.resolve(None, overrides)
    if "lr" not in overrides:  # an optimizer of one's own starts from its own default rate, not Adam's
        cfg.lr = checks.own_default_lr(cfg) or cfg.lr
    result = Check(checks.check(cfg, role=role, seeds=lists.seeds(seeds), quick=quick, learning=not mechanics_only,
                                   out=out, quiet=quiet))
    if out is not None:  # the verdict as a page beside check.json and the pictures
        result.record["page"] = str(result.save_page(Path(out) / "check.html"))
    return result


@_trusting
def map(model=None, *, dataset: str | None = None, method: str = "umap", features: str | None = None,  # noqa: A001
        split: str = "test", n: int | None = None, seed: int = 0, out=None, data_dir=None, quiet: bool = False) -> Map:
    """`mnistlab map`: a 2-D map (UMAP or t-SNE) of a split's pixels or a model's learned features."""
    dataset = _dataset_name(dataset)  # a Dataset of one's own: its name, registered
    return Map(maps.build_map(model, dataset=dataset, method=method, features=features, split=split, n=n,
                                  seed=seed, out=out, data_dir=data_dir, quiet=quiet))


@_trusting
def inspect(model, *, dataset: str | None = None, split: str = "test", images="0,1,2,3", units: int = 8,
            top: int = 8, out=None, data_dir=None) -> Inspection:
    """`mnistlab inspect`: first-layer filters, feature maps, the images that excite units most, saliency."""
    dataset = _dataset_name(dataset)  # a Dataset of one's own: its name, registered
    positions = lists.items(images, "--images", int, "image positions like 0,1,2")
    return Inspection(inspection.inspect_model(model, dataset=dataset, split=split, images=positions, units=units,
                                                top=top, out=out, data_dir=data_dir))


def transfer_curve(source: str | None = None, *, dataset: str = "mnist", labels="1,5,10,100,1000", seeds="0-2",
                   recipe: str = "fast", modes="scratch,probe,finetune", steps: int = 300,
                   lr_backbone: float | None = None, out: str = "transfer-curve", quiet: bool = False,
                   **settings) -> Curve:
    """`mnistlab transfer-curve`: test accuracy against labels per class, from scratch, probed, fine-tuned."""
    dataset = _dataset_name(dataset)  # a Dataset of one's own: its name, registered
    return Curve(transfer_study.transfer_curve(source or "", dataset,
                                          lists.items(labels, "--labels", int, "counts per class like 1,5,10"),
                                          lists.seeds(seeds), recipe=recipe, modes=lists.items(modes, "--modes"),
                                          steps=steps, lr_backbone=lr_backbone, overrides=_settings(settings),
                                          out=out, quiet=quiet))


def tune(recipe: str, space: str, *, trials: int = 20, study: str | None = None, storage: str | None = None,
         workers: int = 1, timeout: float | None = None, seed: int = 0, sampler: str = "tpe", pruner: str = "median",
         objectives="accuracy", out: str = "runs/tune", heartbeat: int = 60, baseline: bool = True,
         quiet: bool = False, overrides: dict | None = None, **settings) -> Study:
    """`mnistlab tune`: an Optuna search over `space` starting from `recipe`; every trial a run, the test set
    read once for the chosen trial. Settings (or `overrides`) are fixed for every trial."""
    return Study(search.tune(recipe, space, trials=trials, study=study, storage=storage, workers=workers,
                                timeout=timeout, seed=seed, sampler=sampler, pruner=pruner,
                                objectives=tuple(lists.items(objectives, "--objectives")), out=out,
                                overrides={**(overrides or {}), **_settings(settings, "tune")}, heartbeat=heartbeat,
                                baseline=baseline, quiet=quiet))


def sota(*, out: str = "sota-study", models="m3,m5,m7", seeds="0-4", protocols="paper,val",
         throughput_steps: int = 50, quiet: bool = False, **settings) -> SotaStudy:
    """`mnistlab sota`: An et al.'s M3/M5/M7 over seeds, two protocols, two-level ensembles; resumable."""
    plan = sota_study.Plan(models=lists.items(models, "--models"), seeds=lists.seeds(seeds),
                         protocols=lists.items(protocols, "--protocols"),
                         overrides={k: str(v) for k, v in _settings(settings, "sota").items()})
    return SotaStudy(sota_study.run_study(out, plan, quiet=quiet, throughput_steps=throughput_steps))


def models() -> Listing:
    """`mnistlab models`: the networks of the zoo (parameters at MNIST's shape, options) and the
    classical baselines; any `nn.Module` of your own goes wherever a name goes."""
    rows = registry.catalog() + [{"model": name, "params": "(fitted)", "description": f"{entry.summary} [options: "
                                  f"{', '.join(f'{k}={v!r}' for k, v in classical_options(name).items())}]"}
                                 for name, entry in CLASSICAL.items()]  # fitted: their size depends on the data
    return Listing({"title": "models", "header": ["model", "params", "description"], "rows": rows,
                    "note": "Your own: --model path/to/file.py:Name (Python: model=YourClass)."})


def recipes(*, show: str | None = None) -> Listing | RecipeText:
    """`mnistlab recipes`: the packaged recipes; `show` one's TOML, to copy and edit
    (`mnistlab recipes --show seed-cnn > my.toml`, then `mnistlab train --recipe my.toml`)."""
    if show is not None:
        return RecipeText({"name": show, "toml": config.recipe_path(show).read_text()})
    return Listing({"title": "recipes", "header": ["recipe", "model", "epochs", "about"],
                    "rows": config.recipe_catalog(),
                    "note": "A recipe is a TOML file: copy one (`mnistlab recipes --show NAME > my.toml`), edit it, "
                    "and train with --recipe my.toml."})


def trust(path, *, revoke: bool = False) -> Trusted:
    """`mnistlab trust`: approve the user code a run (a group of runs, a checkpoint) carries, so that it
    runs here without asking from now on (calling this is the consent; the CLI shows the code and asks
    first); `revoke=True` takes the approval back. A run's code/ copy must be the code it carries."""
    found = carried_code.carried_code(path)
    (carried_code.revoke if revoke else carried_code.approve)(found)
    return Trusted({"path": str(path), "code": [code_row(c) for c in found]})


def code_row(item: carried_code.CarriedCode) -> dict:
    """One carried piece of code as a result records it."""
    r = item.record
    return {"role": item.role, "ref": r["ref"], "kind": r["kind"], "path": r["path"], "sha256": r["sha256"],
            "lines": item.lines, "read": str(item.copy or item.files[0]), "files": [str(f) for f in item.files],
            "signed": item.signed}


@_trusting
def report(runs, *, out: str = "report", title: str = "mnistlab report") -> Report:
    """`mnistlab report`: one self-contained HTML page and a Markdown summary of runs or seed groups."""
    runs = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
    return Report(run_report.report(runs, out=out, title=title))


@_trusting
def export(model, *, format: str = "onnx", out=None, not_digit: bool = False) -> Saved:  # noqa: A002
    """`mnistlab export`: a model or mean ensemble as ONNX, its normalisation inside; `not_digit`
    adds the not-a-digit score as a second output (one network)."""
    path = onnx_export.export(model, format=format, out=out, not_digit=not_digit)
    return Saved({"model": str(model), "format": format, "file": str(path), "not_digit": bool(not_digit)})


@_trusting
def predict(images, *, model=None, save_preprocessed=None) -> list:
    """`mnistlab predict`: read digits in pictures (paths, bytes, PIL images or arrays)."""
    return prediction.predict(images, model=model, save_preprocessed=save_preprocessed)


@_trusting
def serve(model=None, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, backend: str = "auto",
          access_log: bool = False, **limits) -> None:
    """`mnistlab serve`: the draw-a-digit page and the HTTP API, until interrupted; `limits` are the
    fields of `mnistlab.serving.limits.Limits` (max_body, max_inflight, ...)."""
    from .serving import server  # FastAPI and uvicorn come with the `serve` extra

    unknown = sorted(set(limits) - {f for f in server.Limits.__dataclass_fields__})
    if unknown:
        raise MnistlabError(f"serve: unknown limit {unknown[0]!r}",
                            hint=f"the limits are {', '.join(server.Limits.__dataclass_fields__)}")
    server.serve(model, host=host, port=port, limits=server.Limits(**limits), workers=workers, backend=backend,
                    access_log=access_log)
