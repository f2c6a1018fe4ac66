"""A classical model (models/classical.py) fitted as a run: the same data, validation split, run
directory and summary as a network's, so everything downstream treats both alike.

    runs/knn-mnist-s0/
      config.json, log.jsonl      as for a network; the log has one "fit" row instead of epochs
      best.safetensors            the fitted model as plain arrays (models/classical_format.py) and metadata
      summary.json                validation and test accuracy, fit and predict seconds, model size

The test set is read once, after the validation figure, as for a network.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from ..data.normalization import to_unit
from ..errors import MnistlabError
from ..models import checkpoint
from ..models.classical import (
    ClassicalModel,
    features_of,
    fit_pipeline,
    make_pipeline,
    resolved_args,
    size_of,
    tensors_of,
)
from ..models.inference import accuracy_and_errors, cross_entropy_of
from ..models.predictor import reference_probs
from ..rundir import RunDir
from . import config
from .setup import load_data, model_meta, open_run, set_up, summary_base


def features(model_args: dict, images_u8: torch.Tensor, norm, batch: int = 5000) -> np.ndarray:
    """The feature matrix of uint8 images, prepared and scaled as the run's Normalization says."""
    parts = [features_of(norm.apply(to_unit(images_u8[i:i + batch])), model_args["features"])
             for i in range(0, len(images_u8), batch)]
    return np.concatenate(parts)


def fit(cfg, x: np.ndarray, y: np.ndarray, num_classes: int, in_shape) -> tuple[ClassicalModel, float]:
    """(the fitted model, fit seconds) on feature matrix `x` (N, D) and labels `y` (N,)."""
    # imported here: scikit-learn costs every command 1.5 s of start-up
    from sklearn.exceptions import ConvergenceWarning

    args = resolved_args(cfg.model, cfg.model_args)
    if len(np.unique(y)) < 2:
        raise MnistlabError(f"{cfg.model}: the training examples hold {len(np.unique(y))} class(es); a classifier "
                            "needs at least 2")
    pipeline = make_pipeline(cfg.model, args, cfg.seed, cfg.threads)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:  # recorded in the summary, said once
        warnings.simplefilter("always", ConvergenceWarning)
        fit_pipeline(pipeline, args, x, y)
    fit_s = time.perf_counter() - t0
    model = ClassicalModel.from_pipeline(cfg.model, args, pipeline, num_classes, in_shape)  # what a checkpoint keeps
    model.converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model, fit_s


def train_classical(cfg, quiet: bool = False) -> dict:
    """Fit `cfg`'s classical model as a run; return its summary (the keys a network run's has, and
    `classical`: fit and predict times, model size)."""
    t_start = time.perf_counter()
    config.validate(cfg)
    env = set_up(cfg, quiet)
    env.device = torch.device("cpu")
    data = load_data(cfg, env)
    args = resolved_args(cfg.model, cfg.model_args)
    t0 = time.perf_counter()
    x = features(args, data.train_x, data.norm)
    features_s = time.perf_counter() - t0
    y = data.train_y.numpy()
    env.precision = None  # scikit-learn's own arithmetic: no autocast to choose
    run = open_run(cfg, env, data, {})
    n_val = len(data.val) if data.val is not None else 0
    env.say(f"run {run}: {cfg.model} {args} on {cfg.dataset} ({len(y)} train, {n_val} val; {x.shape[1]} features "
            f"in {features_s:.1f}s); fitting...")
    model, fit_s = fit(cfg, x, y, data.dataset.num_classes, data.in_shape)
    del x
    size = size_of(model)
    row = {"event": "fit", "epoch": 1, "fit_s": fit_s, "features_s": features_s, "train_examples": len(y)}
    predict = {}
    if data.val is not None:
        t0 = time.perf_counter()
        probs = reference_probs(model, data.val.images, data.norm, batch_size=cfg.eval_batch_size)
        predict["val_s"] = time.perf_counter() - t0
        row["val_acc"], _ = accuracy_and_errors(probs, data.val.labels)
        row["val_loss"] = cross_entropy_of(probs, data.val.labels)
    run.append_log(row)
    meta = {**model_meta(cfg, data, model), "params": size["params"], "kind": "weights", "epoch": 1}
    checkpoint.save(run.best, checkpoint.prefixed(tensors_of(model), "model"), meta)
    test_acc = test_loss = test_errors = None
    if data.test is not None:
        t0 = time.perf_counter()
        probs = reference_probs(model, data.test.images, data.norm, batch_size=cfg.eval_batch_size)
        predict["test_s"] = time.perf_counter() - t0
        test_acc, test_errors = accuracy_and_errors(probs, data.test.labels)
        test_loss = cross_entropy_of(probs, data.test.labels)
    n_pred = (n_val if "val_s" in predict else 0) + (len(data.test) if "test_s" in predict else 0)
    seconds = sum(predict.values())
    summary = {
        **summary_base(cfg, env, data, run, size["params"]),
        "epochs_run": 1, "stopped_early": False, "stopped_because": None,
        "best_epoch": 1 if data.val is not None else None, "val_acc": row.get("val_acc"),
        "final_val_acc": row.get("val_acc"), "transfer": None,
        "test_acc": test_acc, "test_loss": test_loss, "test_errors": test_errors, "test_evaluated": data.test is not None,
        "test_at_training_precision": None, "train_s": fit_s + features_s, "wall_s": time.perf_counter() - t_start,
        "precision": {"chosen": "fp32", "reason": "scikit-learn"},
        "classical": {"model_args": args, "fit_s": fit_s, "features_s": features_s, "size": size,
                      "predict_s": predict, "predict_images_per_s": n_pred / seconds if seconds else None,
                      "converged": model.converged,
                      "probabilities": "predict_proba" if model.gives_probabilities
                      else "softmax of decision values"},
    }
    run.write_json(RunDir.SUMMARY, summary)
    val = f"val {row['val_acc']:.2%}, " if "val_acc" in row else ""
    test = f"test accuracy {test_acc:.2%} ({test_errors} errors in {len(data.test)}), " if test_acc is not None else ""
    env.say(f"{test}{val}fit {fit_s:.1f}s, {size['what']}, {summary['wall_s']:.1f}s wall; {run}"
            + ("" if model.converged else " (the solver stopped at max_iter before converging: raise max_iter)"))
    return summary

