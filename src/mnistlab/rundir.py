"""Run directories, the unit of results: every file a run writes is named here, and only here.

    runs/seed-cnn-mnist-s0/
      config.json        the resolved TrainConfig
      log.jsonl          a header (versions, hardware, argv), then one line per epoch
      last.safetensors   the full training state, for --resume (+ last.json, its metadata for people)
      best.safetensors   the weights with the best validation accuracy (+ best.json)
      summary.json       the final numbers: validation, the test set (touched once), seeds, timings
      eval/              what `mnistlab evaluate` writes

A group of seed runs (`train --seeds`) is a directory of run directories with its own summary.json.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from . import atomic
from .errors import MnistlabError


class RunDir:
    """One run directory (see the module docstring)."""

    CONFIG, LOG, LAST, BEST, SUMMARY, EVAL = ("config.json", "log.jsonl", "last.safetensors", "best.safetensors",
                                              "summary.json", "eval")
    OUTPUTS = "outputs.safetensors"  # the kept weights' probabilities on validation and test (save_outputs)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    config = property(lambda self: self.path / self.CONFIG)
    log = property(lambda self: self.path / self.LOG)
    last = property(lambda self: self.path / self.LAST)
    best = property(lambda self: self.path / self.BEST)
    summary = property(lambda self: self.path / self.SUMMARY)
    eval_dir = property(lambda self: self.path / self.EVAL)
    outputs = property(lambda self: self.path / self.OUTPUTS)

    @classmethod
    def is_run(cls, path: str | os.PathLike) -> bool:
        return (Path(path) / cls.CONFIG).is_file()

    @classmethod
    def holding(cls, checkpoint: str | os.PathLike) -> RunDir | None:
        """The run directory a checkpoint file belongs to (its best or last weights), if it is one."""
        path = Path(checkpoint)
        return cls(path.parent) if path.name in (cls.BEST, cls.LAST) and cls.is_run(path.parent) else None

    @classmethod
    def runs_in(cls, path: str | os.PathLike) -> list[RunDir]:
        """The runs a path stands for: itself, or the runs of a group directory (`train --seeds`)."""
        path = Path(path)
        if cls.is_run(path):
            return [cls(path)]
        runs = sorted(cls(p) for p in path.iterdir() if cls.is_run(p)) if path.is_dir() else []
        if not runs:
            raise MnistlabError(f"{path} is neither a run directory nor a group of runs (no {cls.CONFIG} inside)",
                                hint="pass the directories `mnistlab train` printed")
        return runs

    def __lt__(self, other: RunDir) -> bool:
        return self.path < other.path

    # --- reading ---

    def read_json(self, name: str) -> dict | None:
        """A JSON file of the run, None if absent; a clear error if damaged."""
        path = self.path / name
        if not path.is_file():
            return None
        try:
            value = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise MnistlabError(f"{path}: not valid JSON ({exc})", hint="the run's files are damaged") from None
        if not isinstance(value, dict):
            raise MnistlabError(f"{path}: expected a JSON object")
        return value

    def read_config(self):
        """The run's TrainConfig, checked like any other config."""
        from .training.config import resolve

        values = self.read_json(self.CONFIG)
        if values is None:
            raise MnistlabError(f"{self.path} is not a run directory (no {self.CONFIG})",
                                hint="pass the directory `mnistlab train` printed, e.g. runs/seed-cnn-mnist-s0")
        return resolve(None, values, source=str(self.config))

    def read_summary(self) -> dict | None:
        return self.read_json(self.SUMMARY)

    def read_log(self) -> tuple[list[dict], int]:
        """(the log's readable lines, how many damaged lines were skipped).

        A kill can cut the last line short; that line, or any other that does not parse, is skipped
        rather than failing the command that reads the log.
        """
        rows, damaged = [], 0
        if not self.log.is_file():
            return rows, damaged
        for line in self.log.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                damaged += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                damaged += 1
        return rows, damaged

    def epochs(self) -> list[dict]:
        """The per-epoch rows of the log."""
        return [r for r in self.read_log()[0] if isinstance(r.get("epoch"), int) and "train_loss" in r]

    # --- writing (only rank 0 of a run writes) ---

    def write_json(self, name: str, value: dict) -> None:
        atomic.write_text(self.path / name, json.dumps(value, indent=2))

    def start_log(self, header: dict) -> None:
        atomic.write_text(self.log, json.dumps({"event": "start", **header}) + "\n")

    def append_log(self, row: dict) -> None:
        with open(self.log, "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_log(self, last_epoch: int, argv: list[str]) -> None:
        """Keep what the log says up to `last_epoch` (a kill can fall between a log line and its
        checkpoint, or cut a line short), then note the resumption."""
        rows, damaged = self.read_log()
        kept = [r for r in rows if not isinstance(r.get("epoch"), int) or r["epoch"] <= last_epoch]
        kept.append({"event": "resume", "after_epoch": last_epoch, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "argv": argv, "damaged_lines_dropped": damaged})
        atomic.write_text(self.log, "".join(json.dumps(r) + "\n" for r in kept))


def name_for(cfg) -> str:
    """A run's directory name: its own, or <recipe or model>-<dataset>-s<seed>."""
    return cfg.name or f"{cfg.recipe or cfg.model}-{cfg.dataset}-s{cfg.seed}"


def new(cfg) -> RunDir:
    """A fresh run directory (not yet created); never an existing one (a default name gets -2, -3...)."""
    base = Path(cfg.out) / name_for(cfg)
    if cfg.name:
        if base.exists():
            raise MnistlabError(f"run directory {base} already exists",
                                hint=f"resume it with `mnistlab train --resume {base}`, or choose another --name")
        return RunDir(base)
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return RunDir(candidate)
