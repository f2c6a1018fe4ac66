"""Export a trained model (or a mean ensemble) to ONNX, with a dynamic batch axis.

    mnistlab export runs/seed-cnn-mnist-s0 --format onnx --out seed-cnn.onnx

The exported graph takes `images`: float32 (N,C,H,W) in [0,1] (pixel / 255, light ink on dark),
and returns `probabilities` (N, classes): the dataset normalisation and, for an ensemble, the
averaging of its members are inside the graph. The class names, dataset and source are stored
as ONNX metadata properties.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .. import atomic
from ..errors import MnistlabError
from ..models.classical import refuse_classical
from ..models.inference import NormalizedModel
from ..models.predictor import load_predictor


class Exported(nn.Module):
    """[0,1] images -> each member's own normalisation and model -> averaged softmax probabilities."""

    def __init__(self, predictor):
        super().__init__()
        self.members = nn.ModuleList(NormalizedModel(m, n) for m, n in zip(predictor.models, predictor.norms))

    def forward(self, images):
        return torch.stack([torch.softmax(m(images), dim=1) for m in self.members]).mean(0)


def export(model: str | os.PathLike, *, format: str = "onnx", out: str | os.PathLike | None = None,
           opset: int = 18) -> Path:
    """Write `model` (run directory, checkpoint or mean ensemble) as an ONNX file; return its path."""
    if format != "onnx":
        raise MnistlabError(f"--format {format!r}: expected onnx")
    predictor = load_predictor(model)

    refuse_classical(predictor, "ONNX export", "serve it with PyTorch (mnistlab serve --model RUN), or export a network")
    if predictor.method == "vote":
        raise MnistlabError("a vote ensemble has no probabilities to export",
                            hint="export a mean ensemble (`mnistlab ensemble ... --method mean`) or its members")
    out = Path(out) if out else Path(f"{predictor.meta.get('name', 'model')}.onnx")
    if out.suffix != ".onnx":
        raise MnistlabError(f"--out {out}: expected a file name ending in .onnx")
    if not out.parent.exists():
        raise MnistlabError(f"--out {out}: directory {out.parent} does not exist")
    try:
        import onnx
    except ImportError:
        raise MnistlabError("ONNX export needs the onnx and onnxscript packages",
                            hint="pip install 'mnistlab[onnx]'") from None
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed": not needed here
    wrapper = Exported(predictor).eval()
    example = torch.rand(2, *predictor.meta["in_shape"])
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with atomic.replacing(out) as tmp:
        program = torch.onnx.export(wrapper, (example,), input_names=["images"], output_names=["probabilities"],
                                    dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True,
                                    external_data=False, verbose=False)
        proto = program.model_proto
        for key, value in {"classes": json.dumps(predictor.classes), "dataset": str(predictor.meta.get("dataset")),
                           "input": "float32 (N,C,H,W) in [0,1], light ink on dark",
                           "source": str(predictor.meta.get("source")), "producer": "mnistlab"}.items():
            prop = proto.metadata_props.add()
            prop.key, prop.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
    return out
