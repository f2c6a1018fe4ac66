"""The `mnistlab` command: a thin shell that parses, validates and calls the library.

Each verb calls the library function of the same name (`mnistlab data info` -> `data.info`), so
everything the CLI does, Python can do. A `MnistlabError` is printed as one message and a hint,
without a traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from . import __version__, data
from .data.registry import ALIASES, list_datasets
from .errors import MnistlabError


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for i, row in enumerate([header, *rows]):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _dataset_name(value: str) -> str:
    # Validated by get_spec later, with a helpful message; argparse `choices` would print a wall of names.
    return value


def cmd_data_list(args) -> int:
    rows = [data.status(name, args.data_dir) for name in list_datasets()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    _print_table([[r["name"], r["state"], r["origin"], r["location"]] for r in rows],
                 ["dataset", "state", "read from", "where"])
    print(f"\naliases: {', '.join(f'{a} -> {t}' for a, t in ALIASES.items())}")
    return 0


def cmd_data_info(args) -> int:
    result = data.info(args.name, args.data_dir, download=args.download, verify=not args.no_verify)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['title']} ({result['name']}): {result['description']}")
    print(f"image shape {'x'.join(map(str, result['image_shape']))}, {result['num_classes']} classes, "
          f"license {result['license']}")
    for split, s in result["splits"].items():
        print(f"{split}: {s['count']} examples")
    print()
    counts = [result["splits"][s]["class_counts"] for s in ("train", "test")]
    _print_table([[str(i), name, str(tr), str(te)] for i, (name, tr, te) in
                  enumerate(zip(result["classes"], *counts))], ["label", "class", "train", "test"])
    mean = ", ".join(f"{m:.4f}" for m in result["pixel_mean"])
    std = ", ".join(f"{s:.4f}" for s in result["pixel_std"])
    print(f"\npixel mean {mean}, std {std} (train, scaled to [0,1])")
    print(f"content hash {result['content_hash']}")
    print()
    _print_table([[f["name"], f["verified"], f["sha256"][:16], f["origin"], f["location"]] for f in result["files"]],
                 ["file", "verified", "sha256", "from", "location"])
    return 0


def cmd_data_show(args) -> int:
    out = data.show(args.name, out=args.out, split=args.split, count=args.count, start=args.start,
                    random=args.random, seed=args.seed, scale=args.scale, data_dir=args.data_dir,
                    download=args.download)
    print(f"wrote {out}")
    return 0


def cmd_data_verify(args) -> int:
    names = list_datasets() if args.name == "all" else [args.name]
    rows, statuses = [], []
    for name in names:
        for r in data.verify(name, args.data_dir):
            if args.name == "all" and r["status"] == "missing":
                continue
            statuses.append(r["status"])
            rows.append([name, r["file"], r["status"], r.get("method", ""), r["detail"]])
    if rows:
        _print_table(rows, ["dataset", "file", "status", "method", "detail"])
    else:
        print("no dataset files found")
    if {"mismatch", "error"} & set(statuses) or (args.name != "all" and "missing" in statuses):
        print("\nverification FAILED: delete the bad files and fetch them again (`mnistlab data fetch NAME`)",
              file=sys.stderr)
        return 1
    if "unpinned" in statuses:
        print(f"\nNOT VERIFIED: {statuses.count('unpinned')} file(s) have no pinned hash to compare with (an "
              "unpacked archive or a re-compressed copy); keep the files as their publisher distributes them, "
              "or compare the content SHA-256 above with a copy you trust", file=sys.stderr)
        return 1
    return 0


def cmd_data_fetch(args) -> int:
    got = data.fetch(args.name, data_dir=args.data_dir, progress=not args.quiet, force=args.force)
    for path in got:
        print(f"downloaded {path}")
    if not got:
        print(f"{args.name}: every file is already present (`mnistlab data list` says where); --force re-downloads")
    return 0


def cmd_models(args) -> int:
    from .models import MODELS, count_parameters, create_model
    from .models.classical import CLASSICAL
    from .models.classical import options as classical_options

    rows = []
    for name, entry in MODELS.items():
        params = count_parameters(create_model(name, (1, 28, 28), 10))
        options = ", ".join(f"{k}={v!r}" for k, v in entry.options().items())
        rows.append([name, f"{params:,}", entry.summary + (f" [options: {options}]" if options else "")])
    for name, entry in CLASSICAL.items():  # fitted, so their size depends on the data
        options = ", ".join(f"{k}={v!r}" for k, v in classical_options(name).items())
        rows.append([name, "(fitted)", f"{entry.summary} [options: {options}]"])
    _print_table(rows, ["model", "params (MNIST)", "description"])
    return 0


def cmd_recipes(args) -> int:
    from .training.config import list_recipes, read_recipe, recipe_path

    rows = []
    for name in list_recipes():
        first = next((line[1:].strip() for line in recipe_path(name).read_text().splitlines() if line.startswith("#")), "")
        r = read_recipe(name)
        rows.append([name, r.get("model", ""), str(r.get("epochs", "")), first])
    _print_table(rows, ["recipe", "model", "epochs", "about"])
    print("\nA recipe is a TOML file: copy one (`mnistlab recipes --show NAME > my.toml`), edit it, "
          "and train with --recipe my.toml.")
    if args.show:
        print()
        print(recipe_path(args.show).read_text())
    return 0


def cmd_train(args) -> int:
    from .training import config as config_mod
    from .training import train as train_mod

    overrides = {}
    for name in config_mod.FIELDS:
        value = getattr(args, f"cfg_{name}", None)
        if value is not None:
            overrides[name] = value
    overrides.update(config_mod.parse_set(args.set or []))
    if args.dry_run:  # a smoke run: one short epoch on a slice of the data
        overrides.update({"epochs": 1, "train_subset": 1024, "validation": 512, "progress": False})
    if args.resume:
        train_mod.resume(args.resume, overrides, quiet=args.quiet)
        return 0
    cfg = config_mod.resolve(args.recipe, overrides)
    if args.seeds:
        train_mod.train_seeds(cfg, train_mod.parse_seeds(args.seeds), quiet=args.quiet)
    else:
        train_mod.train(cfg, quiet=args.quiet)
    return 0


def cmd_sota(args) -> int:
    from . import sota
    from .training import config as config_mod
    from .training.train import parse_seeds

    plan = sota.Plan(models=[m.strip() for m in args.models.split(",") if m.strip()], seeds=parse_seeds(args.seeds),
                     protocols=[p.strip() for p in args.protocols.split(",") if p.strip()],
                     overrides=config_mod.parse_set(args.set or []))
    sota.run_study(args.out, plan, quiet=args.quiet, throughput_steps=args.throughput_steps)
    return 0


def cmd_tune(args) -> int:
    from .training import config as config_mod
    from .tuning import list_spaces
    from .tuning import study as study_mod

    if args.list_spaces:
        print("\n".join(list_spaces()))
        return 0
    if not args.recipe or not args.space:
        raise MnistlabError("tune needs --recipe and --space", hint="e.g. mnistlab tune --recipe fast --space fast "
                            "--trials 40 (`mnistlab tune --list-spaces` names the packaged spaces)")
    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    study_mod.tune(args.recipe, args.space, trials=args.trials, study=args.study, storage=args.storage,
                   workers=args.workers, timeout=args.timeout, seed=args.seed, sampler=args.sampler,
                   pruner=args.pruner, objectives=objectives, out=args.out,
                   overrides=config_mod.parse_set(args.set or []), heartbeat=args.heartbeat,
                   baseline=not args.no_baseline, quiet=args.quiet)
    return 0


def _int_list(text: str, flag: str, expected: str) -> list[int]:
    """'1,5,10' -> [1, 5, 10]; an error naming the flag otherwise."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise MnistlabError(f"{flag} {text!r}: expected {expected}") from None


