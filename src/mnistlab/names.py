"""Names are names: a run, study or output name is one path component, printable, of bounded length,
and every path built from one stays under its parent. A name comes from a flag, a recipe, a space
or a Python argument; a hostile one ("../../x", "/etc", 300 characters) is an error, not a write
somewhere else."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import MnistlabError

MAX_NAME = 120  # characters (and at most 255 bytes in UTF-8, what file systems allow)


def short(value: str) -> str:
    """What a default run name takes of a model or dataset setting: a zoo name as it is, your own model
    `path/to/nets.py:MyNet` as MyNet (an object's `@id` dropped), a folder's path as its last part."""
    text = str(value).rsplit(":", 1)[-1].split("@", 1)[0] if ":" in str(value) else str(value)
    text = Path(text.rstrip("/\\")).name or text
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:60] or "model"


def check_name(value: str, what: str) -> str:
    """`value` if it can name one directory or file inside another; a clear error otherwise."""
    problem = None
    if not isinstance(value, str) or not value:
        problem = "an empty name"
    elif len(value) > MAX_NAME or len(value.encode("utf-8", "surrogatepass")) > 255:
        problem = f"{len(value)} characters (at most {MAX_NAME})"
    elif value in (".", "..") or "/" in value or "\\" in value or (os.altsep and os.altsep in value):
        problem = "a path, not a name (no '/', '\\', '.' or '..')"
    elif not value.isprintable() or value != value.strip():
        problem = "unprintable characters or spaces at its ends"
    if problem:
        raise MnistlabError(f"{what} {str(value)[:60]!r}: {problem}",
                            hint="use a short name of letters, digits, '-', '_' and '.' (e.g. my-run-1)")
    return value


def inside(parent: str | os.PathLike, name: str, what: str) -> Path:
    """`parent / name`, the name checked and the result checked to stay under `parent` once resolved."""
    check_name(name, what)
    base = Path(parent)
    path = base / name
    if not path.resolve().is_relative_to(base.resolve()):  # a symlink named like a directory, say
        raise MnistlabError(f"{what} {name!r}: {path} resolves outside {base}", hint="choose another name")
    return path
