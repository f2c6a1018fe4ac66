"""Where the server runs its model: ONNX Runtime when it is installed, PyTorch otherwise.

One drawing is one tiny forward pass, and for those PyTorch's per-call overhead is most of the
cost: the default model takes about 0.5 ms per image in PyTorch and 0.1 ms in ONNX Runtime on one
CPU thread (`mnistlab bench infer`). The model is exported in memory at start-up (TorchScript
exporter, a tenth of a second for the zoo's models) with its normalisation and the ensemble's
averaging inside, and checked against PyTorch on random images before it is used; anything that
fails falls back to PyTorch, with the reason in the log.
"""

from __future__ import annotations

import io
import logging
import warnings

import torch

from ..data.normalization import to_unit
from ..models.classical import classical_members
from ..models.inference import BATCH_SIZE
from .export import Exported

logger = logging.getLogger("uvicorn.error.mnistlab")
AGREEMENT = 1e-4  # largest difference in probability allowed between the exported graph and PyTorch


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
        session = ort.InferenceSession(_export(predictor), _one_thread(ort), providers=["CPUExecutionProvider"])
        fast = OnnxPredictor(predictor, session)
        check = torch.randint(0, 256, (8, *predictor.meta["in_shape"][1:]), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(0))
        difference = float((fast.probs(check) - predictor.probs(check)).abs().max())
        if not difference <= AGREEMENT:
            raise ValueError(f"ONNX Runtime differs from PyTorch by {difference:.2g}")
    except Exception as exc:  # any failure to export or run: PyTorch serves, and the log says why
        logger.warning("serving with PyTorch: the ONNX Runtime backend failed (%s: %s)", type(exc).__name__, exc)
        return predictor
    return fast


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
                          output_names=["probabilities"], dynamic_axes={"images": {0: "batch"}}, opset_version=18,
                          dynamo=False)
    return buf.getvalue()
