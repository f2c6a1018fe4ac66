"""Names are names: a run, study or output name is one path component, printable, of bounded length,
and every path built from one stays under its parent. A name comes from a flag, a recipe, a space
or a Python argument; a hostile one ("../../x", "/etc", 300 characters) is an error, not a write
somewhere else."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from .errors import MnistlabError

MAX_NAME = 120  # characters (and at most 255 bytes in UTF-8, what file systems allow)
MAX_CLASSES = 1000  # classes a dataset (and so a checkpoint) may have
MAX_LABEL = 200  # characters of a class name, and of a dataset's or model's name in a checkpoint


def short(value: str) -> str:
    """What a default run name takes of a model or dataset setting: a zoo name as it is, your own model
    `path/to/nets.py:MyNet` as MyNet (an object's `@id` dropped), a folder's path as its last part."""
    text = str(value).rsplit(":", 1)[-1].split("@", 1)[0] if ":" in str(value) else str(value)
    text = Path(text.rstrip("/\\")).name or text
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:60] or "model"


def nearest(value, choices, n: int = 1) -> list[str]:
    """The choices closest to a mistyped `value` (a model, recipe, dataset, verb, setting), case aside:
    `Fashion-MNIST` finds `fashion-mnist`, `kears-cnn` finds `keras-cnn`."""
    choices = [str(c) for c in choices]
    text = str(value)
    same_case = [c for c in choices if c.lower() == text.lower()]
    if same_case:
        return same_case[:n]
    lowered = {c.lower(): c for c in choices}
    return [lowered[c] for c in difflib.get_close_matches(text.lower(), list(lowered), n=n, cutoff=0.6)]


def did_you_mean(value, choices, n: int = 1) -> str:
    """"did you mean 'x'? " for the nearest choices, or "" (the start of a hint)."""
    close = nearest(value, choices, n)
    return f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""


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


def label_problem(value) -> str | None:
    """What is wrong with a class name (it reaches pages, CSV files, terminals and folders), or None:
    1 to MAX_LABEL printable characters (no newline, no control character), valid UTF-8."""
    if not isinstance(value, str) or not value:
        return "an empty name"
    if len(value) > MAX_LABEL:
        return f"{len(value)} characters (at most {MAX_LABEL})"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not UTF-8 text (a file name in another encoding?)"
    if not value.isprintable():
        return "a control character or line break"
    return None


def check_labels(labels, where: str) -> tuple[str, ...]:
    """Class names as every verb can show them: 2 to MAX_CLASSES distinct names, each `label_problem`-free."""
    labels = tuple(labels)
    if not 2 <= len(labels) <= MAX_CLASSES:
        raise MnistlabError(f"{where}: {len(labels)} classes, expected 2 to {MAX_CLASSES}")
    for label in labels:
        problem = label_problem(label)
        if problem:
            raise MnistlabError(f"{where}: class name {str(label)[:60]!r}: {problem}",
                                hint="rename it: class names are shown on pages, in CSV files and on terminals")
    if len(set(labels)) != len(labels):
        raise MnistlabError(f"{where}: class names repeat ({', '.join(sorted({x for x in labels if labels.count(x) > 1})[:5])})")
    return labels
