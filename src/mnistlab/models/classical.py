"""The classical baselines: scikit-learn models that live in the same runs as the networks.

    mnistlab train --model knn                                    # 3-NN, L2, on raw pixels
    mnistlab train --model svm --set model_args='{pca = 50}'      # RBF SVM on 50 principal components
    mnistlab train --model random-forest --set prepare=deskew
    mnistlab train --model logreg-sklearn --set model_args='{features = "hog"}'

A classical model is fitted once on the run's training examples (the validation split held out as for
any network), on the run's prepared images (`prepare`: deskew, binarize) scaled by its `normalize`,
as raw pixels or HOG features, optionally through a PCA. The run directory is a network run's:
config, log, summary with validation and test accuracy, and best.safetensors, which holds the fitted
model as plain arrays (models/classical_format.py: never pickle, no object graph), each checked
against the model's options before use.

In a run, the arrays sit inside `ClassicalModel`, an `nn.Module` whose forward takes the model's
prepared input and returns log-probabilities (or, for an SVM without probability=true, its
one-vs-rest decision values) computed by mnistlab from those arrays, so evaluation, ensembles,
prediction and the server use it like any network, and a reloaded model gives exactly the run's
numbers. It has no gradient: attacks, saliency and learned-feature maps say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import MnistlabError
from . import classical_format as fmt

SKOPS_TENSOR = "skops"  # the tensor of the earlier format (skops bytes), refused on sight
FEATURES = ("pixels", "hog")
COMMON = {"features": "pixels", "pca": 0}


@dataclass(frozen=True)
class ClassicalEntry:
    name: str
    summary: str
    options: dict  # the model's own options and their defaults (besides COMMON)


CLASSICAL: dict[str, ClassicalEntry] = {e.name: e for e in [
    ClassicalEntry("knn", "k-nearest neighbours (scikit-learn, brute force): LeCun's table, L2: 3.09% error",
                   {"k": 3, "metric": "euclidean", "weights": "uniform"}),
    ClassicalEntry("svm", "support vector machine (scikit-learn SVC; nystroem=N: a linear SVM on N Nystroem "
                   "kernel features): RBF 1.4% error in LeCun's table. Fit time grows with the square of the "
                   "examples: set pca, nystroem or train_subset for speed",
                   {"kernel": "rbf", "C": 10.0, "gamma": "scale", "nystroem": 0, "probability": False}),
    ClassicalEntry("random-forest", "random forest (scikit-learn): about 97% on MNIST",
                   {"n_estimators": 100, "max_features": "sqrt", "max_depth": 0}),
    ClassicalEntry("logreg-sklearn", "multinomial logistic regression (scikit-learn, L-BFGS): a linear "
                   "classifier, 7.6-12% error in LeCun's table", {"C": 1.0, "max_iter": 100}),
]}
CHOICES = {"metric": ("euclidean", "manhattan", "cosine", "chebyshev"), "weights": ("uniform", "distance"),
           "kernel": ("rbf", "poly", "linear", "sigmoid"), "features": FEATURES,
           "max_features": ("sqrt", "log2")}
# (option, accepts, expected) beyond the types of the defaults
RANGES = [("k", lambda v: 1 <= v <= 1000, "1 to 1000"), ("C", lambda v: v > 0, "a positive number"),
          ("nystroem", lambda v: 0 <= v <= 20000, "0 (exact kernel) or 1 to 20000 components"),
          ("n_estimators", lambda v: 1 <= v <= 5000, "1 to 5000"), ("max_depth", lambda v: v >= 0, "0 (no limit) or more"),
          ("max_iter", lambda v: 1 <= v <= 100000, "1 to 100000"),
          ("pca", lambda v: 0 <= v <= 4096, "0 (none) or a number of components")]


def is_classical(name: str) -> bool:
    return name in CLASSICAL


def options(name: str) -> dict:
    return {**CLASSICAL[name].options, **COMMON}


def resolved_args(name: str, args: dict, source: str = "model_args") -> dict:
    """The model's options with `args` on top; errors name an unknown option or a bad value."""
    defaults = options(name)
    unknown = sorted(set(args) - set(defaults))
    if unknown:
        raise MnistlabError(f"{source}: model {name!r} has no option {', '.join(unknown)}: its options are "
                            f"{', '.join(f'{k}={v!r}' for k, v in defaults.items())}")
    out = dict(defaults)
    for key, value in args.items():
        want = type(defaults[key])
        if key == "gamma":  # "scale", "auto" or a positive number
            if not (value in ("scale", "auto") or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                                   and value > 0)):
                raise MnistlabError(f"{source}: gamma={value!r}: expected scale, auto or a positive number")
        elif want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
            raise MnistlabError(f"{source}: {key}={value!r}: expected a {want.__name__} (default {defaults[key]!r})")
        if key in CHOICES and value not in CHOICES[key]:
            raise MnistlabError(f"{source}: {key}={value!r}: expected {' | '.join(CHOICES[key])}")
        out[key] = value
    for key, accepts, expected in RANGES:
        if key in out and not accepts(out[key]):
            raise MnistlabError(f"{source}: {key}={out[key]!r}: expected {expected}")
    return out


