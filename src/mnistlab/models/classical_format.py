"""A fitted classical model as plain arrays: what a checkpoint stores, how each array is checked
before use, and the inference mnistlab runs on them itself.

scikit-learn fits the models (models/classical.py); what a run keeps is only their arrays: a
kNN's training matrix and labels, an SVM's support vectors, dual coefficients and intercepts, a
forest's node arrays, a linear model's coefficients, a PCA's mean and components, a Nystroem map's
basis and normalisation. Loading a checkpoint therefore builds no object graph from the file (no
pickle, no skops schema to audit): it reads named tensors, checks each against what the model's
options say it must be (names, dtypes, shapes against the input width and the class count, finite
values, index arrays in range, a tree's children after their parent so traversal ends), and runs
the arithmetic below on them. Training measures its validation and test figures with this same
inference, so a reloaded model gives exactly the run's numbers.

The arithmetic follows scikit-learn's own (tests/test_classical.py compares the two on fitted
models): PCA's projection, Nystroem's kernel map, libsvm's one-vs-one decision values turned
one-vs-rest, the sigmoid calibration of an SVM's scores, brute-force k nearest neighbours, a
forest's average of leaf class fractions, and a linear model's softmax.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import MnistlabError

FORMAT = 2  # 1 was skops bytes: an object graph rebuilt from the file, refused since (see `refuse_skops`)
MAX_EXAMPLES = 2_000_000  # stored examples / support vectors a checkpoint may declare
MAX_NODES = 50_000_000  # nodes of all of a forest's trees
MAX_DEPTH = 1000  # levels of a tree (scikit-learn's forests on MNIST: 30-50); each is a round of inference
KNN_CHUNK = 512  # query rows per distance block (512 x 60,000 float64: 245 MB)
KERNEL_DEFAULTS = {"degree": 3, "coef0": 0.0}  # SVC's; Nystroem's coef0 defaults to 1 (below)


def _np(value) -> np.ndarray:
    return value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)


# ----------------------------------------------------------------------------------------------
# From a fitted scikit-learn pipeline to arrays


def arrays_of(model_name: str, args: dict, pipeline) -> dict[str, np.ndarray]:
    """The arrays that describe a fitted pipeline ([PCA ->] [Nystroem ->] estimator)."""
    steps = dict(pipeline.steps)
    out: dict[str, np.ndarray] = {}
    if "pca" in steps:
        pca = steps["pca"]
        out["pca.mean"], out["pca.components"] = np.asarray(pca.mean_), np.asarray(pca.components_)
    if "nystroem" in steps:
        ny = steps["nystroem"]
        out["nystroem.basis"] = np.asarray(ny.components_)
        out["nystroem.normalization"] = np.asarray(ny.normalization_)
        out["nystroem.gamma"] = np.asarray(float(ny.gamma), dtype=np.float64)
    est = steps["model"]
    out["classes"] = np.asarray(pipeline.classes_).astype(np.int64)
    if model_name == "knn":
        out["knn.fit_x"], out["knn.y"] = np.asarray(est._fit_X), np.asarray(est._y).astype(np.int64)
    elif model_name == "random-forest":
        trees = [t.tree_ for t in est.estimators_]
        offsets = np.cumsum([0] + [t.node_count for t in trees]).astype(np.int64)
        out["forest.offsets"] = offsets
        for key in ("children_left", "children_right"):  # node numbers of the whole forest; -1 for a leaf
            out[f"forest.{key}"] = np.concatenate([np.where(getattr(t, key) < 0, -1, getattr(t, key) + start)
                                                   for t, start in zip(trees, offsets)]).astype(np.int64)
        out["forest.feature"] = np.concatenate([t.feature for t in trees]).astype(np.int64)
        out["forest.threshold"] = np.concatenate([t.threshold for t in trees]).astype(np.float64)
        out["forest.value"] = np.concatenate([t.value[:, 0, :] for t in trees]).astype(np.float64)
    elif model_name == "svm" and args["nystroem"]:
        out["linear.coef"], out["linear.intercept"] = np.asarray(est.coef_), np.asarray(est.intercept_)
    elif model_name == "svm":
        svc = est.calibrated_classifiers_[0].estimator if hasattr(est, "calibrated_classifiers_") else est
        out["svc.support_vectors"] = np.asarray(svc.support_vectors_)
        out["svc.dual_coef"] = np.asarray(svc._dual_coef_)  # libsvm's signs (binary fits flip the public ones)
        out["svc.intercept"] = np.asarray(svc._intercept_)
        out["svc.n_support"] = np.asarray(svc.n_support_).astype(np.int64)
        out["svc.gamma"] = np.asarray(float(svc._gamma), dtype=np.float64)
        if hasattr(est, "calibrated_classifiers_"):
            cal = est.calibrated_classifiers_[0].calibrators
            out["calibration.a"] = np.asarray([c.a_ for c in cal], dtype=np.float64)
            out["calibration.b"] = np.asarray([c.b_ for c in cal], dtype=np.float64)
    elif model_name == "logreg-sklearn":
        out["linear.coef"], out["linear.intercept"] = np.asarray(est.coef_), np.asarray(est.intercept_)
    else:
        raise MnistlabError(f"unknown classical model {model_name!r}")
    return out


# ----------------------------------------------------------------------------------------------
# What a checkpoint must hold, checked


class _Checker:
    def __init__(self, arrays: dict[str, np.ndarray], source: str):
        self.arrays, self.source, self.used = arrays, source, set()

    def fail(self, name: str, expected: str, found=None) -> MnistlabError:
        shown = "" if found is None else f" (found {found})"
        return MnistlabError(f"{self.source}: classical model array {name!r}: expected {expected}{shown}",
                             hint="the checkpoint is damaged or altered; mnistlab loads the arrays it wrote")

    def get(self, name: str, kind: str, ndim: int, shape: tuple | None = None) -> np.ndarray:
        """The array `name`, of dtype kind "float" or "int", `ndim` dimensions, and `shape` where given
        (None entries free); floats must be finite."""
        if name not in self.arrays:
            raise self.fail(name, "present")
        a = self.arrays[name]
        self.used.add(name)
        want = np.float64 if kind == "float64" else None
        ok_kind = (a.dtype.kind == "f" and a.dtype.itemsize in (4, 8)) if kind.startswith("float") \
            else a.dtype == np.int64
        if not ok_kind or (want is not None and a.dtype != want):
            raise self.fail(name, f"{'int64' if kind == 'int' else kind} values", a.dtype)
        if a.ndim != ndim or (shape is not None and any(s is not None and s != d for s, d in zip(shape, a.shape))):
            raise self.fail(name, f"shape {tuple('?' if s is None else s for s in (shape or (None,) * ndim))}",
                            tuple(a.shape))
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise self.fail(name, "finite values", "NaN or infinity")
        return a

    def index(self, name: str, ndim: int, shape, lo: int, hi: int) -> np.ndarray:
        """An int64 array of values in lo..hi-1."""
        a = self.get(name, "int", ndim, shape)
        if a.size and (a.min() < lo or a.max() >= hi):
            raise self.fail(name, f"values from {lo} to {hi - 1}", f"{a.min()} to {a.max()}")
        return a

    def done(self) -> None:
        extra = sorted(set(self.arrays) - self.used)
        if extra:
            raise self.fail(extra[0], f"no such array for this model (it holds {', '.join(sorted(self.used))})")


def feature_width(args: dict, in_shape) -> int:
    """The width of the feature vector the first step reads: pixels, or HOG histograms (see hog_features)."""
    c, h, w = in_shape
    if args["features"] == "hog":
        cells_h, cells_w = h // max(2, w // 4), w // max(2, w // 4)
        return max(0, cells_h - 1) * max(0, cells_w - 1) * 4 * 9
    return c * h * w


def check(model_name: str, args: dict, arrays: dict[str, np.ndarray], num_classes: int, in_shape,
          source: str) -> dict[str, np.ndarray]:
    """The arrays, checked against the model's options, input shape and class count (see the module
    docstring); a clear error naming the array otherwise."""
    c = _Checker(arrays, source)
    width = feature_width(args, in_shape)
    classes = c.index("classes", 1, None, 0, num_classes)
    if not 2 <= len(classes) <= num_classes or (np.diff(classes) <= 0).any():
        raise c.fail("classes", f"2 to {num_classes} distinct class indices in increasing order", classes.tolist()[:8])
    n_cls = len(classes)
    if args["pca"]:
        if args["pca"] > width:
            raise c.fail("pca.components", f"at most {width} components for {width} features", args["pca"])
        c.get("pca.mean", "float", 1, (width,))
        c.get("pca.components", "float", 2, (args["pca"], width))
        width = args["pca"]
    if model_name == "svm" and args["nystroem"]:
        basis = c.get("nystroem.basis", "float", 2, (None, width))
        if not 1 <= len(basis) <= args["nystroem"]:
            raise c.fail("nystroem.basis", f"1 to {args['nystroem']} basis rows", len(basis))
        c.get("nystroem.normalization", "float", 2, (len(basis), len(basis)))
        gamma = c.get("nystroem.gamma", "float64", 0)
        if not gamma > 0:
            raise c.fail("nystroem.gamma", "a positive number", float(gamma))
        width = len(basis)
    if model_name == "knn":
        fit_x = c.get("knn.fit_x", "float", 2, (None, width))
        if not args["k"] <= len(fit_x) <= MAX_EXAMPLES:
            raise c.fail("knn.fit_x", f"{args['k']} (k) to {MAX_EXAMPLES:,} stored examples", len(fit_x))
        c.index("knn.y", 1, (len(fit_x),), 0, n_cls)
    elif model_name == "random-forest":
        offsets = c.get("forest.offsets", "int", 1)
        total = int(offsets[-1]) if len(offsets) else -1
        if not 2 <= len(offsets) <= 5001 or offsets[0] != 0 or (np.diff(offsets) < 1).any() or total > MAX_NODES:
            raise c.fail("forest.offsets", f"0, then increasing node counts (1 to 5000 trees, at most {MAX_NODES:,} "
                         "nodes)", offsets.tolist()[:6])
        left = c.index("forest.children_left", 1, (total,), -1, total)
        right = c.index("forest.children_right", 1, (total,), -1, total)
        c.index("forest.feature", 1, (total,), -2, width)
        c.get("forest.threshold", "float64", 1, (total,))
        value = c.get("forest.value", "float64", 2, (total, n_cls))
        _check_trees(c, offsets, left, right, arrays["forest.feature"], value)
    elif model_name == "svm" and not args["nystroem"]:
        sv = c.get("svc.support_vectors", "float", 2, (None, width))
        if not 1 <= len(sv) <= MAX_EXAMPLES:
            raise c.fail("svc.support_vectors", f"1 to {MAX_EXAMPLES:,} support vectors", len(sv))
        n_support = c.index("svc.n_support", 1, (n_cls,), 0, len(sv) + 1)
        if int(n_support.sum()) != len(sv):
            raise c.fail("svc.n_support", f"counts per class that add up to the {len(sv)} support vectors",
                         n_support.tolist())
        c.get("svc.dual_coef", "float", 2, (n_cls - 1, len(sv)))
        c.get("svc.intercept", "float", 1, (n_cls * (n_cls - 1) // 2,))
        gamma = c.get("svc.gamma", "float64", 0)
        if not gamma > 0 and args["kernel"] != "linear":
            raise c.fail("svc.gamma", "a positive number", float(gamma))
        if args["probability"]:
            k = n_cls if n_cls > 2 else 1
            c.get("calibration.a", "float64", 1, (k,))
            c.get("calibration.b", "float64", 1, (k,))
    else:  # logreg-sklearn, and the linear SVM on Nystroem features
        rows = n_cls if n_cls > 2 else 1
        c.get("linear.coef", "float", 2, (rows, width))
        c.get("linear.intercept", "float", 1, (rows,))
    c.done()
    return arrays


def _check_trees(c: _Checker, offsets, left, right, feature, value) -> None:
    """Each tree's nodes: leaves (-1, -1, feature -2) or splits whose children lie inside the same tree
    and after their parent (scikit-learn builds depth first), so a walk from the root always ends."""
    node = np.arange(len(left))
    tree_end = np.repeat(offsets[1:], np.diff(offsets))
    leaf = left == -1
    if ((right == -1) != leaf).any():
        raise c.fail("forest.children_right", "-1 exactly where children_left is -1 (a leaf)")
    inner = ~leaf
    if ((left[inner] <= node[inner]) | (right[inner] <= node[inner]) | (left[inner] >= tree_end[inner])
            | (right[inner] >= tree_end[inner])).any():
        raise c.fail("forest.children_left", "each split's children after it and inside its own tree")
    if (feature[inner] < 0).any():
        raise c.fail("forest.feature", "a feature index at every split")
    parent = np.full(len(left), -1)
    children = np.concatenate([left[inner], right[inner]])
    if len(np.unique(children)) != len(children) or len(children) != len(left) - (len(offsets) - 1):
        raise c.fail("forest.children_left", "a tree: every node but the roots the child of exactly one split")
    parent[left[inner]], parent[right[inner]] = node[inner], node[inner]
    depth, up = (parent >= 0).astype(np.int64), parent.copy()
    while (up >= 0).any():  # pointer jumping: log2(depth) rounds
        has = up >= 0
        depth[has] += depth[up[has]]
        up[has] = up[up[has]]
        if depth.max() > MAX_DEPTH:
            raise c.fail("forest.children_left", f"trees at most {MAX_DEPTH} levels deep", f"depth {depth.max()}+")
    if (value < 0).any():
        raise c.fail("forest.value", "class weights of 0 or more")


# ----------------------------------------------------------------------------------------------
# Inference on the arrays


def _kernel(x: np.ndarray, basis: np.ndarray, kernel: str, gamma: float, coef0: float, degree: int) -> np.ndarray:
    params = {"rbf": {"gamma": gamma}, "poly": {"gamma": gamma, "coef0": coef0, "degree": degree},
              "sigmoid": {"gamma": gamma, "coef0": coef0}, "linear": {}}[kernel]
    if not (np.isfinite(x).all() and np.isfinite(basis).all()):  # finite but huge stored values overflow
        raise MnistlabError("classical model: its stored arrays turn these images into values that are not finite "
                            "(inf or nan) before the kernel", hint="the checkpoint is damaged or was edited: retrain "
                            "it, or load one you trust")
    # imported here, not at the top: scikit-learn costs every command 1.5 s of start-up
    from sklearn.metrics.pairwise import pairwise_kernels

    return pairwise_kernels(x, basis, metric=kernel, **params)


def transform(model_name: str, args: dict, arrays: dict, x: np.ndarray) -> np.ndarray:
    """The features after the pipeline's PCA and Nystroem steps."""
    if args["pca"]:
        comp = arrays["pca.components"]
        x = x @ comp.T - arrays["pca.mean"] @ comp.T  # scikit-learn's order of operations
    if model_name == "svm" and args["nystroem"]:
        k = _kernel(x, arrays["nystroem.basis"], args["kernel"], float(arrays["nystroem.gamma"]), 1.0, 3)
        x = k @ arrays["nystroem.normalization"].T
    return x


