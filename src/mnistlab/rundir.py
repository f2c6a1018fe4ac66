"""Run directories, the unit of results: every file a run writes is named here, and only here.

    runs/seed-cnn-mnist-s0/
      config.json        the resolved TrainConfig
      log.jsonl          a header (versions, hardware, argv), then one line per epoch
      metrics.csv        the same epochs as a table (Lightning's CSVLogger convention: a row per epoch)
      last.safetensors   the full training state, for --resume (+ last.json, its metadata for people)
      best.safetensors   the weights with the best validation accuracy (+ best.json)
      summary.json       the final numbers: validation, the test set (touched once), seeds, timings
      outputs.safetensors the kept weights' probabilities on validation and test (save_outputs)
      variant.json       a dataset variant's training examples, given labels and flipped positions, and
                         what the label cleaning removed (imbalance, label_noise, clean_labels...)
      eval/              what `mnistlab evaluate` (test.json, val.json, PNGs) and `mnistlab attack`
                         (attack-METHOD-NORM.json, PNGs) write
      inspect/           what `mnistlab inspect` writes (inspect.json, PNGs)
      audit/             what `mnistlab audit RUN` writes of the run's training examples
      maps/M-F-S/        what `mnistlab map` writes (map.json, map.png, map.html, coords)
      shift/             what `mnistlab shift` writes (shift-SPLIT.json, curves, galleries, shift-SPLIT.html)
      tensorboard/       TensorBoard events, when asked for (tensorboard=true): per epoch the losses,
                         accuracies, learning rate and speed, and the validation confusion matrix

A group of seed runs (`train --seeds`) is a directory of run directories with its own summary.json.

Every file read back goes through a schema (`mnistlab.schema`): a run directory may come from
anyone, and a damaged or hostile one ends in one line naming the file and the field.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from . import atomic, names, schema
from .errors import MnistlabError
from .schema import boolean, integer, listof, number, obj, text

DAMAGED = "the run's files are damaged or were altered: train (or evaluate) it again"
_ACC = number(0, 1, optional=True)
_HOLDOUT = obj({"count": integer(1), "seed": integer(), "stratified": boolean(), "sha256": text(64)}, optional=True)
# The fields of a run's summary.json that mnistlab's readers use (others pass through unread).
SUMMARY_SPEC = obj({
    "model": text(200), "params": integer(0, optional=True), "dataset": text(200), "dataset_hash": text(128, optional=True),
    "seed": integer(optional=True), "recipe": text(1000, optional=True), "epochs_run": integer(0, optional=True),
    "stopped_early": boolean(optional=True), "best_epoch": integer(0, optional=True), "val_acc": _ACC,
    "final_val_acc": _ACC, "test_acc": _ACC, "test_loss": number(optional=True), "test_errors": integer(0, optional=True),
    "test_evaluated": boolean(optional=True), "train_s": number(0, optional=True), "wall_s": number(0, optional=True),
    "device": text(100, optional=True), "holdout": _HOLDOUT,
    "precision": obj({"chosen": text(20), "requested": text(20, optional=True), "reason": text(optional=True)},
                     optional=True),
    "evaluation": obj({"batch_size": integer(1, 1 << 20, optional=True), "threads": integer(1, 4096, optional=True)},
                      optional=True),
    "labelled": obj({"per_class": integer(0), "count": integer(0), "seed": integer()}, optional=True),
    "variant": obj({"imbalance": text(200), "label_noise": text(4096), "labels_per_class": integer(0),
                    "seed": integer(), "count": integer(0), "class_counts": listof(integer(0), 1000),
                    "flipped": integer(0), "sha256": text(64)}, optional=True),
    "train_class_counts": listof(integer(0), 1000, optional=True),
    "test_balanced_acc": _ACC, "test_macro_f1": _ACC,
    "transfer": obj({"source": text(4096, optional=True), "source_model": text(200, optional=True),
                     "source_dataset": text(200, optional=True), "loaded": integer(0, optional=True),
                     "head": text(100, optional=True), "frozen": integer(0, optional=True),
                     "trainable_params": integer(0, optional=True)}, optional=True),
    "robust": obj({"attack": text(1000), "eps": number(0, 1e6, optional=True), "accuracy": number(0, 1),
                   "n": integer(0), "split": text(20), "clean_accuracy": number(0, 1),
                   "masking_checks": obj({"passed": boolean(optional=True)}, optional=True)}, optional=True),
})
_PER_CLASS = obj({"class": text(200), "precision": number(0, 1), "recall": number(0, 1), "f1": number(0, 1),
                  "support": integer(0)})
# eval/SPLIT.json, as `evaluate` writes it and `report` reads it
EVAL_SPEC = obj({
    "n": integer(0), "accuracy": number(0, 1), "errors": integer(0), "top2": _ACC, "cross_entropy": number(0),
    "ece": number(0, 1), "dataset": text(200), "dataset_hash": text(128), "macro_avg": obj({"f1": number(0, 1)}),
    "per_class": listof(_PER_CLASS, 1000), "pictures": obj(optional=True),
    "most_confused": listof(obj({"true": text(200), "predicted": text(200), "count": integer(0)}), 1000),
})
ATTACK_SPEC = obj({
    "method": text(50), "norm": text(10), "eps": listof(number(0, 1e6), 1000), "robust_accuracy": listof(number(0, 1), 1000),
    "n": integer(0), "split": text(20), "clean_accuracy": number(0, 1), "targeted": boolean(),
    "target": integer(0, 1000, optional=True), "masking_checks": obj({"passed": boolean(optional=True)}, optional=True),
    "pictures": obj(optional=True), "steps": integer(0, optional=True), "queries": integer(0, optional=True),
    "target_classes": integer(0, optional=True), "attacks": listof(text(50), 10, optional=True),
})
INSPECT_SPEC = obj({"split": text(20), "pictures": obj()})
EPOCH_SPEC = obj({"epoch": integer(0), "train_loss": number(), "train_acc": number(0, 1, optional=True),
                  "val_acc": _ACC, "val_loss": number(optional=True), "lr": number(optional=True),
                  "epoch_s": number(0, optional=True), "images_per_s": number(0, optional=True)})
MAP_SPEC = obj({"method": text(20), "features": text(50), "n": integer(0), "split": text(20), "seed": integer(),
                "separation_5nn": number(0, 1), "files": obj({"png": text(4096), "html": text(4096)})})


class RunDir:
    """One run directory (see the module docstring)."""

    CONFIG, LOG, LAST, BEST, SUMMARY, EVAL = ("config.json", "log.jsonl", "last.safetensors", "best.safetensors",
                                              "summary.json", "eval")
    OUTPUTS = "outputs.safetensors"  # the kept weights' probabilities on validation and test (save_outputs)
    VARIANT = "variant.json"  # a variant's examples, labels and flips; what clean_labels removed (setup.variant_file)
    INSPECT, INSPECT_FILE = "inspect", "inspect.json"
    AUDIT = "audit"  # `mnistlab audit RUN`: the label audit of the run's training examples
    MAPS, MAP_FILE = "maps", "map.json"
    SHIFT = "shift"  # `mnistlab shift`: shift/shift-SPLIT.json, the curves, the galleries, the page
    TENSORBOARD = "tensorboard"
    METRICS = "metrics.csv"  # the per-epoch history as CSV, beside log.jsonl
    METRICS_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_s", "images_per_s")
    OOD = "ood.safetensors"  # the not-a-digit model (models/ood.py), fitted on first use
    CODE = "code"  # copies of the user code the run used (model, optimizer, loss), to read and for trust_code
    ATTACK_PREFIX = "attack-"  # eval/attack-METHOD-NORM.json

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
    variant = property(lambda self: self.path / self.VARIANT)
    inspect_dir = property(lambda self: self.path / self.INSPECT)
    audit_dir = property(lambda self: self.path / self.AUDIT)
    maps_dir = property(lambda self: self.path / self.MAPS)
    shift_dir = property(lambda self: self.path / self.SHIFT)
    tensorboard_dir = property(lambda self: self.path / self.TENSORBOARD)
    metrics = property(lambda self: self.path / self.METRICS)
    code_dir = property(lambda self: self.path / self.CODE)

    def code_file(self, role: str, path: str) -> Path:
        """code/NAME.py: the copy of a source file the run used (`role`.py for code without a file)."""
        return self.code_file_in(self.code_dir, role, path)

    @staticmethod
    def code_file_in(code_dir: Path, role: str, path: str) -> Path:
        name = Path(path).name if path.endswith(".py") else f"{role}.py"
        return Path(code_dir) / name

    @classmethod
    def code_dir_of(cls, checkpoint: str | os.PathLike) -> Path | None:
        """The code/ folder of the run a checkpoint belongs to; None for a file outside a run."""
        run = cls.holding(checkpoint)
        return run.code_dir if run is not None else None

    def eval_file(self, name: str) -> Path:
        """eval/NAME.json: an evaluation (test, val, test-tta) of the run."""
        return self.eval_dir / f"{name}.json"

    def attack_file(self, method: str, norm: str) -> Path:
        return self.eval_dir / f"{self.ATTACK_PREFIX}{method}-{norm}.json"

    @staticmethod
    def map_name(method: str, features: str, split: str) -> str:
        return f"{method}-{features}-{split}"

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

    def read_json(self, name: str, spec=None) -> dict | None:
        """A JSON file of the run checked against `spec` (an object by default); None if absent."""
        path = self.path / name
        if not path.is_file():
            return None
        return schema.read_json(path, spec, hint=DAMAGED)

    def read_summary(self) -> dict | None:
        """summary.json, its fields checked (SUMMARY_SPEC); None before the run has finished."""
        return self.read_json(self.SUMMARY, SUMMARY_SPEC)

    def read_eval(self, name: str = "test") -> dict | None:
        """eval/NAME.json as `evaluate` wrote it, checked (EVAL_SPEC); None if not evaluated."""
        return self.read_json(f"{self.EVAL}/{name}.json", EVAL_SPEC)

    def attack_results(self) -> list[tuple[Path, dict]]:
        """Every `mnistlab attack` result in eval/, checked (ATTACK_SPEC); one that is not is left out."""
        found = []
        for file in sorted(self.eval_dir.glob(f"{self.ATTACK_PREFIX}*.json")):
            try:
                found.append((file, schema.read_json(file, ATTACK_SPEC)))
            except MnistlabError:
                continue  # not an attack result this version wrote: left out, not guessed at
        return found

    def read_inspect(self) -> dict | None:
        """inspect/inspect.json, if `mnistlab inspect` has been run on the run and wrote a readable one."""
        path = self.inspect_dir / self.INSPECT_FILE
        try:
            return schema.read_json(path, INSPECT_SPEC) if path.is_file() else None
        except MnistlabError:
            return None

    def read_maps(self) -> list[dict]:
        """The maps made of the run (maps/*/map.json), each checked; unreadable ones left out."""
        found = []
        for file in sorted(self.maps_dir.glob(f"*/{self.MAP_FILE}")):
            try:
                found.append(schema.read_json(file, MAP_SPEC))
            except MnistlabError:
                continue
        return found

    def read_outputs(self, split: str):
        """(probabilities, labels) of one split from outputs.safetensors, checked."""
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        file = self.outputs
        try:
            t = load_file(str(file))
            probs, labels = t[f"{split}_probs"], t[f"{split}_labels"]
        except (OSError, KeyError, RuntimeError, ValueError, SafetensorError) as exc:
            raise MnistlabError(f"{file}: cannot read the {split} outputs ({exc})",
                                hint="delete the file; the run that wrote it writes it again") from None
        if (probs.ndim != 2 or labels.shape != probs.shape[:1] or not probs.is_floating_point()
                or not torch.isfinite(probs).all() or labels.is_floating_point()
                or (labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < probs.shape[1])):
            raise MnistlabError(f"{file}: {split}_probs {tuple(probs.shape)} and {split}_labels "
                                f"{tuple(labels.shape)}: expected finite (N, classes) probabilities and N labels")
        return probs, labels.long()

    def read_log(self) -> tuple[list[dict], int]:
        """(the log's readable lines, how many damaged lines were skipped).

        A kill can cut the last line short; that line, or any other that does not parse, is skipped
        rather than failing the command that reads the log.
        """
        rows, damaged = [], 0
        if not self.log.is_file():
            return rows, damaged
        if self.log.stat().st_size > schema.MAX_JSON_BYTES:
            raise MnistlabError(f"{self.log}: larger than {schema.MAX_JSON_BYTES:,} bytes", hint=DAMAGED)
        for line in self.log.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                row = schema.parse_json(line, str(self.log))
            except MnistlabError:
                damaged += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                damaged += 1
        return rows, damaged

    def epochs(self) -> list[dict]:
        """The per-epoch rows of the log (their numbers checked: a row that is not one is left out)."""
        rows = []
        for r in self.read_log()[0]:
            try:
                schema.check(r, EPOCH_SPEC, str(self.log))
            except MnistlabError:
                continue
            if "train_loss" in r:
                rows.append(r)
        return rows

    # --- writing (only rank 0 of a run writes) ---

    def write_json(self, name: str, value: dict, indent: int | None = 2) -> None:
        atomic.write_text(self.path / name, json.dumps(value, indent=indent))

    def write_metrics(self, history: list[dict]) -> None:
        """metrics.csv: one row per epoch so far (written whole each epoch, atomically: a resumed run's
        earlier epochs stay), the columns METRICS_COLUMNS then any others the rows have; empty where an
        epoch has no value."""
        extra = sorted({k for row in history for k in row} - set(self.METRICS_COLUMNS))
        columns = [*self.METRICS_COLUMNS, *extra]
        lines = [",".join(columns)]
        for row in history:
            lines.append(",".join("" if row.get(c) is None else repr(row[c]) if isinstance(row[c], float) else
                                  str(row[c]) for c in columns))
        atomic.write_text(self.metrics, "\n".join(lines) + "\n")

    def write_code(self, records: dict[str, dict]) -> None:
        """Copy each recorded source (one file once, however many roles it fills) into code/."""
        for role, record in records.items():
            if record["source"]:
                self.code_dir.mkdir(exist_ok=True)
                atomic.write_text(self.code_file(role, record["path"]), record["source"])

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


def no_links_below(base: str | os.PathLike, path: str | os.PathLike) -> Path:
    """`path`, checked to lie under `base` with no symbolic link from there down: a folder mnistlab
    chose (a run, a trial, a study's seed) that it may write into or remove."""
    base, path = Path(base), Path(path)
    try:
        parts = path.relative_to(base).parts
    except ValueError:
        raise MnistlabError(f"{path} is not inside {base}", hint="the study or run files were altered") from None
    if ".." in parts:
        raise MnistlabError(f"{path} leads out of {base}", hint="the study or run files were altered")
    here = base
    for part in parts:
        here = here / part
        if here.is_symlink():
            raise MnistlabError(f"{here} is a symbolic link (to {os.readlink(here)}): mnistlab writes and removes "
                                f"only inside {base}", hint="remove the link, then run the command again")
    return path


def remove_run(base: str | os.PathLike, path: str | os.PathLike) -> None:
    """Remove a run directory mnistlab made under `base` (an interrupted one, to start it again); never
    through a link, never outside `base`."""
    shutil.rmtree(no_links_below(base, path))


def output_dir(path: str | os.PathLike, chosen_in: str | os.PathLike | None = None) -> Path:
    """`path`, created, for a verb's outputs. Where the verb chose it under `chosen_in` (a run directory,
    or a checkpoint's folder: eval/, inspect/, maps/M-F-S/), no folder from there down may be a
    symbolic link: a run from elsewhere must not steer writes out of itself. (A folder the user named
    with --out is theirs: it may be a link.)"""
    path = Path(path)
    if chosen_in is not None:
        no_links_below(chosen_in, path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise MnistlabError(f"{path}: exists and is not a folder, so no outputs can go in it",
                            hint="move that file away, or name another folder with --out") from None
    return path


def name_for(cfg, *, prefix: str = "", group: bool = False) -> str:
    """A run's directory name (the one place it is spelled): its own, or [PREFIX-]<recipe or
    model>-<dataset>-s<seed>, or for a group of seed runs [PREFIX-]<recipe or model>-<dataset>-seeds."""
    if cfg.name:
        return cfg.name
    base = f"{names.short(cfg.recipe or cfg.model)}-{names.short(cfg.dataset)}"
    variant = "-".join(re.sub(r"[^A-Za-z0-9.]+", "", v)[:16] for v in (getattr(cfg, "imbalance", ""),
                                                                       getattr(cfg, "label_noise", "")) if v)
    base = f"{base}-{variant}" if variant else base  # runs of two variants are two names
    base = f"{prefix}-{base}" if prefix else base
    return f"{base}-seeds" if group else f"{base}-s{cfg.seed}"


def new(cfg) -> RunDir:
    """A fresh run directory (not yet created); never an existing one (a default name gets -2, -3...);
    its name one path component that stays under cfg.out (mnistlab.names)."""
    base = names.inside(cfg.out, name_for(cfg), "run name")
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
