"""Which model a verb means, answered once: every verb that takes a model (evaluate, attack, inspect, map,
ensemble, export, predict, serve, transfer's `init_from`) passes what the user gave through `locate`.

    src = locate("runs/seed-cnn-mnist-s0")      # a run directory, RUN/best.safetensors, a Run object ...
    src.checkpoint                              # runs/seed-cnn-mnist-s0/best.safetensors: what is loaded
    src.run                                     # RunDir of the run it belongs to (None: a file on its own)
    src.output_dir(out, "eval")                 # --out, else RUN/eval/ (FILE-eval/ beside a lone file)

What may be given: a run directory (its best weights), a checkpoint file (a run's best or last, or one
on its own), an ensemble file, a `Run` object (`mnistlab.train` returns them: they are path-like), or
`default`: the packaged model (`predict`'s and the draw page's), its outputs in the current folder
(`default-shift/`, ...), never inside the installed package.
A group of seed runs (`train --seeds`, a `Runs` object) is several models: a verb that takes one says
which to pass instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .. import rundir
from ..errors import MnistlabError
from ..rundir import RunDir
from .default import DEFAULT_MODEL

PACKAGED = "default"  # the name that means the packaged model, where no file or folder has that name


@dataclass(frozen=True)
class Located:
    """A model reference resolved: the file to load, its run (if any), and where outputs go."""

    given: str  # what the user passed, for messages
    checkpoint: Path  # the file a predictor loads
    run: RunDir | None  # the run directory it belongs to
    beside: Path | None = None  # where a lone checkpoint's outputs go (default: its own folder)

    def output_dir(self, out: str | os.PathLike | None, *parts: str) -> Path:
        """`out` if given (the user's folder), else RUN/<parts> (or <FILE stem>-<parts> beside a lone
        checkpoint), created; a folder chosen inside a run may not be a symbolic link (rundir.output_dir)."""
        if out:
            return rundir.output_dir(out)
        if self.run is not None:
            return rundir.output_dir(self.run.path.joinpath(*parts), self.run.path)
        base = self.beside or self.checkpoint.parent
        return rundir.output_dir(base.joinpath(f"{self.checkpoint.stem}-{parts[0]}", *parts[1:]), base)


def locate(model: str | os.PathLike) -> Located:
    """What `model` (see the module docstring) stands for; a clear error for what cannot be loaded."""
    try:
        path = Path(os.fspath(model))
    except TypeError:
        raise MnistlabError(f"model {model!r}: expected a run directory, a checkpoint or an ensemble file "
                            "(a path, or a Run that mnistlab.train returned)") from None
    if path.is_dir():
        if RunDir.is_run(path):
            run = RunDir(path)
            if not run.best.is_file():
                raise MnistlabError(f"run directory {path} has no {RunDir.BEST}",
                                    hint="the run has not finished an epoch: train (or resume) it first")
            return Located(str(model), run.best, run)
        members = RunDir.runs_in(path)  # a group of runs, or one clear error for any other folder
        names = ", ".join(m.path.name for m in members[:4]) + (" ..." if len(members) > 4 else "")
        raise MnistlabError(f"{path} is a group of {len(members)} runs ({names}), not one model",
                            hint=f"pass one of them (e.g. {members[0].path}; from Python runs.runs[0]), or make "
                            f"them one model: mnistlab ensemble {path} --out {path.name}-ensemble.safetensors")
    if not path.exists() and str(model) == PACKAGED:
        return Located(PACKAGED, DEFAULT_MODEL, None, beside=Path("."))
    if not path.exists():
        raise MnistlabError(f"{path} does not exist",
                            hint=f"pass a run directory, a .safetensors checkpoint, an ensemble file or {PACKAGED!r} "
                            "(the packaged model)")
    return Located(str(model), path, RunDir.holding(path))


def locate_each(models) -> list[Located]:
    """Several models (an ensemble's members): each as `locate` takes it, and a group of runs (or a `Runs`
    object) as every run in it."""
    if isinstance(models, (str, os.PathLike)):
        models = [models]
    found = []
    for model in models:
        path = Path(os.fspath(model))
        if path.is_dir() and not RunDir.is_run(path):
            found += [locate(run.path) for run in RunDir.runs_in(path)]
        else:
            found.append(locate(model))
    if not found:
        raise MnistlabError("no model given", hint="pass run directories, groups of runs or checkpoints")
    return found
