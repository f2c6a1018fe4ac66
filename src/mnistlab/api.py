"""The Python API: one function per CLI verb, of the verb's own name, flags and defaults. Each verb's
parameters are declared once, here: the signature gives the names, types and defaults, the docstring's
`Args:` the help (where a parameter is Python-only it says so), and the command line is built from
them (`mnistlab.cli`), whose handlers parse, call exactly these and print what they return.

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
from typing import Annotated, Literal

from . import attacks, data, lists, rundir, user_code
from .analysis import (
    attack_reports,
    checks,
    data_audit,
    distribution_shift,
    ensembles,
    evaluation,
    inspection,
    maps,
)
from .attacks import AttackResult, list_attacks, norms
from .data import Dataset
from .errors import MnistlabError
from .models import carried_code, classical, registry
from .models.summary import summary_of
from .reporting import run_report
from .result_base import Listing
from .results import (
    AttackReport,
    Audit,
    Check,
    Curve,
    Ensemble,
    Evaluation,
    Inspection,
    LrFind,
    Map,
    ModelSummary,
    RecipeText,
    Report,
    Run,
    Runs,
    Saved,
    Shift,
    SotaStudy,
    Study,
    Trusted,
)
from .rundir import RunDir
from .serving import onnx_export, prediction
from .studies import sota_study, transfer_study
from .studies.tuning import search
from .training import config, engine, lr_finder, pretraining


def _settings(settings: dict, where: str = "setting") -> dict:
    """Keyword settings checked as config keys (the nearest name suggested for an unknown one). Your
    own model, optimizer or loss may be an object (a class, a function, an nn.Module), and the dataset a
    `Dataset`: each gets the name the run records (user_code.adopt; Dataset.name); a variant's
    (`mnistlab.load("mnist", imbalance=...)`) becomes the base dataset and the variant's settings."""
    settings = dict(settings)
    for role in ("model", "optimizer", "loss"):
        if role in settings and not isinstance(settings[role], str):
            settings[role] = user_code.adopt(settings[role], role)
    chosen = settings.get("dataset")
    if isinstance(chosen, Dataset) and chosen.variant is not None:  # a run draws the variant after its holdout
        v = chosen.variant
        settings = {"imbalance": v.imbalance, "label_noise": v.label_noise, "labels_per_class": v.labels_per_class,
                    "variant_seed": v.seed, **settings, "dataset": chosen.base}
    elif isinstance(chosen, Dataset):
        settings["dataset"] = _dataset_name(chosen)
    for key, value in settings.items():
        config.coerce(key, value, source=where)
    return settings


def _dataset_name(dataset):
    """A `Dataset` of one's own, known to every verb in this process by its name; a name as it is."""
    if isinstance(dataset, Dataset):
        data.load(dataset)  # registers it
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

AttackMethod = Annotated[str, lists.OneOf(list_attacks)]  # the attack registry's names, read when asked
Norm = Annotated[str, lists.OneOf(norms)]


@_trusting
def train(recipe: str | None = None, *, seeds: str | None = None, resume: str | os.PathLike | None = None,
          dry_run: bool = False, quiet: bool = False, **settings) -> Run | Runs:
    """Train a model: a recipe, flags, several seeds, or resume a run.

    Train a model and evaluate it: validation each epoch, the test set once at the end. Writes a run
    directory (config, log, checkpoints, summary). Settings are the recipe keys (`epochs=3`, `model="m5"`,
    `model_args={"width": 32}`; on the command line a flag each, or --set KEY=VALUE). Returns the `Run`
    (or `Runs` over seeds).

    Args:
        recipe: a packaged recipe (`mnistlab recipes`) or a TOML file
        seeds: train one run per seed, e.g. 0-4 or 0,1,2 (Python: a list too), and summarise mean/std/min/max
        resume: continue an interrupted run from its last checkpoint (a run directory)
        dry_run: smoke run: 1 epoch on 1024 examples, 512 validation images, the test set left unread, nothing kept
        quiet: print nothing but errors

    Examples:
        mnistlab train --recipe seed-cnn
        mnistlab train --model m5 --dataset fashion-mnist --epochs 30 --augment an2020
        mnistlab train --recipe seed-mlp --seeds 0-4
        mnistlab train --recipe variants --imbalance exp:100 --loss logit_adjusted --seeds 0-2
        mnistlab train --resume runs/seed-cnn-mnist-s0
        torchrun --nproc_per_node 2 -m mnistlab train --recipe seed-mlp
    """
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