def cmd_inspect(args) -> int:
    from .analysis.inspect import inspect_model

    images = _int_list(args.images, "--images", "image positions like 0,1,2")
    r = inspect_model(args.model, dataset=args.dataset, split=args.split, images=images, units=args.units,
                      top=args.top, out=args.out)
    for name, path in r["pictures"].items():
        print(f"{name}: {path}")
    return 0


def cmd_pretrain(args) -> int:
    from .training import config as config_mod
    from .training.pretrain import pretrain

    overrides = {"dataset": args.dataset, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                 "seed": args.seed, "out": args.out, "weight_decay": 0.0, "warmup": 0.1,
                 **config_mod.parse_set(args.set or [])}
    cfg = config_mod.resolve(args.recipe, overrides)
    if not cfg.name:
        cfg.name = f"pretrain-{cfg.recipe or cfg.model}-{cfg.dataset}-s{cfg.seed}"
    pretrain(cfg, method=args.method, temperature=args.temperature, quiet=args.quiet)
    return 0


def cmd_transfer_curve(args) -> int:
    from .analysis.transfer_curve import transfer_curve
    from .training import config as config_mod
    from .training.train import parse_seeds

    labels = _int_list(args.labels, "--labels", "counts per class like 1,5,10,100,1000")
    transfer_curve(args.source or "", args.dataset, labels, parse_seeds(args.seeds), recipe=args.recipe,
                   modes=[m.strip() for m in args.modes.split(",") if m.strip()], steps=args.steps,
                   lr_backbone=args.lr_backbone, overrides=config_mod.parse_set(args.set or []), out=args.out,
                   quiet=args.quiet)
    return 0


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, its help taken from the field's metadata."""
    from .training import config as config_mod

    group = p.add_argument_group("run config (each overrides the recipe; see also --set)")
    for name, f in config_mod.FIELDS.items():
        if name == "recipe":  # set by --recipe itself
            continue
        flag = "--" + name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata['help']} (default: {default!r})".replace("%", "%%")
        if config_mod.field_type(name) is bool:
            group.add_argument(flag, dest=f"cfg_{name}", action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            group.add_argument(flag, dest=f"cfg_{name}", metavar=name.upper(), default=None, help=help_text)


def cmd_evaluate(args) -> int:
    from .analysis import evaluate as evaluate_mod

    result = evaluate_mod.evaluate(args.model, split=args.split, dataset=args.dataset, tta=args.tta, out=args.out,
                                   pictures=not args.no_pictures, data_dir=args.data_dir)
    print(evaluate_mod.format_table(result))
    print(f"\nwrote {result['json']}" + (f" and {len(result.get('pictures', {}))} pictures" if not args.no_pictures
                                         else ""))
    return 0


def cmd_audit(args) -> int:
    from pathlib import Path

    from .analysis import audit as audit_mod

    summary = audit_mod.run(args.dataset, split=args.split, folds=args.folds, recipe=args.model, seed=args.seed,
                            out=args.out, clean_seeds=args.clean_seeds, top=args.top, data_dir=args.data_dir)
    print(audit_mod.format_summary(summary))
    print(f"\nwrote {summary['out']}/issues.csv, issues.json, summary.json"
          + (f" and {Path(summary['gallery']).name}" if summary.get("gallery") else ""))
    return 0


def cmd_map(args) -> int:
    from .analysis.maps import build_map

    r = build_map(args.model, dataset=args.dataset, method=args.method, features=args.features, split=args.split,
                  n=args.n, seed=args.seed, out=args.out, data_dir=args.data_dir, quiet=args.quiet)
    if args.quiet:
        print(r["files"]["html"])
    return 0


def cmd_attack(args) -> int:
    from pathlib import Path

    from .analysis import attack as attack_mod

    try:
        eps = [float(e) for e in args.eps.split(",")]
    except ValueError:
        raise MnistlabError(f"--eps {args.eps!r}: expected numbers separated by commas, like 0.1,0.2,0.3") from None
    if args.targeted and args.target is None:
        raise MnistlabError("--targeted needs --target CLASS_INDEX")
    if len(args.model) > 1 and not args.out:
        raise MnistlabError("several models: name a directory for the results and their comparison with --out")
    docs = []
    for i, model in enumerate(args.model):
        out = args.out if len(args.model) == 1 else Path(args.out) / f"{i + 1}-{Path(model).stem}"
        doc = attack_mod.run(model, method=args.method, eps=eps, norm=args.norm,
                             target=args.target if args.targeted else None, split=args.split, n=args.n,
                             steps=args.steps, restarts=args.restarts, targets=args.targets, queries=args.queries,
                             seed=args.seed, checks=not args.no_checks, check_n=args.check_n, out=out,
                             data_dir=args.data_dir)
        print(f"{model}:\n{attack_mod.format_table(doc)}")
        print(f"\nwrote {doc['json']}, {doc['pictures']['curve']} and {doc['pictures']['gallery']}\n")
        docs.append(doc)
    if len(docs) > 1:
        path = attack_mod.compare_curves(docs, Path(args.out) / f"compare-{args.method}-{args.norm}.png",
                                         [Path(m).name for m in args.model])
        print(f"wrote {path}")
    return 0


def cmd_ensemble(args) -> int:
    from .analysis import ensemble as ensemble_mod
    from .analysis import evaluate as evaluate_mod
    from .models.predictor import load_predictor

    paths = args.models
    if args.select:
        predictor = load_predictor(paths[0])
        from .analysis.evaluate import target_split

        _, val = target_split(predictor, "val", None, args.data_dir)
        chosen, trace = ensemble_mod.select_greedy(paths, val.images, val.labels, args.method)
        print("greedy selection on the validation split:")
        for i, acc in zip(chosen, trace):
            print(f"  + {paths[i]}  (val accuracy {acc:.2%})")
        paths = [paths[i] for i in chosen]
    predictor = ensemble_mod.build(paths, args.method)
    saved = ensemble_mod.save(predictor, args.out)
    print(f"wrote {saved} ({len(paths)} members, method {args.method})")
    result = evaluate_mod.evaluate(saved, split=args.split, pictures=False, data_dir=args.data_dir)
    rows = [[str(p), f"{a:.2%}", str(round((1 - a) * result["n"]))] for p, a in zip(paths, result["member_accuracy"])]
    rows.append([f"ensemble ({args.method})", f"{result['accuracy']:.2%}", str(result["errors"])])
    print()
    _print_table(rows, ["model", f"{args.split} accuracy", "errors"])
    return 0


def cmd_report(args) -> int:
    from .analysis import report as report_mod

    result = report_mod.report(args.runs, out=args.out, title=args.title)
    print(f"wrote {result['html']} and {result['markdown']}")
    return 0


def cmd_predict(args) -> int:
    from .serving.predict import NOT_DIGIT_THRESHOLD, predict

    results = predict(args.images, model=args.model, save_preprocessed=args.save_preprocessed)
    if args.json:
        print(json.dumps([dict(r.as_dict(), file=str(f)) for f, r in zip(args.images, results)], indent=2))
        return 0
    for f, r in zip(args.images, results):
        top = ", ".join(f"{d} {p:.1%}" for d, p in r.top3)
        verdict = "" if r.is_digit else (f"  [not a digit? score {r.not_digit:.2f} >= "
                                         f"{NOT_DIGIT_THRESHOLD}: {'; '.join(r.reasons)}]")
        print(f"{f}: {r.digit} ({r.probability:.1%}; top 3: {top}){verdict}")
    if args.save_preprocessed:
        print(f"wrote the 28x28 images the model saw to {args.save_preprocessed}/")
    return 0


def cmd_serve(args) -> int:
    try:
        from .serving import serve as serve_mod
    except ImportError:
        raise MnistlabError("serving needs FastAPI and uvicorn", hint="pip install 'mnistlab[serve]'") from None
    chosen = {f.name: getattr(args, f"limit_{f.name}") for f in dataclasses.fields(serve_mod.Limits)}
    limits = serve_mod.Limits(**{k: v for k, v in chosen.items() if v is not None})
    serve_mod.serve(args.model, host=args.host, port=args.port, limits=limits, workers=args.workers,
                    backend=args.backend, access_log=args.access_log)
    return 0


def _add_limit_flags(p: argparse.ArgumentParser) -> None:
    """One flag per field of serving.limits.Limits, its help from the field's metadata."""
    from .serving.limits import Limits

    group = p.add_argument_group("limits (what one request or client may cost the server)")
    for f in dataclasses.fields(Limits):
        kind = int if isinstance(f.default, int) else float
        group.add_argument("--" + f.name.replace("_", "-"), dest=f"limit_{f.name}", type=kind, default=None,
                           metavar=f.name.upper(), help=f"{f.metadata['help']} (default: {f.default})")


def cmd_export(args) -> int:
    from .serving import export as export_mod

    out = export_mod.export(args.model, format=args.format, out=args.out)
    print(f"wrote {out}")
    return 0


def cmd_bench(args) -> int:
    from . import bench

    bench.bench(args.suites or None, out_dir=args.out, quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnistlab", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mnistlab {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for add in (_add_data_verbs, _add_train_verb, _add_tune_verb, _add_transfer_verb, _add_analysis_verbs, _add_inspect_verb,
                _add_map_verb, _add_serving_verbs,
                _add_info_verbs):
        add(verbs)
    return parser


def _add_data_verbs(verbs) -> None:
    data_p = verbs.add_parser("data", help="list, inspect, show, verify and fetch datasets")
    data_verbs = data_p.add_subparsers(dest="data_verb", metavar="ACTION", required=True)

    def data_cmd(name: str, help: str, func, with_name: bool = True):
        p = data_verbs.add_parser(name, help=help, description=help)
        if with_name:
            p.add_argument("name", type=_dataset_name, help="dataset name (`mnistlab data list` shows them)")
        p.add_argument("--data-dir", help="directory to look in first (default: $MNISTLAB_DATA_DIR)")
        p.set_defaults(func=func)
        return p

    p = data_cmd("list", "the datasets mnistlab knows, whether each is present and where it is read from",
                 cmd_data_list, with_name=False)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = data_cmd("info", "sizes, classes, per-class counts, pixel mean/std, content hashes and sources",
                 cmd_data_info)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not present")
    p.add_argument("--no-verify", action="store_true", help="skip hash verification (for re-compressed copies "
                   "of datasets whose content hash is not pinned)")

    p = data_cmd("show", "write a labelled grid of images to a PNG file", cmd_data_show)
    p.add_argument("--split", default="train", choices=["train", "test"], help="which split (default: train)")
    p.add_argument("--count", type=int, default=25, help="number of images (default: 25)")
    p.add_argument("--start", type=int, default=0, help="index of the first image (default: 0)")
    p.add_argument("--random", action="store_true", help="a random sample instead of consecutive images")
    p.add_argument("--seed", type=int, default=0, help="seed for --random (default: 0)")
    p.add_argument("--scale", type=int, default=3, help="pixels per image pixel (default: 3)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not present")

    p = data_cmd("verify", "re-hash the dataset's files on disk against the pinned hashes (NAME may be 'all')",
                 cmd_data_verify)

    p = data_cmd("fetch", "download the dataset's missing files into the user cache, with a progress bar",
                 cmd_data_fetch)
    p.add_argument("--force", action="store_true", help="download again even if the files are present")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_train_verb(verbs) -> None:
    p = verbs.add_parser("train", help="train a model: a recipe, flags, several seeds, or resume a run",
                         description="Train a model and evaluate it: validation each epoch, the test set once at "
                         "the end. Writes a run directory (config, log, checkpoints, summary).",
                         epilog="examples:\n  mnistlab train --recipe seed-cnn\n"
                         "  mnistlab train --model m5 --dataset fashion-mnist --epochs 30 --augment an2020\n"
                         "  mnistlab train --recipe seed-mlp --seeds 0-4\n"
                         "  mnistlab train --resume runs/seed-cnn-mnist-s0\n"
                         "  torchrun --nproc_per_node 2 -m mnistlab train --recipe seed-mlp",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", help="a packaged recipe (`mnistlab recipes`) or a TOML file")
    p.add_argument("--seeds", help="train one run per seed, e.g. 0-4 or 0,1,2, and summarise mean/std/min/max")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="smoke run: 1 epoch on 1024 examples")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)


