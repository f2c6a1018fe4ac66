"""`mnistlab train` and `mnistlab pretrain`: each verb's parser, then its handler, which calls the
library function of its name (`mnistlab.train`, `mnistlab.pretrain`) and prints what it returned."""

from __future__ import annotations

import argparse
import sys

from .. import api
from ..errors import MnistlabError
from ..models import carried_code
from ..tables import printable
from .common import add_config_flags, add_set_flag, add_trust_flag, settings


def add_train(verbs) -> None:
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
    add_set_flag(p)
    p.add_argument("--dry-run", action="store_true", help="smoke run: 1 epoch on 1024 examples, 512 validation images, the test set left unread")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_config_flags(p)
    add_trust_flag(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    api.train(args.recipe, seeds=args.seeds, resume=args.resume, dry_run=args.dry_run, quiet=args.quiet,
              **settings(args), trust_code=args.trust_code)
    return 0


def add_pretrain(verbs) -> None:
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


def cmd_pretrain(args) -> int:
    api.pretrain(args.recipe, dataset=args.dataset, method=args.method, epochs=args.epochs, batch_size=args.batch_size,
                 lr=args.lr, temperature=args.temperature, seed=args.seed, out=args.out, quiet=args.quiet,
                 **settings(args))
    return 0


def add_trust(verbs) -> None:
    p = verbs.add_parser("trust", help="show the code of your own a run from elsewhere carries, and approve it",
                         description="A run's model, optimizer or loss of the user's own runs without asking only "
                         "where you recorded it (train signs what it records) or approved it here. This shows the "
                         "code a run, a group of runs or a checkpoint carries (what would run: the copy in its "
                         "code/ folder), asks, and signs it with your key (in your config folder: "
                         "$MNISTLAB_CONFIG_DIR, else ~/.config/mnistlab/trust).",
                         epilog="examples:\n  mnistlab trust runs/from-a-colleague\n"
                         "  mnistlab trust runs/from-a-colleague --yes     # approve without asking\n"
                         "  mnistlab trust runs/from-a-colleague --revoke  # ask again from now on",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="RUN", help="a run directory, a group of runs, a checkpoint or an ensemble file")
    p.add_argument("--yes", action="store_true", help="approve without asking (after showing the code)")
    p.add_argument("--revoke", action="store_true", help="take an approval back: the code asks again")
    p.set_defaults(func=cmd_trust)


def cmd_trust(args) -> int:
    found = carried_code.carried_code(args.path)  # shown before anything is signed
    if not found:
        print(f"{args.path}: no code of your own to approve: it uses only mnistlab's own models")
        return 0
    if not args.revoke:
        for item in found:
            print(describe_code(item))
        if not all(item.signed for item in found) and not args.yes and not confirmed("Run this code here from now "
                                                                                     "on, without asking? [y/N] "):
            print("nothing approved")
            return 1
    print(api.trust(args.path, revoke=args.revoke))
    return 0


def describe_code(item) -> str:
    """A carried piece of code as `mnistlab trust` shows it: what it is, where to read it, its lines."""
    r = item.record
    head = (f"{item.role} {printable(r['ref'])} ({r['kind']}{', recorded at ' + printable(r['path']) if r['path'] else ''}; "
            f"SHA-256 {r['sha256'][:16]}...; {item.lines} lines; "
            f"{'already approved' if item.signed else 'not approved here'})\n"
            f"read it in {printable(item.copy or item.files[0])}:")
    body = "\n".join(f"{i:5}  {printable(line)}" for i, line in enumerate(r["source"].splitlines(), 1))
    return f"{head}\n{body}\n"


def confirmed(question: str) -> bool:
    """A yes from a person at a terminal; no terminal, no yes (pass --yes)."""
    if not sys.stdin.isatty():
        raise MnistlabError("mnistlab trust asks before approving code, and no one is at a terminal to answer",
                            hint="read the code above, then pass --yes to approve it")
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def add(verbs) -> None:
    add_train(verbs)
    add_pretrain(verbs)
    add_trust(verbs)