def lr_find(recipe: str | None = None, *, seeds: str = "0-2", start: float = 1e-7, end: float = 10.0,
            steps: int = 100, diverge: float = 4.0, quiet: bool = False, **settings) -> LrFind:
    """Find a learning rate: an exponential sweep, the loss against the rate, and a suggestion for --lr.

    From the model's initial weights, take STEPS steps of the recipe's training with the learning rate
    growing from START to END geometrically, follow the smoothed loss until it diverges, and suggest a
    rate by three rules (valley, steepest, minimum); the recommendation (steepest for a rate held through
    training, minimum for a one-cycle peak; the median over the seeds) is printed as the `mnistlab train
    ... --lr` command that uses it. Writes lr-find.json and
    lr-find.png (the curves, the suggestions marked) in OUT/NAME (default runs/lr-find-RECIPE-DATASET).
    Settings are the recipe keys, as for train (your own model or optimizer too).

    Args:
        recipe: a packaged recipe (`mnistlab recipes`) or a TOML file
        seeds: one sweep per seed (its initial weights and batches), e.g. 0-2 (Python: a list too); the spread
            of the suggestions over them is reported
        start: the first learning rate of the sweep
        end: the last learning rate of the sweep (it stops earlier where the loss diverges)
        steps: optimizer steps per sweep (at least 20)
        diverge: stop when the smoothed loss passes this many times its lowest
        quiet: print nothing but errors

    Examples:
        mnistlab lr-find --recipe seed-cnn
        mnistlab lr-find --recipe fast --seeds 0
        mnistlab lr-find --model mynet.py:Net --optimizer sgd --batch-size 64
    """
    cfg = config.resolve(recipe, _settings(settings, "lr-find"))
    return LrFind(lr_finder.lr_find(cfg, seeds=lists.seeds(seeds), start=start, end=end, steps=steps,
                                    diverge=diverge, quiet=quiet))


def pretrain(recipe: str = "fast", *, dataset: str = "mnist", method: Literal["contrastive"] = "contrastive",
             epochs: int = 5, batch_size: int = 256, lr: float = 2e-3, temperature: float = 0.2, seed: int = 0,
             out: str = "runs", quiet: bool = False, **settings) -> Run:
    """Learn a model's features from unlabelled images (contrastive, SimCLR).

    Train the recipe's model's feature extractor on the training images without their labels: two
    augmented views of each image, pulled together against the rest of the batch (NT-Xent). Writes a
    run directory to start other runs from (--init-from) and to probe with transfer-curve.

    Args:
        recipe: the model (and its options) to pretrain
        dataset: whose training images
        method: the pretraining method
        epochs: passes over the images
        batch_size: images per batch, each seen twice
        lr: Adam's peak learning rate, one-cycle
        temperature: NT-Xent temperature
        seed: seed
        out: parent directory of the run
        quiet: print nothing but errors

    Examples:
        mnistlab pretrain --recipe fast --dataset mnist --epochs 5
        mnistlab transfer-curve --source runs/pretrain-fast-mnist-s0 --dataset mnist
    """
    dataset = _dataset_name(dataset)  # a Dataset of one's own: its name, registered
    overrides = {"dataset": dataset, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "out": out,
                 "weight_decay": 0.0, "warmup": 0.1, **_settings(settings, "pretrain")}
    cfg = config.resolve(recipe, overrides)
    if not cfg.name:
        cfg.name = rundir.name_for(cfg, prefix="pretrain")
    return Run(pretraining.pretrain(cfg, method=method, temperature=temperature, quiet=quiet))


@_trusting
def evaluate(model: str, *, split: Literal["test", "val"] = "test", dataset: str | None = None, tta: bool = False,
             out: str | None = None, pictures: bool = True, data_dir: str | None = None,
             not_digit: bool = False) -> Evaluation:
    """Metrics, confusion matrix, calibration and pictures of a trained model.

    Evaluate a run directory, checkpoint or ensemble file (or a `Run`), measured as its run measured it:
    accuracy, top-k, cross-entropy, per-class precision/recall/F1, confusion matrix, calibration (ECE),
    the most confident mistakes, and pictures. Writes JSON and PNGs (default: RUN_DIR/eval/).

    Args:
        model: run directory, .safetensors checkpoint, or ensemble file
        split: which split
        dataset: evaluate on another dataset of the same shape and classes
        tta: test-time augmentation: average over 1-pixel shifts
        out: directory for the JSON and pictures
        pictures: draw the pictures (--no-pictures: only the numbers, no pictures)
        data_dir: directory to look for data in first
        not_digit: also report the share of the split the model's not-a-digit score flags, fitting that score
            first if the model has none (a few seconds)

    Examples:
        mnistlab evaluate runs/seed-cnn-mnist-s0
        mnistlab evaluate runs/seed-cnn-mnist-s0/best.safetensors --split val --no-pictures
    """
    dataset = _dataset_name(dataset)  # a Dataset of one's own: its name, registered
    return Evaluation(evaluation.evaluate(model, split=split, dataset=dataset, tta=tta, out=out, pictures=pictures,
                                          data_dir=data_dir, not_digit=not_digit))


