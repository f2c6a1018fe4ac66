"""`mnistlab report`: its parser, and a handler that calls `mnistlab.report` and says what it wrote."""

from __future__ import annotations

from .. import api
from .common import add_trust_flag


def add(verbs) -> None:
    p = verbs.add_parser("report", help="a self-contained HTML page and a Markdown summary of runs")
    p.add_argument("runs", nargs="+", help="run directories or seed-group directories")
    p.add_argument("--out", default="report", help="output directory (default: report)")
    p.add_argument("--title", default="mnistlab report", help="page title")
    add_trust_flag(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    r = api.report(args.runs, out=args.out, title=args.title, trust_code=args.trust_code)
    print(f"wrote {r['html']} and {r['markdown']}")
    return 0
