"""Every file mnistlab reads back goes through a schema: JSON and TOML of bounded size and depth,
each field the type and range its readers expect; one line naming the file and field otherwise.

    SUMMARY = obj({"test_acc": number(0, 1, optional=True), "seed": integer(optional=True)})
    summary = read_json(path, SUMMARY, hint="the run's files are damaged")

A spec checks the fields it names and leaves the others alone (a newer mnistlab may add fields);
readers use only the fields their spec names. Numbers are finite (JSON's NaN and Infinity are
refused as they are parsed); strings and lists have length caps; documents have a size cap and
a nesting depth cap, checked before and while they are parsed.
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MnistlabError
from .names import did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_JSON_BYTES = 64 << 20  # a run's summary or a study's plan is a few KB; an evaluation ~100 KB
MAX_TOML_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_CONTAINERS = 2_000_000  # objects and arrays in one document (a checkpoint's metadata has a few thousand)


@dataclass(frozen=True)
class Spec:
    kind: str  # number | integer | text | boolean | list | object | choice | any
    optional: bool = False  # None (or absent) allowed
    lo: float = -math.inf
    hi: float = math.inf
    max_len: int = 100_000
    item: Spec | None = None
    fields: dict = field(default_factory=dict)
    choices: tuple = ()


def number(lo=-math.inf, hi=math.inf, *, optional=False) -> Spec:
    return Spec("number", optional, lo, hi)


def integer(lo=-(1 << 62), hi=1 << 62, *, optional=False) -> Spec:
    return Spec("integer", optional, lo, hi)


def text(max_len: int = 10_000, *, optional=False) -> Spec:
    return Spec("text", optional, max_len=max_len)


def boolean(*, optional=False) -> Spec:
    return Spec("boolean", optional)


def listof(item: Spec, max_len: int = 1_000_000, *, optional=False) -> Spec:
    return Spec("list", optional, item=item, max_len=max_len)


def obj(fields: dict | None = None, *, optional=False) -> Spec:
    return Spec("object", optional, fields=dict(fields or {}))


def choice(*values, optional=False) -> Spec:
    return Spec("choice", optional, choices=values)


ANY = Spec("any", True)


def _describe(spec: Spec) -> str:
    base = {"number": "a number", "integer": "an integer", "text": f"text of at most {spec.max_len} characters",
            "boolean": "true or false", "list": "a list", "object": "an object", "any": "anything",
            "choice": " | ".join(map(str, spec.choices))}[spec.kind]
    if spec.kind in ("number", "integer") and (spec.lo > -math.inf or spec.hi < math.inf):
        base += f" from {spec.lo:g} to {spec.hi:g}"
    return base + (" or null" if spec.optional else "")


def check(value: Any, spec: Spec, where: str, path: str = "") -> Any:
    """`value` if it fits `spec`; else a MnistlabError naming `where` and the field's path."""
    if value is None and spec.optional or spec.kind == "any":
        return value
    ok = {"number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
          and spec.lo <= v <= spec.hi,
          "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) and spec.lo <= v <= spec.hi,
          "text": lambda v: isinstance(v, str) and len(v) <= spec.max_len,
          "boolean": lambda v: isinstance(v, bool),
          "list": lambda v: isinstance(v, list) and len(v) <= spec.max_len,
          "object": lambda v: isinstance(v, dict),
          "choice": lambda v: isinstance(v, (str, int, float, bool)) and v in spec.choices}[spec.kind](value)
    if not ok:
        shown = json.dumps(value, default=str)[:60] if value is not None else "nothing"
        raise MnistlabError(f"{where}: field {path or '(the document)'!r}: expected {_describe(spec)} "
                            f"(found {shown})")
    if spec.kind == "list" and spec.item is not None:
        for i, item in enumerate(value):
            check(item, spec.item, where, f"{path}[{i}]")
    if spec.kind == "object":
        for key, sub in spec.fields.items():
            check(value.get(key), sub, where, f"{path}.{key}" if path else key)
    return value