@_trusting
def ensemble(models: list[str], *, method: Literal["mean", "vote"] = "mean", select: bool = False, out: str,
             split: Literal["test", "val"] = "test", data_dir: str | None = None, quiet: bool = False) -> Ensemble:
    """Combine trained models (mean or vote), save as one artifact, compare.

    Combine models by averaged probabilities or majority vote, save the ensemble as one file that
    evaluate, predict and serve take, and report each member next to it.

    Args:
        models: run directories, groups of seed runs (each run) or checkpoints
        method: how to combine
        select: choose members greedily on the validation split
        out: the ensemble file to write (.safetensors)
        split: split to compare on
        data_dir: directory to look for data in first
        quiet: no progress lines, only the results

    Examples:
        mnistlab ensemble runs/seed-mlp-mnist-seeds --out five.safetensors
    """
    return Ensemble(ensembles.ensemble(models, method=method, select=select, out=out, split=split, data_dir=data_dir,
                                       quiet=quiet))


@_trusting
def attack(model: list[str], images=None, labels=None, *, method: AttackMethod = "pgd",
           eps: str | list[float] = (0.05, 0.1, 0.2, 0.3), norm: Norm = "linf", targeted: bool = False,
           target: int | None = None, split: Literal["test", "val"] = "test", n: int = 1000, steps: int | None = None,
           restarts: int = 1, targets: int = 9, queries: int = 5000, checks: bool = True, check_n: int = 200,
           seed: int = 0, out: str | None = None, data_dir: str | None = None, step_size: float | None = None,
           batch_size: int = 500, quiet: bool = False) -> AttackResult | AttackReport:
    """Adversarial robustness: FGSM, PGD, APGD, Square, AutoAttack-style; robust accuracy per epsilon.

    Attack the first N images of a split: robust accuracy per epsilon, with checks against gradient
    masking, a curve and a gallery (JSON and PNGs beside the model: RUN_DIR/eval/). Several models: one
    picture compares them (--out needed). From Python, `images` and `labels` attack those images in memory
    and return an `AttackResult` (robust accuracy per eps, adversarial images, checks).

    Args:
        model: run directories, checkpoints or mean ensembles (Python: one, or a list)
        images: Python only: images to attack in memory (uint8, or float in [0,1])
        labels: Python only: their labels
        method: the attack (the registry: `mnistlab.attacks.ATTACKS`)
        eps: budgets in pixel units of the [0,1] image, e.g. 0.1,0.2,0.3
        norm: the threat model
        targeted: push every image toward --target
        target: the target class index (with --targeted)
        split: which split's images
        n: how many images (the first N)
        steps: iterations (default: the attack's own, e.g. PGD 40, APGD 100)
        restarts: restarts on the images still standing
        targets: target classes of APGD-T
        queries: queries of Square
        checks: run the checks against gradient masking (--no-checks: skip the checks against gradient masking)
        check_n: images for the costlier checks
        seed: seeds random starts and Square
        out: directory for the JSON and pictures
        data_dir: directory to look for data in first
        step_size: Python only: PGD's step (default 2.5*eps/steps)
        batch_size: Python only: images attacked at once
        quiet: no progress, only the results

    Examples:
        mnistlab attack runs/seed-cnn-mnist-s0 --method pgd --eps 0.05,0.1,0.2,0.3
        mnistlab attack runs/adv-pgd-mnist-s0 --method autoattack --eps 0.3
        mnistlab attack runs/a runs/b --method fgsm --out cmp/
    """
    eps = lists.items(eps, "--eps", float, "numbers separated by commas, like 0.1,0.2,0.3") \
        if isinstance(eps, str) else eps
    if targeted and target is None:
        raise MnistlabError("targeted=True needs target=CLASS_INDEX (--targeted needs --target)")
    if images is not None:
        if labels is None:
            raise MnistlabError("attack(model, images, labels): the labels are missing")
        return attacks.attack(model, images, labels, method=method, eps=eps, norm=norm, target=target, steps=steps,
                             step_size=step_size, restarts=restarts, targets=targets, queries=queries, seed=seed,
                             batch_size=batch_size, checks=checks, check_n=check_n, quiet=quiet)
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    done = attack_reports.attack_models(models, out=out, method=method, norm=norm, eps=eps,
                                        target=target if (targeted or target is not None) else None, split=split, n=n,
                                        steps=steps, restarts=restarts, targets=targets, queries=queries, seed=seed,
                                        checks=checks, check_n=check_n, data_dir=data_dir, quiet=quiet)
    return AttackReport(done, done["docs"])


