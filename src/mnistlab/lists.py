"""Comma-separated lists and seed ranges, as flags and Python arguments give them: '0-4', '1,3,7',
'0.1,0.3', 'fast,mlp'. One parser, one kind of error naming the flag."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import MnistlabError

MAX_ITEMS = 1000


def items(value: str | Iterable, flag: str, kind: Callable = str, expected: str = "a comma-separated list") -> list:
    """`value` ('a,b' or already a list) as a list of `kind`; empty items dropped; an error naming `flag`."""
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)
    try:
        out = [kind(p) for p in parts if not (isinstance(p, str) and not p)]
    except (TypeError, ValueError):
        raise MnistlabError(f"{flag} {value!r}: expected {expected}") from None
    if len(out) > MAX_ITEMS:
        raise MnistlabError(f"{flag}: {len(out)} items, at most {MAX_ITEMS}")
    return out


def seeds(value: str | int | Iterable[int], flag: str = "--seeds") -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '1,3,7' -> [1, 3, 7]; 5 -> [5]; distinct, at most MAX_ITEMS."""
    if isinstance(value, bool):
        raise MnistlabError(f"{flag} {value!r}: expected a range like 0-4 or a list like 0,1,2")
    if isinstance(value, int):
        value = [value]
    out: list[int] = []
    try:
        for part in (value.split(",") if isinstance(value, str) else value):
            text = str(part).strip()
            if "-" in text[1:]:
                a, b = text[0] + text[1:].split("-", 1)[0], text[1:].split("-", 1)[1]
                lo, hi = int(a), int(b)
                if hi - lo > MAX_ITEMS:
                    raise ValueError
                out += list(range(lo, hi + 1))
            elif text:
                if isinstance(part, bool):
                    raise ValueError
                out.append(int(text))
    except (TypeError, ValueError):
        raise MnistlabError(f"{flag} {value!r}: expected a range like 0-4 or a list like 0,1,2") from None
    if not out or len(set(out)) != len(out) or len(out) > MAX_ITEMS:
        raise MnistlabError(f"{flag} {value!r}: expected 1 to {MAX_ITEMS} distinct seeds")
    return out


@dataclass(frozen=True)
class OneOf:
    """A parameter's choices read from where they are kept (a registry) each time they are asked for,
    not copied: `method: Annotated[str, OneOf(list_attacks)]`. The command line's choices come from it,
    so an entry registered later (an attack of one's own) is a choice too."""

    options: Callable[[], Iterable[str]]

    def __call__(self) -> list[str]:
        return list(self.options())
