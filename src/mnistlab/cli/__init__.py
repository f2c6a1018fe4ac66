"""The `mnistlab` command: a thin shell that parses, calls the library and prints what it returned.

verbs.py builds each verb from its function in `mnistlab.api` (the signature and docstring declare the
flags once; `mnistlab attack` -> `mnistlab.attack`), so everything the CLI does, Python can do; data.py
(the datasets' actions) and bench.py (the benchmark suites) add the two verbs that are not one function.
A `MnistlabError` is printed as one message and a hint, without a traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from .. import user_code
from .._version import __version__
from ..errors import MnistlabError
from ..names import did_you_mean, nearest
from ..tables import printable
from . import bench, data, verbs

STAGES = (data, verbs, bench)


class Parser(argparse.ArgumentParser):
    """argparse with the nearest name suggested for a mistyped verb, choice or flag (`trian` ->
    `train`), as every name mnistlab reads is (mnistlab.names.did_you_mean)."""

    def error(self, message: str):
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            message += "\n" + did_you_mean(choice[1], re.findall(r"'([^']*)'", choice[2])).rstrip()
        flags = re.search(r"unrecognized arguments: (.*)", message)
        if flags:  # compared without their dashes, which every flag shares
            known = {o.lstrip("-"): o for a in self._actions for o in a.option_strings if o.startswith("--")}
            for arg in flags[1].split():
                close = nearest(arg.split("=")[0].lstrip("-"), known) if arg.startswith("-") else []
                message += f"\n{arg}: did you mean {known[close[0]]!r}?" if close else ""
        super().error(message.rstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mnistlab", description=__doc__.splitlines()[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mnistlab {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for stage in STAGES:
        stage.add(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:  # argparse says what was wrong (or prints the help) and exits: a caller of main() gets the status
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # said by the verb's own parser, with its usage and the flag it may have meant
            verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            verbs.choices[args.verb].error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
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
    except Exception as exc:  # out of the user's own code (a forward that raises while evaluating): one line
        error = user_code.own_error(exc)
        if error is None:
            raise
        print(f"mnistlab: error: {printable(error.message)}\nhint: {error.hint}", file=sys.stderr)
        return 2
