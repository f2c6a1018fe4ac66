"""The analysis verbs: evaluate, ensemble, attack, audit, check, inspect, map. Each parser sits beside its
handler, and each handler calls the library function of the verb's name (`mnistlab.evaluate`, ...)
and prints what it returned."""

from __future__ import annotations

from pathlib import Path

from .. import api
from ..analysis import data_audit
from ..tables import print_table
from ..training import config
from .common import add_set_flag, add_trust_flag


def add_evaluate(verbs) -> None:
    p = verbs.add_parser("evaluate", help="metrics, confusion matrix, calibration and pictures of a trained model",
                         description="Evaluate a run directory, checkpoint or ensemble file: accuracy, top-k, "
                         "cross-entropy, per-class precision/recall/F1, confusion matrix, calibration (ECE), "
                         "and pictures. Writes JSON and PNGs (default: RUN_DIR/eval/).")
    p.add_argument("model", help="run directory, .safetensors checkpoint, or ensemble file")
    p.add_argument("--split", default="test", choices=["test", "val"], help="which split (default: test)")
    p.add_argument("--dataset", help="evaluate on another dataset of the same shape and classes")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average over 1-pixel shifts")
    p.add_argument("--out", help="directory for the JSON and pictures")
    p.add_argument("--no-pictures", dest="pictures", action="store_false", help="only the numbers")
    p.add_argument("--not-digit", action="store_true", help="also report the share of the split the model's "
                   "not-a-digit score flags, fitting that score first if the model has none (a few seconds)")
    p.add_argument("--data-dir", help="directory to look for data in first")
    add_trust_flag(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    result = api.evaluate(args.model, split=args.split, dataset=args.dataset, tta=args.tta, out=args.out,
                          pictures=args.pictures, data_dir=args.data_dir, not_digit=args.not_digit,
                          trust_code=args.trust_code)
    print(result)
    return 0


def add_ensemble(verbs) -> None:
    p = verbs.add_parser("ensemble", help="combine trained models (mean or vote), save as one artifact, compare",
                         description="Combine models by averaged probabilities or majority vote, save the ensemble "
                         "as one file that evaluate/predict/serve accept, and report each member next to it.")
    p.add_argument("models", nargs="+", help="run directories, groups of seed runs (each run) or checkpoints")
    p.add_argument("--method", default="mean", choices=["mean", "vote"], help="how to combine (default: mean)")
    p.add_argument("--select", action="store_true", help="choose members greedily on the validation split")
    p.add_argument("--out", required=True, help="the ensemble file to write (.safetensors)")
    p.add_argument("--split", default="test", choices=["test", "val"], help="split to compare on (default: test)")
    p.add_argument("--data-dir", help="directory to look for data in first")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the results")
    add_trust_flag(p)
    p.set_defaults(func=cmd_ensemble)


def cmd_ensemble(args) -> int:
    r = api.ensemble(args.models, method=args.method, select=args.select, out=args.out, split=args.split,
                     data_dir=args.data_dir, quiet=args.quiet, trust_code=args.trust_code)
    if r["selection"]:
        print("greedy selection on the validation split:")
        for path, acc in r["selection"]:
            print(f"  + {path}  (val accuracy {acc:.2%})")
    print(f"wrote {r['saved']} ({len(r['members'])} members, method {r['method']})")
    e = r["evaluation"]
    rows = [[str(p), f"{a:.2%}", str(round((1 - a) * e["n"]))] for p, a in zip(r["members"], r["member_accuracy"])]
    rows.append([f"ensemble ({r['method']})", f"{e['accuracy']:.2%}", str(e["errors"])])
    print()
    print_table(rows, ["model", f"{args.split} accuracy", "errors"])
    return 0


def add_attack(verbs) -> None:
    p = verbs.add_parser("attack", help="adversarial attacks (FGSM, PGD, APGD, Square, AutoAttack-style): robust "
                         "accuracy per epsilon, checks against gradient masking, curve, gallery",
                         description="Attack a run directory, checkpoint or mean ensemble on a split. Epsilon is in "
                         "pixel units of the [0,1] image whatever the model's normalisation; adversarial images "
                         "stay in [0,1]. `--method autoattack` is the strongest: APGD-CE, APGD-T and Square, an "
                         "example counting as robust only if all fail. Writes JSON and PNGs "
                         "(default: RUN_DIR/eval/).")
    p.add_argument("model", nargs="+", help="run directory, .safetensors checkpoint, or mean ensemble file; "
                   "several: each attacked alike, their curves compared in one picture in --out")
    p.add_argument("--method", default="pgd", choices=["fgsm", "pgd", "apgd-ce", "apgd-t", "square", "autoattack"],
                   help="the attack (default: pgd)")
    p.add_argument("--eps", default="0.05,0.1,0.2,0.3", help="epsilons, comma-separated (default: 0.05,0.1,0.2,0.3)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"], help="the ball (default: linf; l2 with pgd)")
    p.add_argument("--targeted", action="store_true", help="push every image toward --target")
    p.add_argument("--target", type=int, help="the class index a targeted attack aims for")
    p.add_argument("--split", default="test", choices=["test", "val"], help="which split (default: test)")
    p.add_argument("--n", type=int, default=1000, help="attack the first N images of the split (default: 1000)")
    p.add_argument("--steps", type=int, help="iterations (default: PGD 40, APGD 100)")
    p.add_argument("--restarts", type=int, default=1, help="random restarts on the examples still standing (default: 1)")
    p.add_argument("--targets", type=int, default=9, help="APGD-T: how many of the likeliest wrong classes (default: 9)")
    p.add_argument("--queries", type=int, default=5000, help="Square: queries per example (default: 5000)")
    p.add_argument("--no-checks", dest="checks", action="store_false", help="skip the checks against gradient masking")
    p.add_argument("--check-n", type=int, default=200, help="images for the costlier checks (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="seeds random starts and Square (default: 0)")
    p.add_argument("--out", help="directory for the JSON and pictures")
    p.add_argument("--data-dir", help="directory to look for data in first")
    p.add_argument("--quiet", action="store_true", help="no progress, only the results")
    add_trust_flag(p)
    p.set_defaults(func=cmd_attack)


def cmd_attack(args) -> int:
    r = api.attack(args.model, method=args.method, eps=args.eps, norm=args.norm, targeted=args.targeted,
                   target=args.target, split=args.split, n=args.n, steps=args.steps, restarts=args.restarts,
                   targets=args.targets, queries=args.queries, checks=args.checks, check_n=args.check_n, seed=args.seed,
                   out=args.out, data_dir=args.data_dir, quiet=args.quiet, trust_code=args.trust_code)
    print(r)
    return 0


def add_audit(verbs) -> None:
    p = verbs.add_parser("audit", help="find mislabeled, ambiguous, near-duplicate and out-of-place images "
                         "(out-of-fold predictions + cleanlab)",
                         description="Score every image with a model that never trained on it (K-fold, mnistlab's "
                         "engine), then let cleanlab's confident learning and Datalab flag label issues, "
                         "outliers and near-duplicates. Writes issues.csv/json, summary.json and a gallery; the "
                         "out-of-fold scores are cached in --out.")
    p.add_argument("dataset", help="dataset name (`mnistlab data list`)")
    p.add_argument("--split", default="test", choices=["train", "test", "all"], help="which images (default: test)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
    p.add_argument("--model", default="audit", help="the recipe each fold trains (default: audit, the packaged "
                   "model's recipe: 99.41%% out-of-fold on MNIST test; fast: 99.15%% in an eighth of the time)")
    p.add_argument("--seed", type=int, default=0, help="seeds the folds and the models (default: 0)")
    p.add_argument("--clean-seeds", type=int, default=0,
                   help="also train the recipe with the flagged training images kept, removed and relabelled, "
                   "over this many seeds, and compare validation accuracy (default: 0, off)")
    p.add_argument("--top", type=int, default=40, help="label issues in the gallery (default: 40)")
    p.add_argument("--out", help="output directory (default: audit-DATASET-SPLIT)")
    p.add_argument("--data-dir", help="directory to look for data in first")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args) -> int:
    r = api.audit(args.dataset, split=args.split, folds=args.folds, model=args.model, seed=args.seed,
                  clean_seeds=args.clean_seeds, top=args.top, out=args.out, data_dir=args.data_dir)
    print(data_audit.format_summary(r.record))
    print(f"\nwrote {r['out']}/issues.csv, issues.json, summary.json"
          + (f" and {Path(r['gallery']).name}" if r.get("gallery") else ""))
    return 0


def add_check(verbs) -> None:
    p = verbs.add_parser("check", help="does my implementation work? a verdict on a model, optimizer or loss, "
                         "against the zoo", description="Mechanics checks in seconds (output, softmax, initial "
                         "loss, gradients, dead units, nonlinearity, batch independence, optimizer, overfit one "
                         "batch), then the model trained over seeds at a fixed budget on the validation split "
                         "beside references (logistic regression, the MLP, the fast CNN; or Adam and SGD for "
                         "your optimizer, cross-entropy for your loss), and a verdict.")
    p.add_argument("model", help="a zoo name (`mnistlab models`) or your own: file.py:Name or package.module:Name")
    p.add_argument("--seeds", default="0-2", help="seeds of the learning part (default: 0-2)")
    p.add_argument("--quick", action="store_true", help="a smaller budget (1 epoch of 5,000 images)")
    p.add_argument("--mechanics-only", action="store_true", help="the mechanics checks alone (seconds)")
    p.add_argument("--optimizer", help="your optimizer (file.py:Name), checked against Adam and SGD on MODEL")
    p.add_argument("--loss", help="your loss (file.py:name), checked against cross-entropy on MODEL")
    p.add_argument("--out", help="write check.json here")
    add_set_flag(p, "any other setting, e.g. lr=0.01 or dataset=fashion-mnist (repeatable)")
    p.set_defaults(func=cmd_check)


def cmd_check(args) -> int:
    r = api.check(args.model, optimizer=args.optimizer, loss=args.loss, seeds=args.seeds, quick=args.quick,
                  mechanics_only=args.mechanics_only, out=args.out, **config.parse_set(args.set or []))
    print(r.conclusion())  # the checks were printed as each completed
    return 0 if r["status"] == "works" else 1


def add_inspect(verbs) -> None:
    p = verbs.add_parser("inspect", help="what a network learned: first-layer filters, feature maps, top images "
                         "per unit, saliency",
                         description="Draw a trained model's first-layer filters (or a linear layer's templates), "
                         "the feature maps of each convolution for chosen images, the images that most excite the "
                         "penultimate units of highest variance, and saliency maps. Writes PNGs and inspect.json "
                         "(default: RUN_DIR/inspect/); `mnistlab report RUN` shows them.")
    p.add_argument("model", help="run directory or checkpoint")
    p.add_argument("--dataset", help="dataset to draw images from (default: the model's)")
    p.add_argument("--split", default="test", help="test (default) or train")
    p.add_argument("--images", default="0,1,2,3", help="image positions for feature maps and saliency (default: 0,1,2,3)")
    p.add_argument("--units", type=int, default=8, help="penultimate units to show (default: 8)")
    p.add_argument("--top", type=int, default=8, help="images per unit (default: 8)")
    p.add_argument("--out", help="output directory (default: RUN_DIR/inspect)")
    p.add_argument("--data-dir", help="directory to look for data in first")
    add_trust_flag(p)
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args) -> int:
    r = api.inspect(args.model, dataset=args.dataset, split=args.split, images=args.images, units=args.units,
                    top=args.top, out=args.out, data_dir=args.data_dir, trust_code=args.trust_code)
    for name, path in r["pictures"].items():
        print(f"{name}: {path}")
    return 0


