"""Checkpoints: tensors in safetensors, everything else as JSON in its header; atomic; no pickle.

A checkpoint file `NAME.safetensors` holds tensors under prefixes (`model/`, `ema/`, `optim/`,
`rng/`, `memberN/model/`) and one metadata entry, `mnistlab`, with a JSON object: the format
version, the resolved run config, the dataset's description and normalisation constants, and
training state. A copy of that JSON is written beside it as `NAME.json` for people to read;
loading uses only the file.

Nothing in a file is trusted: `read_header` checks the metadata against the schema below (every
field's type and range, class names against the class count, one normalisation per input
channel, a non-empty member list), and `build_model` builds the model first on PyTorch's `meta`
device, where nothing is allocated, to compare every tensor's shape and dtype with the file's
before the real model is made. Weights that are not finite are refused.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .. import atomic, schema, user_code
from ..data.normalization import Normalization
from ..errors import MnistlabError
from ..names import MAX_CLASSES, MAX_LABEL, label_problem
from ..rundir import RunDir
from . import MODELS
from .classical import CLASSICAL, ClassicalModel, is_classical, tensors_of
from .classical import build as build_classical
from .registry import build, check_options, is_known, model_entry

FORMAT = "mnistlab-checkpoint"
VERSION = 1
KINDS = ("weights", "state", "ensemble")  # best weights; full training state (resume); several models
MAX_CHANNELS, MAX_SIDE = 4, 512  # input shapes a checkpoint may declare
MAX_MEMBERS = 64
MAX_NAME = MAX_LABEL  # characters of a class, dataset or model name: what training accepts (mnistlab.names)


def save(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write tensors and metadata to `path` (.safetensors) atomically, and the JSON beside it."""
    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, **meta}
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic.replacing(path) as tmp:
        save_file(flat, tmp, metadata={"mnistlab": json.dumps(meta)})
    atomic.write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    return path


def _open_error(path: Path, exc: Exception) -> MnistlabError:
    return MnistlabError(f"{path}: not a readable safetensors checkpoint ({exc})",
                         hint="the file is corrupt or truncated, or not an mnistlab checkpoint")