def _add_tune_verb(verbs) -> None:
    p = verbs.add_parser("tune", help="hyperparameter search over a recipe (Optuna): pruning, workers, resume",
                         description="Search a recipe's settings over a TOML space with Optuna. Each trial is a "
                         "run directory scored on the validation split (the test set is not read); at the end the "
                         "chosen trial is evaluated on the test set once, written as a recipe (best.toml), and "
                         "shown in a study report (study.html). Run the same command again to continue the study; "
                         "point several processes or machines at one --storage to share it.",
                         epilog="examples:\n  mnistlab tune --recipe fast --space fast --trials 40 --workers 2\n"
                         "  mnistlab tune --recipe fast --space fast-pareto --objectives accuracy,time --trials 30\n"
                         "  mnistlab tune --recipe seed-mlp --space my-space.toml --storage "
                         "postgresql://user@db/optuna --study mlp-1   # on each machine",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", help="the recipe every trial starts from (`mnistlab recipes`, or a .toml file)")
    p.add_argument("--space", help="a packaged search space (`--list-spaces`) or a TOML file")
    p.add_argument("--trials", type=int, default=20, help="finished (complete or pruned) trials the study should "
                   "reach, counting earlier sessions (default: 20)")
    p.add_argument("--study", help="study name (default: RECIPE-DATASET-SPACE)")
    p.add_argument("--storage", help="Optuna storage URL shared by the workers (default: sqlite:///OUT/STUDY/study.db)")
    p.add_argument("--workers", type=int, default=1, help="processes on this machine, each taking trials (default: 1; "
                   "threads per trial default to the cores divided among them)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (trials train with the recipe's seed)")
    p.add_argument("--sampler", default="tpe", help="tpe (default) | random | cmaes")
    p.add_argument("--pruner", default="median", help="median (default) | asha | none: on each epoch's val accuracy")
    p.add_argument("--objectives", default="accuracy", help="accuracy (default), or accuracy,time for the Pareto "
                   "front of validation accuracy vs training seconds")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a fixed setting for every trial (repeatable)")
    p.add_argument("--out", default="runs/tune", help="parent directory of study directories (default: runs/tune)")
    p.add_argument("--heartbeat", type=int, default=60, help="seconds between a running trial's heartbeats; a trial "
                   "silent for twice this is taken as dead and retried (default: 60)")
    p.add_argument("--no-baseline", action="store_true", help="do not start with the recipe's own values as trial 0")
    p.add_argument("--list-spaces", action="store_true", help="list the packaged search spaces and exit")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_tune)


