"""`mnistlab bench`: its parser, and a handler that runs the suites (`mnistlab.bench.bench`)."""

from __future__ import annotations

from ..bench import bench


def add(verbs) -> None:
    p = verbs.add_parser("bench", help="benchmarks: print a table and write JSON",
                         description="Run benchmark suites in one process; print a table and write JSON.")
    p.add_argument("suites", nargs="*", help="suites to run (default: all); see `mnistlab.bench.SUITES`")
    p.add_argument("--out", default="bench-results", help="directory for the JSON results (default: bench-results)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke run")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    bench(args.suites or None, out_dir=args.out, quick=args.quick)
    return 0
