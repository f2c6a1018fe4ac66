"""Text tables for a terminal (what the CLI and the benchmarks print), and text from outside made safe
to print or to put in a spreadsheet: a class or model name comes from files anyone may have written."""

from __future__ import annotations

import re
import textwrap

# ESC sequences (CSI with its parameters, OSC up to its terminator, two-character ones), then any C0/C1
# control character but newline and tab: what a terminal would act on instead of showing
# ... and the invisible bidirectional controls with which code reads one way and runs another (Trojan
# Source, CVE-2021-42574): U+061C, U+200E-200F, U+202A-202E, U+2066-2069
_CONTROL = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
                      "|[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as the start of a formula


def printable(text) -> str:
    """`text` with terminal control sequences, control characters and bidirectional controls removed
    (each shown as ?)."""
    return _CONTROL.sub("?", str(text))


def csv_cell(value):
    """A value for a CSV cell a spreadsheet will open: text that would start a formula gets a leading
    quote (OWASP's advice), so it shows as the text it is; numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else printable(value)


def format_table(rows: list[list], header: list[str], width: int | None = None) -> str:
    """Columns padded to their widest cell, a rule under the header. With `width` (a terminal's), a last
    column that would run past it is wrapped onto lines of its own beneath the row's other cells."""
    table = [[cell(x) for x in row] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *table)]
    room = None if width is None else width - sum(widths[:-1]) - 2 * (len(widths) - 1)
    if room is not None and widths[-1] > room >= 30:
        wrapped = []
        for row in table:
            for i, piece in enumerate(textwrap.wrap(row[-1], room) or [""]):
                wrapped.append((row[:-1] if i == 0 else [""] * (len(row) - 1)) + [piece])
        table, widths[-1] = wrapped, max([room, len(header[-1])])
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
