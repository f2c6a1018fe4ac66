"""The user code a run, a group of runs or a checkpoint carries, to show and to approve (`mnistlab trust`).

    found = carried_code("runs/from-a-colleague")   # every distinct record, with the file a person reads
    approve(found)                                  # signed: it runs here from now on (mnistlab.consent)

What is shown is what runs: the source inside the checkpoint, which `--trust-code` also insists is the
copy in the run's code/ folder (a run whose copy differs is refused here too).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import consent, user_code
from ..errors import MnistlabError
from ..rundir import RunDir
from ..tables import printable
from . import checkpoint


@dataclass
class CarriedCode:
    """One distinct piece of user code, and where it is carried."""

    role: str  # model, optimizer or loss
    record: dict  # checked: ref, kind, name, path, sha256, source
    copy: Path | None  # the run's code/ copy a person reads (None for a file outside a run)
    files: list[Path] = field(default_factory=list)  # the checkpoints that carry it
    signed: bool = False  # already approved (or recorded) by this user

    @property
    def lines(self) -> int:
        return len(self.record["source"].splitlines())

    def __str__(self) -> str:
        """As `mnistlab trust` shows it before asking: what it is, where to read it, every line numbered
        (control characters of the file made visible: it is someone else's text)."""
        r = self.record
        where = f", recorded at {printable(r['path'])}" if r["path"] else ""
        head = (f"{self.role} {printable(r['ref'])} ({r['kind']}{where}; SHA-256 {r['sha256'][:16]}...; "
                f"{self.lines} lines; {'already approved' if self.signed else 'not approved here'})\n"
                f"read it in {printable(self.copy or self.files[0])}:")
        body = "\n".join(f"{i:5}  {printable(line)}" for i, line in enumerate(r["source"].splitlines(), 1))
        return f"{head}\n{body}\n"


def checkpoints_of(path: str | os.PathLike) -> list[Path]:
    """The checkpoint files `path` stands for: a run's best and last, each run's of a group, or a file."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise MnistlabError(f"{path} does not exist", hint="pass a run directory, a group of runs or a checkpoint")
    files = [f for run in RunDir.runs_in(path) for f in (run.best, run.last) if f.is_file()]
    if not files:
        raise MnistlabError(f"{path}: no checkpoint to read (no {RunDir.BEST} or {RunDir.LAST})",
                            hint="the run has not finished an epoch")
    return files


def carried_code(path: str | os.PathLike) -> list[CarriedCode]:
    """Every distinct code record the checkpoints under `path` carry; a run whose code/ copy is not the
    code its checkpoint carries is refused (what a person reads must be what runs)."""
    found: dict[bytes, CarriedCode] = {}
    for file in checkpoints_of(path):
        meta, _ = checkpoint.read_header(file)
        code_dir = RunDir.code_dir_of(file)
        models = meta["members"] if meta["kind"] == "ensemble" else [meta]
        for desc in models:
            for role, record in desc.get("code", {}).items():
                copy = RunDir.code_file_in(code_dir, role, record["path"]) if code_dir else None
                if copy is not None:
                    _check_copy(copy, record, file)
                key = consent.identity(record)
                item = found.setdefault(key, CarriedCode(role, record, copy, signed=consent.is_signed(record)))
                if file not in item.files:
                    item.files.append(file)
    return list(found.values())


def _check_copy(copy: Path, record: dict, file: Path) -> None:
    try:
        text = copy.read_bytes().decode("utf-8") if copy.is_file() and not copy.is_symlink() else None
    except (OSError, UnicodeDecodeError):
        text = None
    if text is None:
        raise MnistlabError(f"{file}: its code copy {copy} is missing or not a plain UTF-8 file",
                            hint="ask the run's sender for it as mnistlab wrote it")
    if user_code.sha256_text(text) != record["sha256"]:
        raise MnistlabError(f"{file}: {copy} is not the code the checkpoint carries (SHA-256 "
                            f"{user_code.sha256_text(text)[:12]}... there, {record['sha256'][:12]}... in the checkpoint)",
                            hint="the run was altered: what you would read is not what would run")


def approve(found: list[CarriedCode]) -> None:
    """Sign every record: their code runs here from now on, without asking."""
    for item in found:
        consent.sign(item.record, "approved")
        item.signed = True


def revoke(found: list[CarriedCode]) -> None:
    """Remove the signatures: their code asks again (as code from elsewhere does)."""
    for item in found:
        consent.revoke(item.record)
        item.signed = False