BLOCK_ELEMENTS = 1 << 24  # query rows x stored rows per block of kernel or distance values (128 MB in float64)


def scores(model_name: str, args: dict, arrays: dict, features: np.ndarray) -> tuple[np.ndarray, bool]:
    """(per-class scores (N, classes present), whether they are probabilities) of the feature matrix,
    in blocks of rows small enough that a model with many stored rows needs bounded memory."""
    stored = max(len(arrays.get("knn.fit_x", ())), len(arrays.get("svc.support_vectors", ())), 1)
    rows = max(1, min(len(features), BLOCK_ELEMENTS // stored))
    parts, probs = [], True
    for start in range(0, len(features), rows):
        part, probs = _block_scores(model_name, args, arrays, features[start:start + rows])
        parts.append(part)
    if not parts:
        return np.zeros((0, len(arrays["classes"]))), probs
    return np.concatenate(parts), probs


def _block_scores(model_name: str, args: dict, arrays: dict, features: np.ndarray) -> tuple[np.ndarray, bool]:
    x = transform(model_name, args, arrays, features)
    if model_name == "knn":
        return knn_proba(arrays["knn.fit_x"], arrays["knn.y"], len(arrays["classes"]), x, args["k"], args["metric"],
                         args["weights"]), True
    if model_name == "random-forest":
        return forest_proba(arrays, x), True
    if model_name == "logreg-sklearn":
        d = x @ arrays["linear.coef"].T + arrays["linear.intercept"]
        if d.shape[1] == 1:
            p = 1 / (1 + np.exp(-d[:, 0]))
            return np.stack([1 - p, p], 1), True
        d = d - d.max(1, keepdims=True)
        e = np.exp(d)
        return e / e.sum(1, keepdims=True), True
    if args["nystroem"]:  # a linear SVM: its one-vs-rest decision values
        d = x @ arrays["linear.coef"].T + arrays["linear.intercept"]
        return (np.concatenate([-d, d], 1) if d.shape[1] == 1 else d), False
    d = svc_decision(arrays, x, args["kernel"])
    if args["probability"]:
        return calibrated_proba(arrays, d), True
    return (np.stack([-d, d], 1) if d.ndim == 1 else d), False


def svc_decision(arrays: dict, x: np.ndarray, kernel: str) -> np.ndarray:
    """libsvm's decision values, as SVC.decision_function gives them (one-vs-rest for 3+ classes)."""
    sv, coef, intercept = arrays["svc.support_vectors"], arrays["svc.dual_coef"], arrays["svc.intercept"]
    n_support = arrays["svc.n_support"]
    k = _kernel(x.astype(np.float64), sv.astype(np.float64), kernel, float(arrays["svc.gamma"]),
                KERNEL_DEFAULTS["coef0"], KERNEL_DEFAULTS["degree"])
    start = np.concatenate([[0], np.cumsum(n_support)])
    n_cls = len(n_support)
    dec = np.empty((len(x), n_cls * (n_cls - 1) // 2))
    p = 0
    for i in range(n_cls):
        for j in range(i + 1, n_cls):
            si, sj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
            dec[:, p] = k[:, si] @ coef[j - 1, si] + k[:, sj] @ coef[i, sj] + intercept[p]
            p += 1
    if n_cls == 2:
        return -dec[:, 0]
    # imported here: see _kernel
    from sklearn.utils.multiclass import _ovr_decision_function

    return _ovr_decision_function(dec < 0, -dec, n_cls)


def calibrated_proba(arrays: dict, decision: np.ndarray) -> np.ndarray:
    """Platt-scaled class probabilities of SVM decision values (CalibratedClassifierCV, sigmoid)."""
    a, b = arrays["calibration.a"], arrays["calibration.b"]
    d = decision.reshape(len(decision), -1)
    cal = 1 / (1 + np.exp(a * d + b))  # expit(-(a d + b))
    if d.shape[1] == 1:
        return np.concatenate([1 - cal, cal], 1)
    total = cal.sum(1, keepdims=True)
    proba = np.divide(cal, total, out=np.full_like(cal, 1 / cal.shape[1]), where=total != 0)
    proba[(1.0 < proba) & (proba <= 1.0 + 1e-5)] = 1.0
    return proba


def knn_proba(fit_x: np.ndarray, y: np.ndarray, n_cls: int, x: np.ndarray, k: int, metric: str,
              weights: str) -> np.ndarray:
    """Brute-force k nearest neighbours' class shares (distance-weighted when asked), in float64."""
    train = torch.from_numpy(np.ascontiguousarray(fit_x, dtype=np.float64))
    labels = torch.from_numpy(y)
    if metric == "euclidean":
        train_sq = (train * train).sum(1)
    if metric == "cosine":
        train = train / train.norm(dim=1, keepdim=True).clamp_min(1e-300)
    out = []
    for start in range(0, len(x), KNN_CHUNK):  # (scores() already bounds rows x stored examples)
        q = torch.from_numpy(np.ascontiguousarray(x[start:start + KNN_CHUNK], dtype=np.float64))
        if metric == "euclidean":
            d = ((q * q).sum(1, keepdim=True) - 2 * q @ train.T + train_sq).clamp_min(0).sqrt()
        elif metric == "cosine":
            d = 1 - (q / q.norm(dim=1, keepdim=True).clamp_min(1e-300)) @ train.T
        else:
            d = torch.cdist(q, train, p=1.0 if metric == "manhattan" else float("inf"))
        dist, idx = torch.topk(d, k, dim=1, largest=False, sorted=True)
        if weights == "distance":
            zero = dist == 0
            w = torch.where(zero.any(1, keepdim=True), zero.double(), 1 / dist.clamp_min(1e-300))
        else:
            w = torch.ones_like(dist)
        proba = torch.zeros(len(q), n_cls, dtype=torch.float64).scatter_add_(1, labels[idx], w)
        out.append((proba / proba.sum(1, keepdim=True)).numpy())
    return np.concatenate(out) if out else np.zeros((0, n_cls))


TREES_PER_BLOCK = 32


def forest_proba(arrays: dict, x: np.ndarray) -> np.ndarray:
    """The mean over trees of each leaf's class fractions (a leaf with no weight counts as all zeros),
    walking all samples down a block of trees at once, one level per round."""
    offsets, left, right = arrays["forest.offsets"], arrays["forest.children_left"], arrays["forest.children_right"]
    feature, threshold, value = arrays["forest.feature"], arrays["forest.threshold"], arrays["forest.value"]
    n, trees = len(x), len(offsets) - 1
    x = np.ascontiguousarray(x, dtype=np.float32)  # scikit-learn's trees compare float32 inputs
    total = np.zeros((n, value.shape[1]))
    for first in range(0, trees, TREES_PER_BLOCK):
        node = np.repeat(offsets[:-1][first:first + TREES_PER_BLOCK][:, None], n, 1)  # (block, N): at the roots
        rows = np.broadcast_to(np.arange(n), node.shape)
        active = left[node] != -1
        while active.any():  # at most the forest's checked depth of rounds
            f = np.where(active, feature[node], 0)
            go_left = x[rows, f] <= threshold[node]
            node = np.where(active, np.where(go_left, left[node], right[node]), node)
            active = left[node] != -1
        leaf = value[node]  # (block, N, classes)
        weight = leaf.sum(2, keepdims=True)
        total += (leaf / np.where(weight == 0, 1.0, weight)).sum(0)
    return total / trees


def refuse_skops(source: str) -> MnistlabError:
    """The error for a checkpoint of the older format (skops bytes): never parsed."""
    return MnistlabError(f"{source}: a classical model saved as skops bytes (mnistlab's earlier format), which "
                         "mnistlab no longer loads: rebuilding a scikit-learn object graph from a file trusts "
                         "the file (a tampered tree can crash the process)",
                         hint="fit it again (`mnistlab train --model ...`; a classical fit takes seconds to "
                              "minutes): its checkpoint then holds plain arrays that are checked before use")
