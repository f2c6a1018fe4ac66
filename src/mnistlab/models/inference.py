"""Running a model on uint8 images in large batches: the one path that training's validation,
evaluation, ensembles, prediction and the web server share.

**The accuracy of a run** is measured one way, by every verb, on every machine: fp32 inference
(whatever precision the run trained in), in batches of the run's `eval_batch_size`, with
convolutional models' weights and inputs channels-last (what `Predictor` does), at the torch thread
count the run evaluated with. `EVALUATION` names that rule; `evaluation_record` is what a run's
summary stores of it, and `evaluate` reads it back to measure the same way. Why fixed: bf16
autocast, a different thread count (matrix products split their sums across threads) or a
different weight layout each change the last bits of the logits and so, near a decision boundary,
an image's predicted class; a run that trained in bf16 also records its test accuracy under bf16
inference, so any difference is said in the summary instead of hidden.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..data.normalization import Normalization, to_unit

EVALUATION = {"precision": "fp32", "layout": "channels-last weights and inputs for convolutional models"}
# Images per inference batch. On a CPU a conv net's activations for 256 images stay in cache where
# 2,000 images' spill to memory: the packaged model over the test set 1.9x faster with AVX2, 3.1x
# with AMX (`mnistlab bench infer`, docs/speed.md); on one thread the logits are bit-identical.
BATCH_SIZE = 256
UNRECORDED_BATCH_SIZE = 2000  # what runs used before their summary recorded it (and loose checkpoints)


class NormalizedModel(torch.nn.Module):
    """A model that takes float images in [0,1] (N,C,H,W), its normalisation applied inside.

    What ONNX export ships, and what anything that works in pixel units (an attack's epsilon) needs.
    """

    def __init__(self, model: torch.nn.Module, norm: Normalization):
        super().__init__()
        self.model, self.norm = model, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.norm.apply(x))


@torch.no_grad()
def batched_logits(model: torch.nn.Module, images_u8: torch.Tensor, norm: Normalization, *, batch_size: int = BATCH_SIZE,
                   device: str | torch.device | None = None, precision: str = "fp32",
                   channels_last: bool = False) -> torch.Tensor:
    """float32 logits (N, classes) of `model` (put in eval mode) for uint8 images, batch by batch."""
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters(), torch.empty(0)).device  # (classical: none)
    out = []
    try:
        for start in range(0, images_u8.shape[0], batch_size):
            xb = norm.apply(to_unit(images_u8[start:start + batch_size].to(device, non_blocking=True)))
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out.append(model(xb).float())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def accuracy_and_errors(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """(accuracy, error count) of the argmax of probabilities or logits (N, C) against labels (N,):
    the accuracy as correct / N in float64, the number `evaluate` prints too."""
    correct = int((scores.argmax(1).cpu() == labels.cpu()).sum())
    return correct / len(labels), len(labels) - correct


def evaluation_record(batch_size: int, device: torch.device | str) -> dict:
    """How a run measured its accuracy (see the module docstring), as its summary stores it."""
    return {**EVALUATION, "batch_size": int(batch_size), "threads": torch.get_num_threads(), "device": str(device)}


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the body with `n` torch CPU threads (None: as they are), then put the count back."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cross_entropy_of(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cross-entropy of probabilities (clipped at 1e-12, as evaluate's log loss is)."""
    return float(-torch.log(probs.float().clamp_min(1e-12)).gather(1, labels.view(-1, 1).to(probs.device)).mean())


def per_class_scores(labels: np.ndarray, pred: np.ndarray, k: int) -> dict:
    """The confusion matrix (true x predicted) and each class's precision, recall, F1 and support,
    with their macro and support-weighted means; a class never predicted (or never present) scores 0
    where its denominator is 0 (scikit-learn's `zero_division=0`, whose formulas these are)."""
    cm = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    tp, support, predicted = np.diag(cm).astype(np.float64), cm.sum(1), cm.sum(0)

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros(k), where=den > 0)

    precision, recall, f1 = ratio(tp, predicted), ratio(tp, support), ratio(2 * tp, support + predicted)
    weights = support / support.sum() if support.sum() else np.zeros(k)
    averages = {"macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
                "weighted": {"precision": float(precision @ weights), "recall": float(recall @ weights),
                             "f1": float(f1 @ weights)}}
    return {"confusion": cm, "precision": precision, "recall": recall, "f1": f1, "support": support,
            "averages": averages}


def class_balanced(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Balanced accuracy (the mean recall over the classes present, scikit-learn's
    balanced_accuracy_score) and macro-F1 of scores (N, C) against labels: the figures that matter
    when the classes are not equally common."""
    y = labels.cpu().numpy().astype(np.int64)
    pred = scores.argmax(1).cpu().numpy().astype(np.int64)
    s = per_class_scores(y, pred, num_classes)
    present = s["support"] > 0
    return {"balanced_acc": float(s["recall"][present].mean()) if present.any() else 0.0,
            "macro_f1": s["averages"]["macro"]["f1"]}