# Settings of the network engine that mean nothing to a model fitted once on fixed features
NETWORK_ONLY = {"augment": "none", "adversarial": "none", "init_from": "", "freeze": "none", "cuda_graphs": False,
                "compile": False, "ema": 0.0, "label_smoothing": 0.0, "sampling": "uniform", "clean_labels": "none",
                "loss": "cross_entropy"}


def validate_config(cfg) -> None:
    resolved_args(cfg.model, cfg.model_args)
    for key, default in NETWORK_ONLY.items():
        if getattr(cfg, key) != default:
            raise MnistlabError(f"{key}={getattr(cfg, key)!r} does not apply to the classical model {cfg.model!r}",
                                hint=f"leave {key} at {default!r}; a classical model is fitted once on fixed features")
    if cfg.device.startswith("cuda"):
        raise MnistlabError(f"device={cfg.device!r}: scikit-learn models run on the CPU", hint="use --device cpu or auto")


# ----------------------------------------------------------------------------------------------
# Features


def hog_features(x: np.ndarray) -> np.ndarray:
    """Histograms of oriented gradients (scikit-image) of images (N,C,H,W) in [0,1]: 9 orientations,
    cells of a quarter of the image side (7x7 pixels on MNIST), blocks of 2x2 cells."""
    try:
        from skimage.feature import hog
    except ImportError:
        raise MnistlabError("features='hog' needs scikit-image", hint="pip install 'mnistlab[classical]'") from None
    gray = x.mean(1)
    cell = max(2, gray.shape[-1] // 4)
    return np.stack([hog(img, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2),
                         block_norm="L2-Hys", feature_vector=True) for img in gray]).astype(np.float32)


def features_of(x: torch.Tensor, kind: str) -> np.ndarray:
    """The feature matrix (N, D) a classical model reads from its prepared input (N,C,H,W)."""
    array = x.detach().cpu().float().numpy()
    if kind == "hog":
        return hog_features(array)
    return array.reshape(len(array), -1)


# ----------------------------------------------------------------------------------------------
# Estimators