def _depth(value, limit: int) -> int:
    """The nesting depth of a parsed document, stopping at `limit` + 1 (iteratively: no recursion)."""
    stack, deepest = [(value, 1)], 0
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(data: bytes | str, where: str, *, hint: str | None = None, max_depth: int = MAX_DEPTH):
    """A JSON document of bounded depth and size (at most MAX_CONTAINERS objects and arrays: 23 million
    empty ones in 69 MB took 3.5 GB to parse) with no NaN or Infinity; one clear error otherwise."""
    opened = data.count(b"{") + data.count(b"[") if isinstance(data, bytes) else data.count("{") + data.count("[")
    if opened > MAX_CONTAINERS:  # counted in strings too: an upper bound, taken before any parsing
        raise MnistlabError(f"{where}: more than {MAX_CONTAINERS:,} objects and arrays", hint=hint)
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError, TypeError) as exc:
        raise MnistlabError(f"{where}: not valid JSON ({str(exc)[:120]})", hint=hint) from None
    if _depth(value, max_depth) > max_depth:
        raise MnistlabError(f"{where}: nested more than {max_depth} levels deep", hint=hint)
    return value


def read_bytes(path: str | Path, max_bytes: int, *, hint: str | None = None) -> bytes:
    """A regular file's bytes, refusing one larger than `max_bytes` before reading it, and anything that
    is not a regular file (a named pipe in a run someone sent would block the reader for ever): opened
    without blocking, then checked."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise MnistlabError(f"{path}: cannot read it ({exc.strerror or exc})", hint=hint) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MnistlabError(f"{path}: not a regular file (a folder, a pipe or a device), where a file was expected",
                                hint=hint)
        if st.st_size > max_bytes:
            raise MnistlabError(f"{path}: {st.st_size:,} bytes, more than the {max_bytes:,} such a file may have",
                                hint=hint)
        try:
            return f.read(max_bytes + 1)[:max_bytes]
        except OSError as exc:
            raise MnistlabError(f"{path}: cannot read it ({exc.strerror or exc})", hint=hint) from None


def read_json(path: str | Path, spec: Spec | None = None, *, hint: str | None = None,
              max_bytes: int = MAX_JSON_BYTES):
    """A JSON file checked against `spec` (an object by default)."""
    value = parse_json(read_bytes(path, max_bytes, hint=hint), str(path), hint=hint)
    return check(value, spec or obj(), str(path))


def parse_toml(data: bytes, where: str, *, max_depth: int = MAX_DEPTH) -> dict:
    """A TOML document: UTF-8, of bounded size and depth."""
    if len(data) > MAX_TOML_BYTES:
        raise MnistlabError(f"{where}: {len(data):,} bytes, more than the {MAX_TOML_BYTES:,} a TOML file may have")
    try:
        text_ = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MnistlabError(f"{where}: not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})") from None
    # tomllib parses nested arrays recursively: bound the brackets first, so a deep one is an error, not a crash
    depth = worst = 0
    for ch in text_:
        if ch in "[{":
            depth += 1
            worst = max(worst, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    if worst > max_depth + 1:
        raise MnistlabError(f"{where}: brackets nested more than {max_depth} levels deep")
    try:
        value = tomllib.loads(text_)
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        raise MnistlabError(f"{where}: invalid TOML ({str(exc)[:160]})") from None
    if _depth(value, max_depth) > max_depth:
        raise MnistlabError(f"{where}: nested more than {max_depth} levels deep")
    return value


def read_toml(path: str | Path) -> dict:
    return parse_toml(read_bytes(path, MAX_TOML_BYTES), str(path))


def named_toml(name: str, package: str, what: str) -> tuple[dict, str, Path | None]:
    """(values, where they came from, the file if one was named) of a packaged TOML by name (a recipe,
    a search space: `package`/NAME.toml) or a TOML file by path (anything ending in .toml or with a
    '/'); checked as every TOML is (size, encoding, depth)."""
    from importlib import resources

    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise MnistlabError(f"{what} file {name} does not exist")
        return read_toml(path), str(path), path
    candidate = resources.files(package) / f"{name}.toml"
    if not candidate.is_file():
        known = sorted(p.name[:-5] for p in resources.files(package).iterdir() if p.name.endswith(".toml"))
        raise MnistlabError(f"unknown {what} {name!r}: expected one of {', '.join(known)} or a .toml file",
                            hint=did_you_mean(name, known) + f"`mnistlab {what}s` lists them" if what == "recipe"
                            else did_you_mean(name, known) or None)
    return parse_toml(candidate.read_bytes(), f"{name} (packaged)"), f"{name} (packaged)", None