@_trusting
def shift(model: str, *, sets: str | None = None, n: int | None = None, split: Literal["test", "val"] = "test",
          out: str | None = None, pictures: bool = True, data_dir: str | None = None, quiet: bool = False) -> Shift:
    """Beyond MNIST's test set: accuracy on corrupted, turned, restroked and other-style digits.

    Measure a model on MNIST-C-style corruptions (the 15 of Mu & Gilmer 2019), variants (turned 30 degrees,
    thinned, thickened, inverted), sweeps (rotation, scale, translation, shear, stroke thickness) and
    digits of other styles (UCI, drawn, printed in fonts never trained on; EMNIST and QMNIST where
    installed), each style with and without MNIST-form preprocessing: accuracy, drop from clean, the
    corruptions' mean and worst. The sets are made once and cached. Writes shift-SPLIT.json, curves, a
    gallery of each set's mistakes and a page (default: RUN_DIR/shift/).

    Args:
        model: run directory, checkpoint or ensemble file (single, ensemble, classical or your own), or `default`: the packaged model
        sets: comma-separated groups (clean, corruptions, variants, sweeps, styles), sweeps (rotation, scale,
            translation, shear, thickness), styles (uci, drawn, printed, emnist-digits, qmnist-extra) or sets
            (fog, rotate-30, uci-raw, ...) (default: all)
        n: measure the first N images of each set (default: all; sweeps take at most 2,000 per point)
        split: test: MNIST's test images; val: the images the model's run held out, with the selection fonts
            and seeds (what a recipe is chosen on)
        out: directory for the JSON, pictures and page
        pictures: draw the curves, galleries and page (--no-pictures: only the numbers)
        data_dir: directory to look for data in first
        quiet: print nothing as it goes; the result says it all

    Examples:
        mnistlab shift runs/seed-cnn-mnist-s0
        mnistlab shift default --sets corruptions,variants --n 2000
        mnistlab shift runs/robust-mnist-s0 --split val
    """
    return Shift(distribution_shift.shift(model, sets=sets, n=n, split=split, out=out, pictures=pictures,
                                      data_dir=data_dir, quiet=quiet))


def audit(dataset: str = "mnist", *, split: Literal["train", "test", "all"] | None = None, folds: int = 5,
          model: str = "audit", seed: int = 0, clean_seeds: int = 0, top: int = 40, out: str | None = None,
          data_dir: str | None = None, quiet: bool = False, recipe: str | None = None) -> Audit:
    """Find mislabeled, ambiguous, near-duplicate and out-of-place images (out-of-fold predictions + cleanlab).

    Score every image with a model that never trained on it (K-fold, mnistlab's engine), then let
    cleanlab's confident learning and Datalab flag label issues, outliers and near-duplicates. Writes
    issues.csv/json, ranking.csv, summary.json and galleries; the out-of-fold scores are cached in --out.
    `.table` holds the ranked issues (pandas). On a variant with label noise (a run's training examples,
    or a dataset named with its variant), it also scores itself on the planted flips: the precision and
    recall of what it flagged, and of its ranking.

    Args:
        dataset: dataset name (`mnistlab data list`), a variant (mnist[label_noise=sym:0.2]), or a run directory:
            its training examples as the run drew them (variant, labels), audited without the test split
        split: which images (default: test; train for a variant or a run)
        folds: cross-validation folds
        model: the recipe each fold trains (audit: the packaged model's recipe, 99.41% out-of-fold on MNIST
            test; fast: 99.15% in an eighth of the time)
        seed: seeds the folds and the models
        clean_seeds: also train the recipe with the flagged training images kept, removed and relabelled, over
            this many seeds, and compare validation accuracy (0: off)
        top: label issues in the gallery
        out: output directory (default: audit-DATASET-SPLIT, or RUN/audit)
        data_dir: directory to look for data in first
        quiet: print nothing but the result
        recipe: Python only: the older name of `model`

    Examples:
        mnistlab audit mnist --split test
        mnistlab audit mnist --split all --folds 5 --clean-seeds 3 --out audit-mnist/
        mnistlab audit runs/noisy --model fast
    """
    dataset = _dataset_name(dataset)  # a Dataset of one's own: its name, registered
    summary, table = data_audit.run(dataset, split=split, folds=folds, recipe=recipe or model, seed=seed, out=out,
                                    clean_seeds=clean_seeds, top=top, data_dir=data_dir, quiet=quiet)
    return Audit(summary, table)


def check(model: str = "fast", *, optimizer: str | None = None, loss: str | None = None, seeds: str = "0-2",
          quick: bool = False, mechanics_only: bool = False, out: str | None = None, quiet: bool = False,
          **settings) -> Check:
    """Does my implementation work? A verdict on a model, optimizer or loss, against the zoo.

    Mechanics checks in seconds (output, softmax, initial loss, gradients, buffers, dead units, eval
    determinism, nonlinearity, batch independence, the optimizer's mechanics, overfit one batch), then
    the model trained over seeds at a fixed budget on the validation split beside references (logistic
    regression, the MLP, the fast CNN; or Adam and SGD for your optimizer, cross-entropy for your loss),
    each at the best of the same learning-rate grid, and a verdict. The exit status is 0 for "works".

    Args:
        model: a zoo name (`mnistlab models`) or your own: file.py:Name or package.module:Name (Python: a class,
            a function or an nn.Module)
        optimizer: your optimizer (file.py:Name), checked against Adam and SGD on MODEL
        loss: your loss (file.py:name), checked against cross-entropy on MODEL
        seeds: seeds of the learning part
        quick: a smaller budget (1 epoch of 5,000 images)
        mechanics_only: the mechanics checks alone (seconds)
        out: write check.json (and check.html, the pictures) here
        quiet: print nothing as the checks run; the result says it all

    Examples:
        mnistlab check mynet.py:Net
        mnistlab check mlp --optimizer opt.py:Lion
        mnistlab check mynet.py:Net --mechanics-only
    """
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
def map(model: str | None = None, *, dataset: str | None = None,  # noqa: A001
        method: Literal["umap", "tsne"] = "umap", features: Literal["pixels", "penultimate"] | None = None,
        split: Literal["test", "train"] = "test", n: int | None = None, seed: int = 0, out: str | None = None,
        data_dir: str | None = None, quiet: bool = False) -> Map:
    """A 2-D map (UMAP or t-SNE) of a split's raw pixels or of a model's learned features.

    Embed a dataset split in 2-D with umap-learn or openTSNE (the `maps` extra), seeded: the raw pixels,
    or with a run the features its classifier reads (the penultimate layer), the run's mistakes marked.
    Writes map.png, a self-contained map.html (hover or tap a point to see the image, label and
    prediction; toggle classes), coords.npy/.csv and map.json (default: RUN_DIR/maps/METHOD-FEATURES-SPLIT/,
    or maps/ without a run).

    Args:
        model: run directory or checkpoint (optional: without it, the dataset's pixels)
        dataset: dataset (default: the model's, or mnist)
        method: the embedding
        features: what is embedded (default: penultimate with a model, else pixels)
        split: which split
        n: map N images drawn with --seed (default: the whole split)
        seed: seeds the draw and the embedding
        out: output directory
        data_dir: directory to look for data in first
        quiet: no progress output (the command then prints the page's path alone)

    Examples:
        mnistlab map --dataset mnist
        mnistlab map runs/seed-cnn-mnist-s0 --method tsne --n 2000
    """
    dataset = _dataset_name(dataset)  # a Dataset of one's own: its name, registered
    return Map(maps.build_map(model, dataset=dataset, method=method, features=features, split=split, n=n,
                              seed=seed, out=out, data_dir=data_dir, quiet=quiet))


@_trusting
def inspect(model: str, *, dataset: str | None = None, split: Literal["test", "train"] = "test",
            images: str = "0,1,2,3", units: int = 8, top: int = 8, out: str | None = None,
            data_dir: str | None = None) -> Inspection:
    """What a network learned: first-layer filters, feature maps, top images per unit, saliency.

    Draw a trained model's first-layer filters (or a linear layer's templates), the feature maps of each
    convolution for chosen images, the images that most excite the penultimate units of highest variance,
    and saliency maps. Writes PNGs and inspect.json (default: RUN_DIR/inspect/); `mnistlab report RUN`
    shows them.

    Args:
        model: run directory or checkpoint
        dataset: dataset to draw images from (default: the model's)
        split: which split's images
        images: image positions for feature maps and saliency
        units: penultimate units to show
        top: images per unit
        out: output directory (default: RUN_DIR/inspect)
        data_dir: directory to look for data in first

    Examples:
        mnistlab inspect runs/seed-cnn-mnist-s0 --images 0,7,42
    """
    dataset = _dataset_name(dataset)  # a Dataset of one's own: its name, registered
    positions = lists.items(images, "--images", int, "image positions like 0,1,2")
    return Inspection(inspection.inspect_model(model, dataset=dataset, split=split, images=positions, units=units,
                                               top=top, out=out, data_dir=data_dir))


