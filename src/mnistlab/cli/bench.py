"""`mnistlab bench`: built, as every verb is, from `mnistlab.bench.bench`'s signature and docstring; the
suites print their tables as they finish."""

from __future__ import annotations

from ..bench import bench
from .verbs import Verb, add_verb, printed_as_it_ran


def add(verbs) -> None:
    add_verb(verbs, Verb("bench", bench, positional=("suites",), show=printed_as_it_ran))
