"""Where the server runs its model: ONNX Runtime when it is installed, PyTorch otherwise.

One drawing is one tiny forward pass, and for those PyTorch's per-call overhead is most of the
cost: the default model takes about 0.5 ms per image in PyTorch and 0.1 ms in ONNX Runtime on one
CPU thread (`mnistlab bench infer`). The model is exported at start-up (TorchScript exporter) with
its normalisation and the ensemble's averaging inside, and checked against PyTorch on random images
before it is used; anything that fails falls back to PyTorch, with the reason in the log. The graph
is kept in the user cache under a hash of what it was exported from (weights, metadata, torch
version), so the next start of the same model skips the export and the `onnx` import it needs (about
a second of each start); a cached graph that does not load or does not agree is exported again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from pathlib import Path

import torch

from .. import atomic
from ..data.normalization import to_unit
from ..data.paths import cache_dir
from ..models.classical import classical_members
from ..models.inference import BATCH_SIZE
from .onnx_export import Exported

logger = logging.getLogger("uvicorn.error.mnistlab")
AGREEMENT = 1e-4  # largest difference in probability allowed between the exported graph and PyTorch
OPSET = 18
MAX_CACHED_GRAPH = 1 << 30  # bytes: a cached graph larger than this is not read (the zoo's are a few MB)


class OnnxPredictor:
    """A `Predictor`'s interface (classes, meta, method, models, probs) over an ONNX Runtime session."""

    backend = "onnxruntime"

    def __init__(self, predictor, session):
        self.torch_predictor, self.session = predictor, session
        self.meta, self.method, self.models = predictor.meta, predictor.method, predictor.models

    @property
    def classes(self) -> list[str]:
        return self.torch_predictor.classes

    def probs(self, images_u8: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
        x = to_unit(images_u8).numpy()
        if x.ndim == 3:
            x = x[:, None]
        return torch.from_numpy(self.session.run(None, {"images": x})[0])


def accelerate(predictor):
    """`predictor` on ONNX Runtime where that is installed and agrees with PyTorch; else itself."""

    if predictor.method == "vote" or classical_members(predictor):
        return predictor  # a vote has no probabilities to export; scikit-learn models have no ONNX graph here
    try:
        import onnxruntime as ort
    except ImportError:
        logger.info("serving with PyTorch (install onnxruntime for ~5x faster inference per image)")
        return predictor
    try:
        cached = graph_file(predictor)
        graph = _read_graph(cached)
        if graph is not None:
            try:
                return _checked(predictor, ort, graph)
            except Exception as exc:  # damaged, foreign or stale: export it again below
                logger.info("the cached ONNX graph %s is not usable (%s: %s): exporting again", cached,
                            type(exc).__name__, exc)
        graph = _export(predictor)
        fast = _checked(predictor, ort, graph)
    except Exception as exc:  # any failure to export or run: PyTorch serves, and the log says why
        logger.warning("serving with PyTorch: the ONNX Runtime backend failed (%s: %s)", type(exc).__name__, exc)
        return predictor
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(cached, graph)
    except OSError as exc:  # a read-only cache: the next start exports again
        logger.info("the ONNX graph was not cached (%s)", exc)
    return fast


def _checked(predictor, ort, graph: bytes) -> OnnxPredictor:
    """An ONNX Runtime session of `graph`, if it gives the probabilities PyTorch gives on random images."""
    session = ort.InferenceSession(graph, _one_thread(ort), providers=["CPUExecutionProvider"])
    fast = OnnxPredictor(predictor, session)
    # random pixels at eight contrasts, blank to full: full-contrast noise alone saturates the softmax,
    # where a wrong bias or a missing layer hides below the tolerance
    noise = torch.randint(0, 256, (8, *predictor.meta["in_shape"][1:]), generator=torch.Generator().manual_seed(0))
    contrast = torch.linspace(0, 1, 8).view(-1, *[1] * (noise.dim() - 1))
    check = (noise * contrast).round().to(torch.uint8)
    difference = float((fast.probs(check) - predictor.probs(check)).abs().max())
    if not difference <= AGREEMENT:
        raise ValueError(f"ONNX Runtime differs from PyTorch by {difference:.2g}")
    return fast


def graph_file(predictor) -> Path:
    """Where the exported graph of `predictor` is cached: a hash of its weights, normalisations,
    metadata and method, and of the torch version and opset that export it."""
    digest = hashlib.sha256(json.dumps({"torch": torch.__version__, "opset": OPSET, "method": predictor.method,
                                        "meta": predictor.meta, "norms": [repr(n) for n in predictor.norms]},
                                       sort_keys=True, default=str).encode())
    for model in predictor.models:
        for name, tensor in model.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return cache_dir() / "onnx" / f"{digest.hexdigest()}.onnx"


def _read_graph(path: Path) -> bytes | None:
    try:
        return path.read_bytes() if path.is_file() and path.stat().st_size <= MAX_CACHED_GRAPH else None
    except OSError:
        return None


def _one_thread(ort):
    # A server worker handles one request at a time per thread; intra-op threads would only contend.
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return options


def _export(predictor) -> bytes:
    wrapper = Exported(predictor).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice: it is still the fast one
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.rand(2, *predictor.meta["in_shape"]),), buf, input_names=["images"],
                          output_names=["probabilities"], dynamic_axes={"images": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    return buf.getvalue()