def add_map(verbs) -> None:
    p = verbs.add_parser("map", help="a 2-D map (UMAP or t-SNE) of a split's raw pixels or of a model's learned "
                         "features: PNG, interactive HTML, coordinates",
                         description="Embed a dataset split in 2-D with umap-learn or openTSNE (the `maps` extra), "
                         "seeded: the raw pixels, or with a run the features its classifier reads (the penultimate "
                         "layer), the run's mistakes marked. Writes map.png, a self-contained map.html (hover or tap "
                         "a point to see the image, label and prediction; toggle classes), coords.npy/.csv and "
                         "map.json (default: RUN_DIR/maps/METHOD-FEATURES-SPLIT/, or maps/ without a run).")
    p.add_argument("model", nargs="?", help="run directory or checkpoint (optional: without it, the dataset's pixels)")
    p.add_argument("--dataset", help="dataset (default: the model's, or mnist)")
    p.add_argument("--method", default="umap", help="umap (default) or tsne")
    p.add_argument("--features", help="pixels or penultimate (default: penultimate with a model, else pixels)")
    p.add_argument("--split", default="test", help="test (default) or train")
    p.add_argument("--n", type=int, help="map N images drawn with --seed (default: the whole split)")
    p.add_argument("--seed", type=int, default=0, help="seeds the draw and the embedding (default: 0)")
    p.add_argument("--out", help="output directory")
    p.add_argument("--data-dir", help="directory to look for data in first")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_trust_flag(p)
    p.set_defaults(func=cmd_map)


def cmd_map(args) -> int:
    r = api.map(args.model, dataset=args.dataset, method=args.method, features=args.features, split=args.split,
                n=args.n, seed=args.seed, out=args.out, data_dir=args.data_dir, quiet=args.quiet,
                trust_code=args.trust_code)
    if args.quiet:
        print(r["files"]["html"])
    return 0


def add(verbs) -> None:
    for add_verb in (add_evaluate, add_ensemble, add_attack, add_audit, add_check, add_inspect, add_map):
        add_verb(verbs)
