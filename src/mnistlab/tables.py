"""Text tables for a terminal: what the CLI and the benchmarks print."""

from __future__ import annotations


def cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_table(rows: list[list], header: list[str]) -> str:
    """Columns padded to their widest cell, a rule under the header."""
    table = [[cell(x) for x in row] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *table)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines)


def print_table(rows: list[list], header: list[str]) -> None:
    print(format_table(rows, header))


def dict_rows(rows: list[dict]) -> tuple[list[list], list[str]]:
    """(rows, header) of the scalar columns of dicts (lists and nested values stay out)."""
    keys = []
    for r in rows:
        keys += [k for k, v in r.items() if k != "name" and k not in keys and not isinstance(v, (list, dict))]
    header = ["name", *keys]
    return [[r.get(k, "") for k in header] for r in rows], header
