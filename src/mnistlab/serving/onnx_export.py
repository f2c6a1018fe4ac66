"""Export a trained model (or a mean ensemble) to ONNX, with a dynamic batch axis.

    mnistlab export runs/seed-cnn-mnist-s0 --format onnx --out seed-cnn.onnx

The exported graph takes `images`: float32 (N,C,H,W) in [0,1] (pixel / 255, light ink on dark),
and returns `probabilities` (N, classes): the dataset normalisation and, for an ensemble, the
averaging of its members are inside the graph. The class names, dataset and source are stored
as ONNX metadata properties.

With `--not-digit` (one network) the graph has a second output, `not_digit_score` (N,): the
model's not-a-digit score (models/ood.py: the kNN distance of the penultimate features to the
reference training images, d / (d + threshold), so above 0.5 means "not a digit"), computed in the
graph from the same forward pass. The reference features go into the file as fp16 (the packaged
model's: 47 MB), which is why it is asked for, not the default.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .. import atomic, names
from ..errors import MnistlabError
from ..models.classical import refuse_classical
from ..models.features import features
from ..models.heads import capture_features
from ..models.inference import NormalizedModel
from ..models.ood import knn_distance, not_digit_model, score_of_distance
from ..models.predictor import load_predictor


class Exported(nn.Module):
    """[0,1] images -> each member's own normalisation and model -> averaged softmax probabilities."""

    def __init__(self, predictor):
        super().__init__()
        self.members = nn.ModuleList(NormalizedModel(m, n) for m, n in zip(predictor.models, predictor.norms))

    def forward(self, images):
        return torch.stack([torch.softmax(m(images), dim=1) for m in self.members]).mean(0)


class ExportedWithNotDigit(nn.Module):
    """One network: [0,1] images -> (softmax probabilities, not-a-digit score), one forward pass; the
    score is NotDigitModel.score's own functions traced into the graph, its reference a buffer."""

    def __init__(self, predictor, nd):
        super().__init__()
        self.member = NormalizedModel(predictor.models[0], predictor.norms[0])
        self.register_buffer("reference", nd.reference.half())  # L2-normalised rows; half the bytes
        self.k, self.threshold = min(nd.k, len(nd.reference)), float(nd.threshold)
        self._features: list = []
        capture_features(predictor.models[0], self._features)

    def forward(self, images):
        self._features.clear()
        probs = torch.softmax(self.member(images), dim=1)
        return probs, score_of_distance(knn_distance(self._features[0], self.reference, self.k), self.threshold)


def export(model: str | os.PathLike, *, format: str = "onnx", out: str | os.PathLike | None = None,
           opset: int = 18, not_digit: bool = False) -> Path:
    """Write `model` (run directory, checkpoint or mean ensemble) as an ONNX file; return its path.
    `not_digit`: add the not-a-digit score as a second output (one network only; see above)."""
    if format != "onnx":
        raise MnistlabError(f"--format {format!r}: expected onnx")
    predictor = load_predictor(model)

    refuse_classical(predictor, "ONNX export", "serve it with PyTorch (mnistlab serve --model RUN), or export a network")
    if predictor.method == "vote":
        raise MnistlabError("a vote ensemble has no probabilities to export",
                            hint="export a mean ensemble (`mnistlab ensemble ... --method mean`) or its members")
    nd = None
    if not_digit:
        if len(predictor.models) != 1:
            raise MnistlabError("--not-digit: an ensemble has no one feature space for the not-a-digit score",
                                hint="export one of its members with --not-digit, or the ensemble without it")
        nd = not_digit_model(predictor)
        if nd is None:
            raise MnistlabError(f"--not-digit: no not-a-digit model for {model}, and it cannot be fitted here",
                                hint=f"its training data ({predictor.meta.get('dataset')}) must be loadable")
        blank = torch.zeros(1, *predictor.meta["in_shape"], dtype=torch.uint8)
        nd.distance(features(predictor.models[0], blank, predictor.norms[0]))  # a file fitted for another model: one line
    # the default name comes from the checkpoint, which anyone may have written: one name, in this folder
    out = Path(out) if out else names.inside(".", f"{names.short(predictor.meta.get('name', 'model'))}.onnx",
                                             "export file name")
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
    wrapper = (Exported(predictor) if nd is None else ExportedWithNotDigit(predictor, nd)).eval()
    outputs = ["probabilities"] if nd is None else ["probabilities", "not_digit_score"]
    example = torch.rand(2, *predictor.meta["in_shape"])
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with atomic.replacing(out) as tmp, warnings.catch_warnings():
        # the feature hook's list holds a tensor during tracing: by design, not a missing buffer
        warnings.filterwarnings("ignore", message="The tensor attribute self._features")
        warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)  # torch's own, not ours
        program = torch.onnx.export(wrapper, (example,), input_names=["images"], output_names=outputs,
                                    dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True,
                                    external_data=False, verbose=False)
        proto = program.model_proto
        for key, value in {"classes": json.dumps(predictor.classes), "dataset": str(predictor.meta.get("dataset")),
                           "input": "float32 (N,C,H,W) in [0,1], light ink on dark",
                           "source": str(predictor.meta.get("source")), "producer": "mnistlab",
                           **({"not_digit": json.dumps({"method": nd.meta.get("method", "knn-cosine"), "k": wrapper.k,
                                                        "threshold": nd.threshold, "flag_above": 0.5})}
                              if nd is not None else {})}.items():
            prop = proto.metadata_props.add()
            prop.key, prop.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
    return out