def make_pipeline(name: str, args: dict, seed: int, threads: int):
    """The unfitted scikit-learn pipeline: [PCA ->] [Nystroem ->] estimator. Fit it with `fit_pipeline`."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline

    jobs = threads or -1
    steps = []
    if args["pca"]:
        steps.append(("pca", PCA(args["pca"], random_state=seed)))
    if name == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        est = KNeighborsClassifier(args["k"], metric=args["metric"], weights=args["weights"], algorithm="brute",
                                   n_jobs=jobs)
    elif name == "svm":
        if args["nystroem"]:
            from sklearn.kernel_approximation import Nystroem
            from sklearn.svm import LinearSVC

            # a gamma of "scale" or "auto" is resolved on the Nystroem step's input, in fit_pipeline
            gamma = args["gamma"] if not isinstance(args["gamma"], str) else 1.0
            steps.append(("nystroem", Nystroem(kernel=args["kernel"], gamma=gamma, n_components=args["nystroem"],
                                               random_state=seed)))
            est = LinearSVC(C=args["C"], random_state=seed, dual="auto")
        else:
            from sklearn.svm import SVC

            est = SVC(C=args["C"], kernel=args["kernel"], gamma=args["gamma"], cache_size=1000, random_state=seed)
            if args["probability"]:  # Platt scaling on 3 folds' held-out scores (scikit-learn's advice since 1.9)
                from sklearn.calibration import CalibratedClassifierCV

                est = CalibratedClassifierCV(est, method="sigmoid", cv=3, ensemble=False)
    elif name == "random-forest":
        from sklearn.ensemble import RandomForestClassifier

        est = RandomForestClassifier(args["n_estimators"], max_features=args["max_features"],
                                     max_depth=args["max_depth"] or None, n_jobs=jobs, random_state=seed)
    elif name == "logreg-sklearn":
        from sklearn.linear_model import LogisticRegression

        est = LogisticRegression(C=args["C"], max_iter=args["max_iter"])
    else:
        raise MnistlabError(f"unknown classical model {name!r}: expected one of {', '.join(CLASSICAL)}")
    steps.append(("model", est))
    return Pipeline(steps)


def fit_pipeline(pipeline, args: dict, x: np.ndarray, y: np.ndarray):
    """Fit the steps in turn, resolving a Nystroem gamma of "scale" (1 / (features x variance), as
    scikit-learn's SVC does) or "auto" (1 / features) on the features that step receives."""
    for name, step in pipeline.steps[:-1]:
        if name == "nystroem" and isinstance(args["gamma"], str):
            var = float(x.var())
            step.set_params(gamma=1.0 / x.shape[1] if args["gamma"] == "auto" or var <= 0
                            else 1.0 / (x.shape[1] * var))
        x = step.fit_transform(x, y)
    pipeline.steps[-1][1].fit(x, y)
    return pipeline


def size_of(model: ClassicalModel) -> dict:
    """What the fitted model stores, in words a table can show, and as one number (`params`)."""
    a = model.arrays
    extra = sum(a[k].size for k in ("pca.components", "nystroem.basis") if k in a)
    if "svc.support_vectors" in a:
        n_sv = len(a["svc.support_vectors"])
        return {"what": f"{n_sv:,} support vectors", "support_vectors": n_sv,
                "params": int(a["svc.support_vectors"].size + a["svc.dual_coef"].size) + extra}
    if "knn.fit_x" in a:
        n = len(a["knn.fit_x"])
        return {"what": f"{n:,} stored examples", "stored_examples": n, "params": int(a["knn.fit_x"].size) + extra}
    if "forest.offsets" in a:
        trees, nodes = len(a["forest.offsets"]) - 1, int(a["forest.offsets"][-1])
        return {"what": f"{trees} trees, {nodes:,} nodes", "nodes": nodes, "params": nodes + extra}
    coefs = int(a["linear.coef"].size + a["linear.intercept"].size)
    return {"what": f"{coefs:,} coefficients", "params": coefs + extra}


# ----------------------------------------------------------------------------------------------
# The model in a run


class ClassicalModel(nn.Module):
    """A fitted classical model's arrays behind a network's interface: prepared images in,
    log-probabilities (or decision values) out, as float32 on the input's device."""

    def __init__(self, name: str, args: dict, arrays: dict[str, np.ndarray], num_classes: int, in_shape,
                 source: str = "the fitted model"):
        super().__init__()
        self.name, self.args, self.num_classes = name, args, num_classes
        self.arrays = fmt.check(name, args, arrays, num_classes, in_shape, source)
        self.mnistlab_name, self.mnistlab_args, self.mnistlab_in_shape = name, args, tuple(in_shape)
        self.converged = True

    @classmethod
    def from_pipeline(cls, name: str, args: dict, pipeline, num_classes: int, in_shape) -> ClassicalModel:
        """The model a fitted scikit-learn pipeline describes, as the arrays a checkpoint keeps."""
        return cls(name, args, fmt.arrays_of(name, args, pipeline), num_classes, in_shape)

    @property
    def gives_probabilities(self) -> bool:
        """kNN, forests, logistic regression and a calibrated SVM give probabilities; other SVMs scores."""
        return self.name != "svm" or (self.args["probability"] and not self.args["nystroem"])

    def features(self, x: torch.Tensor) -> np.ndarray:
        return features_of(x, self.args["features"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        classes = self.arrays["classes"]
        scores, probabilities = fmt.scores(self.name, self.args, self.arrays, f)
        if probabilities:
            scores = np.log(np.clip(scores, 1e-7, 1.0))
            fill = np.log(1e-7)
        else:
            fill = scores.min() - 10.0 if scores.size else 0.0
        out = np.full((len(f), self.num_classes), fill, dtype=np.float32)
        out[:, classes] = scores  # classes absent from the training examples get no mass
        return torch.from_numpy(out).to(x.device)


def gives_probabilities(model: ClassicalModel) -> bool:
    return model.gives_probabilities


def build(desc: dict, tensors: dict[str, torch.Tensor], prefix: str, source: str) -> ClassicalModel:
    """The ClassicalModel a checkpoint describes, every array checked against the description first."""
    names = [k[len(prefix):] for k in tensors if k.startswith(prefix)]
    if SKOPS_TENSOR in names:
        raise fmt.refuse_skops(source)
    args = resolved_args(desc["model"], desc.get("model_args", {}), f"{source}: model_args")
    arrays = {name: tensors[prefix + name].numpy() for name in names}
    return ClassicalModel(desc["model"], args, arrays, desc["num_classes"], desc["in_shape"], source).eval()


def classical_members(predictor) -> list[str]:
    """The names of a Predictor's classical members (none for networks)."""
    return [m.name for m in predictor.models if isinstance(m, ClassicalModel)]


def refuse_classical(predictor, what: str, hint: str) -> None:
    """A clear error when `what` (which needs a network's gradients or graph) meets a classical model."""
    names = classical_members(predictor)
    if names:
        raise MnistlabError(f"{predictor.meta.get('source', 'the model')} holds a scikit-learn {names[0]} model: "
                            f"{what} needs a network", hint=hint)


def tensors_of(model: ClassicalModel) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.array(a, order="C")) for name, a in model.arrays.items()}  # (0-d kept)
