"""Checkpoints: tensors in safetensors, everything else as JSON in its header; atomic; no pickle.

A checkpoint file `NAME.safetensors` holds tensors under prefixes (`model/`, `ema/`, `optim/`,
`rng/`) and one metadata entry, `mnistlab`, with a JSON object: the format version, the resolved
run config, the dataset's description and normalisation constants, and training state. A copy of
that JSON is written beside it as `NAME.json` for people to read; loading uses only the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import atomic
from ..errors import MnistlabError

FORMAT = "mnistlab-checkpoint"
VERSION = 1


def atomic_write_text(path: Path, text: str) -> None:
    atomic.write_text(path, text)


def save(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write tensors and metadata to `path` (.safetensors) atomically, and the JSON beside it."""
    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, **meta}
    header = json.dumps(meta)
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic.replacing(path) as tmp:
        save_file(flat, tmp, metadata={"mnistlab": header})
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    return path


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a checkpoint; clear errors for a missing, foreign or corrupt file."""
    path = Path(path)
    if path.is_dir():
        raise MnistlabError(f"{path} is a directory, expected a .safetensors checkpoint",
                            hint="pass a run directory to commands that take one, or RUN_DIR/best.safetensors")
    if not path.is_file():
        raise MnistlabError(f"checkpoint {path} does not exist")
    try:
        tensors = load_file(path, device=str(device))
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            header = (f.metadata() or {}).get("mnistlab")
    except (SafetensorError, OSError, ValueError) as exc:
        raise MnistlabError(f"{path}: not a readable safetensors checkpoint ({exc})",
                            hint="the file is corrupt or truncated, or not an mnistlab checkpoint") from None
    if header is None:
        raise MnistlabError(f"{path}: a safetensors file without mnistlab metadata",
                            hint="mnistlab reads only checkpoints it wrote (with their config and dataset)")
    try:
        meta = json.loads(header)
    except json.JSONDecodeError:
        raise MnistlabError(f"{path}: its mnistlab metadata is not valid JSON") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise MnistlabError(f"{path}: checkpoint format {meta.get('format')!r} version {meta.get('version')!r}, "
                            f"expected {FORMAT!r} version {VERSION}",
                            hint="it was written by another version of mnistlab")
    return tensors, meta


def with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix/`, with the prefix removed."""
    p = prefix + "/"
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v for k, v in state.items()}


def optimizer_to_parts(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and a JSON-able rest."""
    tensors, scalars = {}, {}
    for pid, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim/{pid}/{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [{k: (float(v) if torch.is_tensor(v) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_parts(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in with_prefix(tensors, "optim").items():
        pid, slot = key.split("/", 1)
        state.setdefault(int(pid), {})[slot] = value
    for pid, slots in rest["scalars"].items():
        state.setdefault(int(pid), {}).update(slots)
    return {"state": state, "param_groups": rest["param_groups"]}
