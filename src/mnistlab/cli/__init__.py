"""The `mnistlab` command: a thin shell that parses, validates and calls the library.

One module per stage, each verb's parser beside its handler: data.py (data, models, recipes),
training.py (train, pretrain), analysis.py (evaluate, ensemble, attack, audit, inspect, map),
studies.py (tune, transfer-curve, sota), reporting.py (report), serving.py (predict, serve, export),
bench.py (bench). Each handler calls the library function of its verb's name (`mnistlab attack` ->
`mnistlab.attack`), so everything the CLI does, Python can do. A `MnistlabError` is printed as one
message and a hint, without a traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from .._version import __version__
from ..errors import MnistlabError
from ..tables import printable
from . import analysis, bench, data, reporting, serving, studies, training

STAGES = (data, training, studies, analysis, reporting, serving, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnistlab", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mnistlab {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for stage in STAGES:
        stage.add(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe can be handled, not at the interpreter's exit
        return status
    except MnistlabError as exc:
        print(f"mnistlab: error: {printable(exc.message)}", file=sys.stderr)  # it may quote a file's text
        if exc.hint:
            print(f"hint: {printable(exc.hint)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnistlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`mnistlab data info mnist | head -1`): stop quietly, as `cat` would.
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe
