"""The baselines suite: the classical models beside the networks, in one table.

Every row is a real run (`mnistlab.training.engine.train`, the same data, the same 5,000-image
validation split held out, the test set read once), fitted or trained in this process: accuracy
(mean over the row's seeds; the kNN, SVM and logistic-regression fits do not depend on the seed), the
seconds to fit or train, inference images per second on the 10,000 test images (predictor.probs,
batches of 2,000, after one warm-up run for the networks), and the model's size (parameters, support
vectors, stored examples or tree nodes). The reference is the `fast` CNN: each row's train time is
also given as a multiple of its. The anchors are LeCun et al.'s table and the literature; `vs_anchor`
is the row's test accuracy minus the anchor's, in points.

    mnistlab bench baselines            # about 8 minutes on 2 CPU cores
    mnistlab bench baselines --quick    # 5,000 training images, one seed, a minute
"""

from __future__ import annotations

import tempfile
import time

from ..data import load
from ..models.predictor import load_predictor
from ..stats import over_seeds
from ..training.config import resolve
from ..training.engine import train
from .registry import suite

# name, model, settings, seeds, anchor test accuracy (%) and its source
ROWS = [
    ("kNN (k=3, L2)", "knn", {}, [0], 96.91, "LeCun et al.: k-NN, Euclidean (L2), 3.09% error"),
    ("kNN (k=3, L2), deskewed", "knn", {"prepare": "deskew"}, [0], 97.6,
     "LeCun et al.: k-NN, Euclidean (L2), deskewing, 2.4% error"),
    ("SVM (RBF, C=10, on 50 PCA components)", "svm", {"model_args": {"pca": 50}}, [0], 98.6,
     "LeCun et al.: SVM, Gaussian kernel, 1.4% error"),
    ("random forest (100 trees)", "random-forest", {}, [0, 1, 2], 97.0, "about 97% (the literature)"),
    ("logistic regression (scikit-learn)", "logreg-sklearn", {"model_args": {"max_iter": 200}}, [0], 92.4,
     "LeCun et al.: linear classifier, 7.6-12% error"),
    ("logistic regression on HOG features", "logreg-sklearn", {"model_args": {"features": "hog", "max_iter": 200}},
     [0], None, ""),
    ("MLP (seed-mlp recipe)", "recipe:seed-mlp", {}, [0, 1, 2], 98.0, "the seeds: a 3-layer MLP, about 98%"),
    ("fast CNN (fast recipe, the reference)", "recipe:fast", {}, [0, 1, 2], 99.2, "the seeds: classic CNNs, about "
     "99.2%"),
]


def _mean(values):
    stat = over_seeds(values)
    return stat["mean"] if stat else None


@suite
def bench_baselines(quick: bool = False) -> list[dict]:
    import torch


    test = load("mnist").test
    rows = []
    with tempfile.TemporaryDirectory(prefix="mnistlab-bench-baselines-") as tmp:
        for name, model, settings, seeds, anchor, source in ROWS:
            if quick:
                seeds = seeds[:1]
            recipe = model.removeprefix("recipe:") if model.startswith("recipe:") else None
            overrides = {**({"model": model} if recipe is None else {}), **settings, "out": tmp, "progress": False,
                         "validation": 5000}  # every row holds out the same 5,000 images (a recipe may not)
            if quick:
                overrides["train_subset"] = 5000
            runs, speeds = [], []
            for seed in seeds:
                cfg = resolve(recipe, {**overrides, "seed": seed, "name": f"{model.replace(':', '-')}-{len(rows)}-s{seed}"})
                summary = train(cfg, quiet=True)
                runs.append(summary)
                predictor = load_predictor(summary["run_dir"])
                if recipe is not None:
                    predictor.probs(test.images[:2000])  # warm-up: allocator, kernels
                t0 = time.perf_counter()
                predictor.probs(test.images)
                speeds.append(len(test) / (time.perf_counter() - t0))
            test = over_seeds(100 * r["test_acc"] for r in runs)
            classical = runs[0].get("classical")
            row = {"name": name, "model": model, "seeds": seeds,
                   "val_acc": _mean([100 * r["val_acc"] for r in runs if r.get("val_acc") is not None]),
                   "test_acc": test["mean"], "test_std": test["std"],
                   "train_s": _mean(r["train_s"] for r in runs), "infer_img_s": _mean(speeds),
                   "size": classical["size"]["what"] if classical else f"{runs[0]['params']:,} parameters",
                   "params": runs[0]["params"], "anchor": anchor, "anchor_of": {"source": source},
                   "vs_anchor": test["mean"] - anchor if anchor is not None else None,
                   "threads": torch.get_num_threads(), "settings": settings}
            rows.append(row)
    reference = next(r for r in rows if r["model"] == "recipe:fast")
    for r in rows:
        r["train_vs_fast"] = r["train_s"] / reference["train_s"]
    return rows