def transfer_curve(source: str | None = None, *, dataset: str = "mnist", labels: str = "1,5,10,100,1000",
                   seeds: str = "0-2", recipe: str = "fast", modes: str = "scratch,probe,finetune", steps: int = 300,
                   lr_backbone: float | None = None, out: str = "transfer-curve", quiet: bool = False,
                   **settings) -> Curve:
    """Test accuracy vs labels per class: from scratch, linear probe, fine-tune from a source run.

    At each label budget and seed, train the recipe three ways on the same labelled images (from
    scratch; the source's features frozen under a new head; the whole model fine-tuned under a new head)
    and plot test accuracy against labels per class, mean +- std over seeds. Fixed settings, no selection
    on the test set. Run it again to continue an interrupted curve.

    Args:
        source: run directory or checkpoint whose features start the probe and fine-tune
        dataset: the dataset to learn from few labels
        labels: labelled images per class
        seeds: seeds: each draws its own labelled images
        recipe: the recipe of every run
        modes: some of scratch, probe, finetune
        steps: optimizer steps per run, at least one epoch
        lr_backbone: fine-tune: the feature extractor's learning rate (default: the recipe's lr / 10)
        out: output directory
        quiet: print nothing but errors

    Examples:
        mnistlab train --recipe fast --dataset fashion-mnist --name fashion
        mnistlab transfer-curve --source runs/fashion --dataset mnist --labels 1,5,10,100,1000 --seeds 0-2
    """
    dataset = _dataset_name(dataset)  # a Dataset of one's own: its name, registered
    return Curve(transfer_study.transfer_curve(source or "", dataset,
                                               lists.items(labels, "--labels", int, "counts per class like 1,5,10"),
                                               lists.seeds(seeds), recipe=recipe, modes=lists.items(modes, "--modes"),
                                               steps=steps, lr_backbone=lr_backbone, overrides=_settings(settings),
                                               out=out, quiet=quiet))


def tune(recipe: str, space: str, *, trials: int = 20, study: str | None = None, storage: str | None = None,
         workers: int = 1, timeout: float | None = None, seed: int = 0,
         sampler: Literal["tpe", "random", "cmaes"] = "tpe", pruner: Literal["median", "asha", "none"] = "median",
         objectives: str = "accuracy", out: str = "runs/tune", heartbeat: int = 60, baseline: bool = True,
         quiet: bool = False, overrides: dict | None = None, **settings) -> Study:
    """Hyperparameter search over a recipe (Optuna): pruning, workers, resume.

    Search a recipe's settings over a TOML space with Optuna. Each trial is a run directory scored on
    the validation split (the test set is not read); at the end the chosen trial is evaluated on the test
    set once, written as a recipe (best.toml), and shown in a study report (study.html). Run the same
    command again to continue the study; point several processes or machines at one --storage to share it.
    Settings (--set) are fixed for every trial.

    Args:
        recipe: the recipe every trial starts from (`mnistlab recipes`, or a .toml file)
        space: a packaged search space (`--list-spaces`) or a TOML file
        trials: finished (complete or pruned) trials the study should reach, counting earlier sessions
        study: study name (default: RECIPE-DATASET-SPACE)
        storage: Optuna storage URL shared by the workers (default: sqlite:///OUT/STUDY/study.db)
        workers: processes on this machine, each taking trials (threads per trial default to the cores divided
            among them)
        timeout: stop starting trials after this many seconds
        seed: the sampler's seed (trials train with the recipe's seed)
        sampler: the Optuna sampler
        pruner: on each epoch's validation accuracy
        objectives: accuracy, or accuracy,time for the Pareto front of validation accuracy vs training seconds
        out: parent directory of study directories
        heartbeat: seconds between a running trial's heartbeats; a trial silent for twice this is taken as dead
            and retried
        baseline: start with the recipe's own values as trial 0 (--no-baseline: do not start with the recipe's
            own values as trial 0)
        quiet: print nothing but errors
        overrides: Python only: settings fixed for every trial, as a dict

    Examples:
        mnistlab tune --recipe fast --space fast --trials 40 --workers 2
        mnistlab tune --recipe fast --space fast-pareto --objectives accuracy,time --trials 30
        mnistlab tune --recipe seed-mlp --space my-space.toml --storage postgresql://user@db/optuna --study mlp-1
    """
    return Study(search.tune(recipe, space, trials=trials, study=study, storage=storage, workers=workers,
                             timeout=timeout, seed=seed, sampler=sampler, pruner=pruner,
                             objectives=tuple(lists.items(objectives, "--objectives")), out=out,
                             overrides={**(overrides or {}), **_settings(settings, "tune")}, heartbeat=heartbeat,
                             baseline=baseline, quiet=quiet))