def read_header(path: str | os.PathLike) -> tuple[dict, dict[str, tuple[str, tuple[int, ...]]]]:
    """(validated metadata, {tensor name: (dtype, shape)}) of a checkpoint, without reading its tensors."""
    path = Path(path)
    if path.is_dir():
        raise MnistlabError(f"{path} is a directory, expected a .safetensors checkpoint",
                            hint="pass a run directory to commands that take one, or RUN_DIR/best.safetensors")
    if not path.is_file():
        raise MnistlabError(f"checkpoint {path} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            header = (f.metadata() or {}).get("mnistlab")
            shapes = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _open_error(path, exc) from None
    if header is None:
        raise MnistlabError(f"{path}: a safetensors file without mnistlab metadata",
                            hint="mnistlab reads only checkpoints it wrote (with their config and dataset)")
    meta = schema.parse_json(header, f"{path}: its mnistlab metadata",
                             hint="the file is corrupt or was altered; use a checkpoint mnistlab wrote")
    return validate(meta, str(path)), shapes


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, validated metadata) of a checkpoint; clear errors for a missing, foreign or corrupt file."""
    meta, _ = read_header(path)
    try:
        tensors = load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _open_error(Path(path), exc) from None
    for name, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise MnistlabError(f"{path}: tensor {name} holds NaN or infinite values",
                                hint="the model diverged before it was saved, or the file was altered")
    return tensors, meta


# ----------------------------------------------------------------------------------------------
# The metadata schema


def _bad(source: str, field: str, expected: str, value=None, *, detail: str | None = None) -> MnistlabError:
    shown = "" if value is None else f" (found {json.dumps(value)[:80]})"
    what = detail or f"expected {expected}{shown}"
    return MnistlabError(f"{source}: metadata field {field!r}: {what}",
                         hint="the checkpoint was altered or written by another program; use one mnistlab wrote")


def _int(meta: dict, key: str, source: str, lo: int, hi: int, where: str = "") -> int:
    value = meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _bad(source, where + key, f"an integer from {lo} to {hi}", value)
    return value


def _str(meta: dict, key: str, source: str, where: str = "", optional: bool = False) -> str | None:
    value = meta.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        raise _bad(source, where + key, f"a name of 1 to {MAX_NAME} characters", value)
    return value


def _json_scalar_or_list(value) -> bool:
    scalar = (str, int, float, bool)
    return isinstance(value, scalar) or (isinstance(value, list) and len(value) <= 64
                                         and all(isinstance(v, scalar) for v in value))


def validate_model(meta: dict, source: str, where: str = "") -> dict:
    """Check one model's description (what every single-model checkpoint and ensemble member holds)."""

    if not isinstance(meta, dict):
        raise _bad(source, where.rstrip("."), "an object")

    if not is_known(_str(meta, "model", source, where)) and meta["model"] not in CLASSICAL:
        raise _bad(source, where + "model", f"one of {', '.join([*MODELS, *CLASSICAL])} or file.py:Name",
                   meta["model"])
    code = meta.get("code", {})
    if not isinstance(code, dict) or set(code) - {"model", "optimizer", "loss"}:
        raise _bad(source, where + "code", 'an object with "model", "optimizer" or "loss" records', None)
    for role, record in code.items():
        user_code.check_record(record, source, role)
    if user_code.is_reference(meta["model"]) and code.get("model", {}).get("ref") != meta["model"]:
        raise _bad(source, where + "code", f"the record of the model's code ({meta['model']})", None)
    args = meta.get("model_args", {})
    if not isinstance(args, dict) or not all(isinstance(k, str) and _json_scalar_or_list(v) for k, v in args.items()):
        raise _bad(source, where + "model_args", "an object of option names to numbers, strings or lists", args)
    try:
        check_options(meta["model"], args, "")
    except MnistlabError as exc:
        raise _bad(source, where + "model_args", "", detail=exc.message) from None
    shape = meta.get("in_shape")
    if (not isinstance(shape, list) or len(shape) != 3 or any(not isinstance(s, int) or isinstance(s, bool)
                                                              for s in shape)
            or not 1 <= shape[0] <= MAX_CHANNELS or not all(1 <= s <= MAX_SIDE for s in shape[1:])):
        raise _bad(source, where + "in_shape", f"[channels 1-{MAX_CHANNELS}, height, width 1-{MAX_SIDE}]", shape)
    n = _int(meta, "num_classes", source, 2, MAX_CLASSES, where)
    classes = meta.get("classes")
    if (not isinstance(classes, list) or len(classes) != n or len(set(map(str, classes))) != n
            or not all(isinstance(c, str) and label_problem(c) is None for c in classes)):
        raise _bad(source, where + "classes", f"{n} distinct class names (num_classes is {n}), each 1 to {MAX_NAME} "
                   "printable characters", classes)
    _str(meta, "dataset", source, where)
    norm = meta.get("normalization")
    try:
        parsed = Normalization.from_dict(norm)
    except MnistlabError as exc:
        raise _bad(source, where + "normalization", "", detail=exc.message) from None
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _bad(source, where + "normalization", '{"normalize", "mean", "std"}', norm) from None
    if len(parsed.mean) != shape[0]:
        raise _bad(source, where + "normalization", f"one mean and std per input channel ({shape[0]})", norm)
    if not isinstance(meta.get("config", {}), (dict, type(None))):
        raise _bad(source, where + "config", "an object", meta["config"])
    holdout = meta.get("holdout")
    if holdout is not None and not (
            isinstance(holdout, dict) and isinstance(holdout.get("count"), int) and holdout["count"] > 0
            and isinstance(holdout.get("seed"), int) and isinstance(holdout.get("stratified"), bool)
            and isinstance(holdout.get("sha256"), str) and len(holdout["sha256"]) == 64):
        raise _bad(source, where + "holdout", '{"count", "seed", "stratified", "sha256"} or null', holdout)
    return meta


def validate(meta, source: str) -> dict:
    """`meta` if it is a checkpoint's metadata this version of mnistlab can use; a clear error otherwise."""
    if not isinstance(meta, dict):
        raise MnistlabError(f"{source}: its mnistlab metadata is a JSON {type(meta).__name__}, expected an object")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise MnistlabError(f"{source}: checkpoint format {meta.get('format')!r} version {meta.get('version')!r}, "
                            f"expected {FORMAT!r} version {VERSION}",
                            hint="it was written by another version of mnistlab")
    kind = meta.get("kind")
    if kind not in KINDS:
        raise _bad(source, "kind", " | ".join(KINDS), kind)
    if kind != "ensemble":
        validate_model(meta, source)
        if kind == "state":
            _validate_state(meta, source)
        return meta
    if meta.get("method") not in ("mean", "vote"):
        raise _bad(source, "method", "mean | vote", meta.get("method"))
    members = meta.get("members")
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
        raise _bad(source, "members", f"a list of 1 to {MAX_MEMBERS} model descriptions", members)
    for i, member in enumerate(members):
        validate_model(member, source, where=f"members[{i}].")
        if member["classes"] != members[0]["classes"] or member["in_shape"] != members[0]["in_shape"]:
            raise _bad(source, f"members[{i}]", "the classes and input shape of members[0]")
    return meta


