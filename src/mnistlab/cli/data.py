"""`mnistlab data ...` (list, info, show, verify, fetch): each action built, as every verb is, from the
signature and docstring of the function it calls in `mnistlab.data` (cli/verbs.py), which returns what
is printed."""

from __future__ import annotations

import json
import sys

from .. import data
from .verbs import Verb, add_verb


def _json_flag(p) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _printed(args, result) -> int:
    print(json.dumps(result.record, indent=2) if args.json else result)
    return 0


def _written(args, path) -> int:
    print(f"wrote {path}")
    return 0


def _verified(args, result) -> int:
    print(result)
    if result["verdict"]:
        print(f"\n{result['verdict']}", file=sys.stderr)
    return 0 if result["ok"] else 1


def _quiet_flag(p) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _fetch(args, call) -> int:
    got = call(progress=not args.quiet)
    for path in got:
        print(f"downloaded {path}")
    if not got:
        print(f"{args.name}: every file is already present (`mnistlab data list` says where); --force re-downloads")
    return 0


ACTIONS = [
    Verb("list", data.status_all, extra=_json_flag, show=_printed),
    Verb("info", data.info, positional=("name",), extra=_json_flag, show=_printed),
    Verb("show", data.show, positional=("name",), show=_written),
    Verb("verify", data.verify_all, positional=("name",), show=_verified),
    Verb("fetch", data.fetch, positional=("name",), extra=_quiet_flag, run=_fetch),
]


def add(verbs) -> None:
    """The `data` verb and its actions."""
    data_p = verbs.add_parser("data", help="list, inspect, show, verify and fetch datasets")
    actions = data_p.add_subparsers(dest="data_verb", metavar="ACTION", required=True)
    for action in ACTIONS:
        add_verb(actions, action)
