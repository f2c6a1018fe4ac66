"""The fuzz tests' own tools (tests/test_fuzz_*.py, one file per surface, and the fuzz cases of
test_hostile_input and test_classical): the budget per surface, the case counter the session summary
prints, seeds mutated byte by byte, and random JSON. Property everywhere: every input ends in a result
or a MnistlabError (a RequestError, on the server), never another exception; a hang or a runaway
allocation fails the run too (pytest-timeout, and the size caps the parsers enforce).

Inputs are mutations of valid seeds (bytes flipped, set to boundary values, inserted, deleted,
duplicated, cut) and structure-aware cases (IDX headers with random dimensions, JSON documents and
metadata trees with random values). Hypothesis is derandomised, so CI runs the same cases every
time, and a larger budget explores further. $MNISTLAB_FUZZ_EXAMPLES sets the examples per surface
(default below); the session summary prints the total.
"""

from __future__ import annotations

import io
import os
import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

from mnistlab import MnistlabError

EXAMPLES = int(os.environ.get("MNISTLAB_FUZZ_EXAMPLES", "6000"))
CASES: dict[str, int] = {}  # surface -> cases run, for the session summary


def fuzz(share: float = 1.0):
    """Hypothesis settings for one surface: `share` of EXAMPLES cases, derandomised, no deadline."""
    return settings(max_examples=max(10, int(EXAMPLES * share)), deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def case(surface: str) -> None:
    """Count one generated case of `surface` (the session summary prints the totals)."""
    CASES[surface] = CASES.get(surface, 0) + 1


def expect_clean(fn, *args, **kwargs):
    """Run a parser: a result, or MnistlabError; anything else fails the test (and hypothesis shrinks it)."""
    try:
        return fn(*args, **kwargs)
    except MnistlabError:
        return None


EDITS = ("flip", "set", "insert", "delete", "duplicate", "cut")


def mutate(data: bytes, rng: random.Random, max_ops: int) -> bytes:
    """`data` with up to `max_ops` random edits (bytes flipped, set to boundary values, inserted,
    deleted, duplicated, or the tail cut), chosen by `rng`."""
    data = bytearray(data)
    for _ in range(rng.randint(0, max_ops)):
        op = rng.choice(EDITS)
        i = rng.randint(0, max(0, len(data) - 1))
        if op == "flip" and data:
            data[i] ^= 1 << rng.randint(0, 7)
        elif op == "set" and data:
            width = rng.choice((1, 2, 4))
            data[i:i + width] = bytes([rng.choice((0, 1, 0x7F, 0x80, 0xFF))]) * width
        elif op == "insert":
            data[i:i] = rng.randbytes(rng.randint(0, 16))
        elif op == "delete":
            del data[i:i + rng.randint(1, 16)]
        elif op == "duplicate":
            data[i:i] = data[i:i + rng.randint(1, 64)]
        elif op == "cut":
            del data[i:]
    return bytes(data)


def mutated(seeds: list[bytes], max_ops: int = 6):
    """One of `seeds` with up to `max_ops` random edits. Hypothesis draws the seed's index and one
    integer that seeds the edits (a draw per edit costs ~10x more per case than the parsers under
    test); a failure prints the mutated bytes themselves, and the same integer gives the same bytes."""
    return st.builds(lambda which, key: mutate(seeds[which], random.Random(key), max_ops),
                     st.integers(0, len(seeds) - 1), st.integers(0, 2**64 - 1))



SCALARS = (None, True, False, 0, 1, -1, 255, 256, 2**31, -2**40, 10**30, 0.5, -0.0, 1e308, float("nan"), float("inf"),
           "", "a", "0", "mnist", "\u00fc", "\x00", "../x")


def random_text(rng: random.Random, max_size: int) -> str:
    return "".join(chr(rng.choice((rng.randint(32, 126), rng.randint(0, 0x2FF)))) for _ in range(rng.randint(0, max_size)))


def random_scalar(rng: random.Random):
    kind = rng.randint(0, 4)
    if kind == 0:
        return rng.choice(SCALARS)
    if kind == 1:
        return rng.randint(-2**40, 2**40)
    if kind == 2:
        return rng.uniform(-1e6, 1e6) * 10.0 ** rng.randint(-30, 30)
    if kind == 3:
        return random_text(rng, 8)
    return rng.random() < 0.5


def random_json(rng: random.Random, leaves: int = 10, depth: int = 0):
    """A JSON value: a scalar, or lists and objects of them nested up to 3 deep (about `leaves` leaves)."""
    if depth < 3 and leaves > 1 and rng.random() < 0.4:
        n = rng.randint(0, 4)
        if rng.random() < 0.5:
            return [random_json(rng, leaves // max(n, 1), depth + 1) for _ in range(n)]
        return {random_text(rng, 6): random_json(rng, leaves // max(n, 1), depth + 1) for _ in range(n)}
    return random_scalar(rng)


def seeded(generate):
    """A strategy of `generate(random.Random(key))` for one drawn integer key (see `mutated`)."""
    return st.integers(0, 2**64 - 1).map(lambda key: generate(random.Random(key)))


JSON_VALUES = seeded(random_json)  # any JSON value, nested lists and objects included


# valid pictures of every format and mode predict reads: the seeds of the image and request surfaces
def _image_seeds() -> list[bytes]:
    seeds = []
    for fmt, mode in (("PNG", "L"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "1"), ("JPEG", "RGB"), ("GIF", "P"),
                      ("BMP", "RGB"), ("WEBP", "RGB"), ("PNG", "I;16")):
        img = Image.new(mode, (40, 32))
        if mode != "I;16":
            img.paste(Image.new(mode, (12, 20), 255 if mode in ("L", "1", "P") else (255,) * len(mode)), (14, 6))
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        seeds.append(buf.getvalue())
    return seeds


IMAGE_SEEDS = _image_seeds()