def sota(*, out: str = "sota-study", models: str = "m3,m5,m7", seeds: str = "0-4", protocols: str = "paper,val",
         throughput_steps: int = 50, quiet: bool = False, **settings) -> SotaStudy:
    """An et al.'s M3/M5/M7 over seeds, two protocols, two-level ensembles chosen on validation; resumable.

    The state-of-the-art study: train every (protocol, model, seed) run that is missing (resuming
    interrupted ones), then write study.json, table.md and report.md. Protocols: paper (all 60,000 train,
    last-epoch weights, no selection) and val (5,000 held out; best-on-validation epochs; ensemble members
    chosen greedily on validation). On a GPU every step runs as one CUDA graph with bf16 and channels-last.

    Args:
        out: the study directory; rerun with it to resume
        models: comma-separated zoo models
        seeds: seeds of every model, e.g. 0-4 or 0,2
        protocols: paper, val or both
        throughput_steps: steps per timed epoch of the eager-vs-graph throughput measurement; 0 skips it
        quiet: print nothing but errors

    Examples:
        mnistlab sota --out sota-study
        mnistlab sota --out smoke --models m5 --seeds 0-1 --set epochs=2 --set train_subset=1000 --throughput-steps 0
    """
    plan = sota_study.Plan(models=lists.items(models, "--models"), seeds=lists.seeds(seeds),
                           protocols=lists.items(protocols, "--protocols"),
                           overrides={k: str(v) for k, v in _settings(settings, "sota").items()})
    return SotaStudy(sota_study.run_study(out, plan, quiet=quiet, throughput_steps=throughput_steps))


def models(*, summary: str | None = None, dataset: str = "mnist") -> Listing | ModelSummary:
    """The model zoo: names, parameter counts, options; or one model's summary.

    The networks of the zoo (parameters at MNIST's shape, options) and the classical baselines; any
    `nn.Module` of your own (a Keras 3 model too) goes wherever a name goes. With --summary, one model's
    layers, output shapes, parameters and multiply-adds per image, as Keras' model.summary() and
    torchinfo print them.

    Args:
        summary: the summary of this model: a zoo name, your own (file.py:Name), a run directory or a checkpoint
        dataset: with --summary: the dataset whose images the model takes (a run's own otherwise)

    Examples:
        mnistlab models
        mnistlab models --summary keras-cnn
        mnistlab models --summary tutorial.py:network
        mnistlab models --summary runs/seed-cnn-mnist-s0
    """
    if summary is not None:
        return ModelSummary(summary_of(summary, _dataset_name(dataset)))
    rows = registry.catalog() + [{"model": name, "params": "(fitted)", "description": f"{entry.summary} [options: "
                                  f"{', '.join(f'{k}={v!r}' for k, v in classical.options(name).items())}]"}
                                 for name, entry in classical.CLASSICAL.items()]  # fitted: their size depends on the data
    return Listing({"title": "models", "header": ["model", "params", "description"], "rows": rows,
                    "note": "Your own: --model path/to/file.py:Name (Python: model=YourClass)."})


def summary(model, *, dataset: str | None = None) -> ModelSummary:
    """A model's summary: layers, output shapes, parameters, multiply-adds per image (Python; on the
    command line `mnistlab models --summary MODEL`).

    Args:
        model: a zoo name, your own (file.py:Name, a class, a function, an nn.Module or a Keras model), a run
            directory, a checkpoint or a `Run`
        dataset: the dataset whose images the model takes (default: MNIST's; a run's own for a run)

    Examples:
        mnistlab.summary("keras-cnn")
        mnistlab.summary(network)          # a Keras model built in a notebook
    """
    return ModelSummary(summary_of(model, _dataset_name(dataset)))


def recipes(*, show: str | None = None) -> Listing | RecipeText:
    """The packaged training recipes.

    Args:
        show: print a recipe's TOML alone, to copy and edit (`mnistlab recipes --show seed-cnn > my.toml`,
            then `mnistlab train --recipe my.toml`)
    """
    if show is not None:
        return RecipeText({"name": show, "toml": config.recipe_path(show).read_text()})
    return Listing({"title": "recipes", "header": ["recipe", "model", "epochs", "about"],
                    "rows": config.recipe_catalog(),
                    "note": "A recipe is a TOML file: copy one (`mnistlab recipes --show NAME > my.toml`), edit it, "
                    "and train with --recipe my.toml."})