def _add_transfer_verb(verbs) -> None:
    p = verbs.add_parser("pretrain", help="learn a model's features from unlabelled images (contrastive, SimCLR)",
                         description="Train the recipe's model's feature extractor on the training images without "
                         "their labels: two augmented views of each image, pulled together against the rest of the "
                         "batch (NT-Xent). Writes a run directory to start other runs from (--init-from) and to "
                         "probe with transfer-curve.",
                         epilog="example:\n  mnistlab pretrain --recipe fast --dataset mnist --epochs 5\n"
                         "  mnistlab transfer-curve --source runs/pretrain-fast-mnist-s0 --dataset mnist",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="fast", help="the model (and its options) to pretrain (default: fast)")
    p.add_argument("--dataset", default="mnist", help="whose training images (default: mnist)")
    p.add_argument("--method", default="contrastive", help="contrastive (default)")
    p.add_argument("--epochs", type=int, default=5, help="passes over the images (default: 5)")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch, each seen twice (default: 256)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam's peak learning rate, one-cycle (default: 0.002)")
    p.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature (default: 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other run setting (repeatable)")
    p.add_argument("--out", default="runs", help="parent directory of the run (default: runs)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_pretrain)

    p = verbs.add_parser("transfer-curve", help="test accuracy vs labels per class: from scratch, linear probe, "
                         "fine-tune from a source run",
                         description="At each label budget and seed, train the recipe three ways on the same "
                         "labelled images (from scratch; the source's features frozen under a new head; the whole "
                         "model fine-tuned under a new head) and plot test accuracy against labels per class, mean "
                         "+- std over seeds. Fixed settings, no selection on the test set. Run it again to continue "
                         "an interrupted curve.",
                         epilog="examples:\n  mnistlab train --recipe fast --dataset fashion-mnist --name fashion\n"
                         "  mnistlab transfer-curve --source runs/fashion --dataset mnist --labels 1,5,10,100,1000 "
                         "--seeds 0-2 --out curve-fashion-to-mnist",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", help="run directory or checkpoint whose features start the probe and fine-tune")
    p.add_argument("--dataset", default="mnist", help="the dataset to learn from few labels (default: mnist)")
    p.add_argument("--labels", default="1,5,10,100,1000", help="labelled images per class (default: 1,5,10,100,1000)")
    p.add_argument("--seeds", default="0-2", help="seeds: each draws its own labelled images (default: 0-2)")
    p.add_argument("--recipe", default="fast", help="the recipe of every run (default: fast)")
    p.add_argument("--modes", default="scratch,probe,finetune", help="some of scratch, probe, finetune")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per run, at least one epoch (default: 300)")
    p.add_argument("--lr-backbone", type=float, help="fine-tune: the feature extractor's learning rate "
                   "(default: the recipe's lr / 10)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a setting for every run (repeatable)")
    p.add_argument("--out", default="transfer-curve", help="output directory (default: transfer-curve)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_transfer_curve)


def _add_inspect_verb(verbs) -> None:
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
    p.set_defaults(func=cmd_inspect)


def _add_map_verb(verbs) -> None:
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
    p.set_defaults(func=cmd_map)


def _add_analysis_verbs(verbs) -> None:
    p = verbs.add_parser("evaluate", help="metrics, confusion matrix, calibration and pictures of a trained model",
                         description="Evaluate a run directory, checkpoint or ensemble file: accuracy, top-k, "
                         "cross-entropy, per-class precision/recall/F1, confusion matrix, calibration (ECE), "
                         "and pictures. Writes JSON and PNGs (default: RUN_DIR/eval/).")
    p.add_argument("model", help="run directory, .safetensors checkpoint, or ensemble file")
    p.add_argument("--split", default="test", choices=["test", "val"], help="which split (default: test)")
    p.add_argument("--dataset", help="evaluate on another dataset of the same shape and classes")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: average over 1-pixel shifts")
    p.add_argument("--out", help="directory for the JSON and pictures")
    p.add_argument("--no-pictures", action="store_true", help="only the numbers")
    p.add_argument("--data-dir", help="directory to look for data in first")
    p.set_defaults(func=cmd_evaluate)

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
    p.add_argument("--no-checks", action="store_true", help="skip the checks against gradient masking")
    p.add_argument("--check-n", type=int, default=200, help="images for the costlier checks (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="seeds random starts and Square (default: 0)")
    p.add_argument("--out", help="directory for the JSON and pictures")
    p.add_argument("--data-dir", help="directory to look for data in first")
    p.set_defaults(func=cmd_attack)

    p = verbs.add_parser("audit", help="find mislabeled, ambiguous, near-duplicate and out-of-place images "
                         "(out-of-fold predictions + cleanlab)",
                         description="Score every image with a model that never trained on it (K-fold, mnistlab's "
                         "engine), then let cleanlab's confident learning and Datalab flag label issues, "
                         "outliers and near-duplicates. Writes issues.csv/json, summary.json and a gallery; the "
                         "out-of-fold scores are cached in --out.")
    p.add_argument("dataset", type=_dataset_name, help="dataset name (`mnistlab data list`)")
    p.add_argument("--split", default="test", choices=["train", "test", "all"], help="which images (default: test)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
    p.add_argument("--model", default="fast", help="the recipe each fold trains (default: fast)")
    p.add_argument("--seed", type=int, default=0, help="seeds the folds and the models (default: 0)")
    p.add_argument("--clean-seeds", type=int, default=0,
                   help="also train the recipe with the flagged training images kept, removed and relabelled, "
                   "over this many seeds, and compare validation accuracy (default: 0, off)")
    p.add_argument("--top", type=int, default=40, help="label issues in the gallery (default: 40)")
    p.add_argument("--out", help="output directory (default: audit-DATASET-SPLIT)")
    p.add_argument("--data-dir", help="directory to look for data in first")
    p.set_defaults(func=cmd_audit)

    p = verbs.add_parser("ensemble", help="combine trained models (mean or vote), save as one artifact, compare",
                         description="Combine models by averaged probabilities or majority vote, save the ensemble "
                         "as one file that evaluate/predict/serve accept, and report each member next to it.")
    p.add_argument("models", nargs="+", help="run directories or checkpoints")
    p.add_argument("--method", default="mean", choices=["mean", "vote"], help="how to combine (default: mean)")
    p.add_argument("--select", action="store_true", help="choose members greedily on the validation split")
    p.add_argument("--out", required=True, help="the ensemble file to write (.safetensors)")
    p.add_argument("--split", default="test", choices=["test", "val"], help="split to compare on (default: test)")
    p.add_argument("--data-dir", help="directory to look for data in first")
    p.set_defaults(func=cmd_ensemble)

    p = verbs.add_parser("report", help="a self-contained HTML page and a Markdown summary of runs")
    p.add_argument("runs", nargs="+", help="run directories or seed-group directories")
    p.add_argument("--out", default="report", help="output directory (default: report)")
    p.add_argument("--title", default="mnistlab report", help="page title")
    p.set_defaults(func=cmd_report)


def _add_serving_verbs(verbs) -> None:
    p = verbs.add_parser("predict", help="read digits in your own images (PNG, JPEG, BMP, GIF, WebP)",
                         description="Bring each image into MNIST's form (grayscale, light on dark, ink cropped, "
                         "longer side 20 px, centre of mass at the centre of 28x28) and classify it. Flags "
                         "pictures that are probably not a single digit (see `mnistlab.serving.predict`).")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", help="run directory, checkpoint or ensemble file (default: the packaged model)")
    p.add_argument("--save-preprocessed", metavar="DIR", help="write the 28x28 images the model saw")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)

    p = verbs.add_parser("serve", help="the draw-a-digit web page and HTTP API",
                         description="Serve the draw-a-digit page at / and the API at /api/predict, /api/health, "
                         "/api/model (OpenAPI at /docs). Every cost a request can cause is bounded by the "
                         "limits below.")
    p.add_argument("--model", help="run directory, checkpoint or ensemble file (default: the packaged model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port, each with its own model (default: 1; one per CPU "
                   "core holds the most requests; the limits apply per worker)")
    p.add_argument("--backend", choices=["auto", "pytorch"], default="auto",
                   help="auto: the model in ONNX Runtime when installed (about 5x faster per image), else PyTorch")
    p.add_argument("--access-log", action="store_true", help="log a line per request (off: it costs ~5%% of a "
                   "prediction's time at classroom rates)")
    _add_limit_flags(p)
    p.set_defaults(func=cmd_serve)

    p = verbs.add_parser("export", help="export a model or mean ensemble to ONNX")
    p.add_argument("model", help="run directory, checkpoint or ensemble file")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="output format (default: onnx)")
    p.add_argument("--out", help="output file (default: NAME.onnx)")
    p.set_defaults(func=cmd_export)


def _add_info_verbs(verbs) -> None:
    p = verbs.add_parser("models", help="the model zoo: names, parameter counts, options")
    p.set_defaults(func=cmd_models)

    p = verbs.add_parser("recipes", help="the packaged training recipes")
    p.add_argument("--show", metavar="NAME", help="print a recipe's TOML, to copy and edit")
    p.set_defaults(func=cmd_recipes)

    p = verbs.add_parser("sota", help="An et al.'s M3/M5/M7 over seeds, two protocols, two-level ensembles "
                         "chosen on validation; resumable",
                         description="The state-of-the-art study: train every (protocol, model, seed) run that is "
                         "missing (resuming interrupted ones), then write study.json, table.md and report.md. "
                         "Protocols: paper (all 60,000 train, last-epoch weights, no selection) and val (5,000 "
                         "held out; best-on-validation epochs; ensemble members chosen greedily on validation). "
                         "On a GPU every step runs as one CUDA graph with bf16 and channels-last.",
                         epilog="examples:\n  mnistlab sota --out sota-study\n"
                         "  mnistlab sota --out smoke --models m5 --seeds 0-1 --set epochs=2 --set train_subset=1000 "
                         "--throughput-steps 0",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="sota-study", help="the study directory; rerun with it to resume (default: sota-study)")
    p.add_argument("--models", default="m3,m5,m7", help="comma-separated zoo models (default: m3,m5,m7)")
    p.add_argument("--seeds", default="0-4", help="seeds of every model, e.g. 0-4 (default) or 0,2")
    p.add_argument("--protocols", default="paper,val", help="paper, val or both (default: paper,val)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key in every run "
                   "(repeatable), e.g. epochs=2, train_subset=1000, device=cpu")
    p.add_argument("--throughput-steps", type=int, default=50, help="steps per timed epoch of the eager-vs-graph "
                   "throughput measurement; 0 skips it (default: 50)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_sota)

    p = verbs.add_parser("bench", help="benchmarks: print a table and write JSON",
                         description="Run benchmark suites in one process; print a table and write JSON.")
    p.add_argument("suites", nargs="*", help="suites to run (default: all); see `mnistlab.bench.SUITES`")
    p.add_argument("--out", default="bench-results", help="directory for the JSON results (default: bench-results)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke run")
    p.set_defaults(func=cmd_bench)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe can be handled, not at the interpreter's exit
        return status
    except MnistlabError as exc:
        print(f"mnistlab: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnistlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`mnistlab data info mnist | head -1`): stop quietly, as `cat` would.
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe
