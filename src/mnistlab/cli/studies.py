"""The studies' verbs: tune, transfer-curve, sota. Each parser sits beside its handler, which calls
`mnistlab.tune`, `mnistlab.transfer_curve` or `mnistlab.sota` and prints what it returned."""

from __future__ import annotations

import argparse

from .. import api
from ..errors import MnistlabError
from ..studies.tuning import list_spaces
from .common import settings


def add_tune(verbs) -> None:
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
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="do not start with the recipe's own values as trial 0")
    p.add_argument("--list-spaces", action="store_true", help="list the packaged search spaces and exit")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    if args.list_spaces:  # what there is to search: a listing, not a search
        print("\n".join(list_spaces()))
        return 0
    if not args.recipe or not args.space:
        raise MnistlabError("tune needs --recipe and --space", hint="e.g. mnistlab tune --recipe fast --space fast "
                            "--trials 40 (`mnistlab tune --list-spaces` names the packaged spaces)")
    api.tune(args.recipe, args.space, trials=args.trials, study=args.study, storage=args.storage, workers=args.workers,
             timeout=args.timeout, seed=args.seed, sampler=args.sampler, pruner=args.pruner, objectives=args.objectives,
             out=args.out, heartbeat=args.heartbeat, baseline=args.baseline, quiet=args.quiet, **settings(args))
    return 0


def add_transfer_curve(verbs) -> None:
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


def cmd_transfer_curve(args) -> int:
    api.transfer_curve(args.source, dataset=args.dataset, labels=args.labels, seeds=args.seeds, recipe=args.recipe,
                       modes=args.modes, steps=args.steps, lr_backbone=args.lr_backbone, out=args.out,
                       quiet=args.quiet, **settings(args))
    return 0


def add_sota(verbs) -> None:
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


def cmd_sota(args) -> int:
    api.sota(out=args.out, models=args.models, seeds=args.seeds, protocols=args.protocols,
             throughput_steps=args.throughput_steps, quiet=args.quiet, **settings(args))
    return 0


def add(verbs) -> None:
    for add_verb in (add_tune, add_transfer_curve, add_sota):
        add_verb(verbs)