def trust(path: str, *, revoke: bool = False) -> Trusted:
    """Show the code of your own a run from elsewhere carries, and approve it.

    A run's model, optimizer or loss of the user's own runs without asking only where you recorded it
    (train signs what it records) or approved it here. This shows the code a run, a group of runs or a
    checkpoint carries (what would run: the copy in its code/ folder), asks, and signs it with your key
    (in your config folder: $MNISTLAB_CONFIG_DIR, else ~/.config/mnistlab/trust). From Python, calling it
    is the consent.

    Args:
        path: a run directory, a group of runs, a checkpoint or an ensemble file
        revoke: take an approval back: the code asks again

    Examples:
        mnistlab trust runs/from-a-colleague
        mnistlab trust runs/from-a-colleague --yes
        mnistlab trust runs/from-a-colleague --revoke
    """
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
def report(runs: list[str], *, out: str = "report", title: str = "mnistlab report") -> Report:
    """A self-contained HTML page and a Markdown summary of runs.

    One page of runs or seed groups (the first named is the headline, the others compared with it): their
    figures over seeds, curves, confusion matrices, mistakes, attacks, maps and what they learned.

    Args:
        runs: run directories or seed-group directories (Python: `Run`/`Runs` too)
        out: output directory
        title: page title
    """
    runs = [runs] if isinstance(runs, (str, os.PathLike)) else list(runs)
    return Report(run_report.report(runs, out=out, title=title))


@_trusting
def export(model: str, *, format: Literal["onnx"] = "onnx", out: str | None = None,  # noqa: A002
           not_digit: bool = False) -> Saved:
    """Export a model or mean ensemble to ONNX.

    The graph takes float32 (N,C,H,W) in [0,1] and returns probabilities; the normalisation (and an
    ensemble's averaging) is inside.

    Args:
        model: run directory, checkpoint or ensemble file
        format: output format
        out: output file (default: NAME.onnx here)
        not_digit: a second output, not_digit_score (above 0.5: not a digit); the file grows by the reference
            features (47 MB for the packaged model)
    """
    path = onnx_export.export(model, format=format, out=out, not_digit=not_digit)
    return Saved({"model": str(model), "format": format, "file": str(path), "not_digit": bool(not_digit)})


@_trusting
def predict(images: list[str], *, model: str | None = None, save_preprocessed: str | None = None) -> list:
    """Read digits in your own images (PNG, JPEG, BMP, GIF, WebP).

    Bring each image into MNIST's form (grayscale, light on dark, ink cropped, longer side 20 px, centre
    of mass at the centre of 28x28) and classify it. Flags pictures that are probably not a single digit
    (see `mnistlab.serving.prediction`).

    Args:
        images: image files (Python: paths, bytes, PIL images or arrays)
        model: run directory, checkpoint or ensemble file (default: the packaged model)
        save_preprocessed: write the 28x28 images the model saw to this folder
    """
    return prediction.predict(images, model=model, save_preprocessed=save_preprocessed)


@_trusting
def serve(model: str | None = None, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          backend: Literal["auto", "pytorch"] = "auto", access_log: bool = False, **limits) -> None:
    """The draw-a-digit web page and HTTP API.

    Serve the draw-a-digit page at / and the API at /api/predict, /api/health, /api/model (OpenAPI at
    /docs), until interrupted. Every cost a request can cause is bounded by the limits (the fields of
    `mnistlab.serving.limits.Limits`: max_body, max_inflight, ...).

    Args:
        model: run directory, checkpoint or ensemble file (default: the packaged model)
        host: address to listen on
        port: port
        workers: server processes sharing the port, each with its own model (one per CPU core holds the most
            requests; the limits apply per worker)
        backend: auto: the model in ONNX Runtime when installed (about 5x faster per image), else PyTorch
        access_log: log a line per request (off: it costs ~5% of a prediction's time at classroom rates)
    """
    from .serving import server  # FastAPI and uvicorn come with the `serve` extra

    unknown = sorted(set(limits) - {f for f in server.Limits.__dataclass_fields__})
    if unknown:
        raise MnistlabError(f"serve: unknown limit {unknown[0]!r}",
                            hint=f"the limits are {', '.join(server.Limits.__dataclass_fields__)}")
    server.serve(model, host=host, port=port, limits=server.Limits(**limits), workers=workers, backend=backend,
                 access_log=access_log)