def _validate_state(meta: dict, source: str) -> None:
    """The extra fields a training state (last.safetensors, for --resume) needs."""
    _int(meta, "epoch", source, 0, 1 << 30)
    checks = {"config": dict, "history": list, "best": dict, "optimizer": dict}
    for key, typ in checks.items():
        if not isinstance(meta.get(key), typ):
            raise _bad(source, key, f"a JSON {typ.__name__}", meta.get(key))
    opt = meta["optimizer"]
    if not isinstance(opt.get("param_groups"), list) or not isinstance(opt.get("scalars"), dict):
        raise _bad(source, "optimizer", '{"param_groups": [...], "scalars": {...}}', opt)
    if not isinstance(meta.get("scheduler"), (dict, type(None))):
        raise _bad(source, "scheduler", "an object or null", meta.get("scheduler"))
    if not all(isinstance(row, dict) and isinstance(row.get("epoch"), int) for row in meta["history"]):
        raise _bad(source, "history", "a list of per-epoch objects")


# ----------------------------------------------------------------------------------------------
# From tensors to a model


def model_prefix(meta: dict, names, member: int | None = None) -> str:
    """Where a model's weights sit in a file: `memberN/model/` in an ensemble; in a training state its
    EMA weights (`ema/module.`) where it has them, since those are what the run evaluated; else `model/`."""
    if member is not None:
        return f"member{member}/model/"
    if meta.get("kind") == "state" and any(n.startswith("ema/module.") for n in names):
        return "ema/module."
    return "model/"


def build_model(desc: dict, tensors: dict[str, torch.Tensor], prefix: str, source: str,
                code_dir: Path | None = None) -> torch.nn.Module:
    """The model `desc` describes, with the weights under `prefix`, in eval mode; every tensor's shape
    and dtype compared with a skeleton built on the meta device before anything real is allocated.
    `code_dir`: the run's code/ folder, where the copy of user code a person reads lies."""

    if is_classical(desc["model"]):  # a fitted classical model's arrays, checked in classical_format
        return build_classical(desc, tensors, prefix, source)
    record = desc.get("code", {}).get("model")
    carried = None if record is None else user_code.Carried(
        record, source, RunDir.code_file_in(code_dir, "model", record["path"]) if code_dir else None)
    entry = model_entry(desc["model"], carried)
    args = (entry, desc["in_shape"], desc["num_classes"], dict(desc.get("model_args", {})))
    with torch.device("meta"):
        skeleton = build(*args)
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    check_state(skeleton.state_dict(), {k: (str(v.dtype), tuple(v.shape)) for k, v in state.items()},
                f"{source} ({desc['model']})")
    model = build(*args)
    model.load_state_dict(state)
    return model.eval()


def check_state(expected: dict[str, torch.Tensor], found: dict[str, tuple[str, tuple[int, ...]]], source: str) -> None:
    """The tensors `found` ({name: (dtype, shape)}) must be exactly those of `expected` (a state_dict)."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = [f"{k} {found[k][1]} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in found and (tuple(v.shape) != found[k][1] or _dtype_name(v.dtype) != _dtype_name(found[k][0]))]
    if missing or extra or wrong:
        parts = [f"missing {', '.join(missing[:5])}" if missing else "",
                 f"unexpected {', '.join(extra[:5])}" if extra else "",
                 f"wrong shape or type {', '.join(wrong[:5])}" if wrong else ""]
        raise MnistlabError(f"{source}: weights do not match the model: {'; '.join(p for p in parts if p)}",
                            hint="the checkpoint is damaged, or its metadata describes another model")


def _dtype_name(dtype) -> str:
    """torch.float32 and safetensors' 'F32' under one name."""
    names = {"F32": "float32", "F64": "float64", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
             "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
    text = str(dtype).removeprefix("torch.")
    return names.get(text, text)


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint stores of a model: its state_dict, or a classical model's arrays."""

    return tensors_of(model) if isinstance(model, ClassicalModel) else model.state_dict()


def count_elements(shapes: dict[str, tuple[str, tuple[int, ...]]]) -> int:
    return sum(math.prod(shape) for _, shape in shapes.values())


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v for k, v in state.items()}


def with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix/`, with the prefix removed."""
    p = prefix + "/"
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


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
