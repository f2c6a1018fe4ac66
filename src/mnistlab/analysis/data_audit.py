"""Data audit: the mislabeled, ambiguous, near-duplicated and out-of-place images of a dataset.

    mnistlab audit mnist --split all --folds 5 --out audit-mnist/
    table = mnistlab.audit("mnist", split="test")          # a pandas DataFrame, worst first

1. Out-of-fold probabilities: the images are cut into K stratified folds; for each fold a model is
   trained by mnistlab's own engine (`training.engine.fit`, the recipe's settings) on every other
   labelled image the dataset has (the other folds, and when one split is audited, all of the other
   split too) and scores the fold, so every image is scored by a model that never saw it, and as
   strong as the data allows. `folds.json` records what each fold's model trained on. The
   probabilities, the model's penultimate features and the folds are cached in the output directory
   (`oof.npz`, keyed by dataset hash, split, folds, recipe and seed), so the cleanlab step re-runs in
   seconds.
2. Confident learning (cleanlab, Northcutt et al. 2021): `find_label_issues` on the out-of-fold
   probabilities flags labels the models contradict, ranked by self-confidence (the out-of-fold
   probability of the given label); Datalab finds outliers in the model's features and
   near-duplicates in pixel space.
   A flagged image whose given label still has >= 10% probability is called ambiguous (it reads as
   both), below that mislabeled.
3. Outputs: `ranking.csv` (every image audited, worst first: its label-quality score, the
   out-of-fold self-confidence, and its rank), `issues.csv` / `issues.json` (the flagged rows: index,
   split, index in split, given and suggested label, score, issue type), a gallery of the top-ranked label issues, counts per class, near-duplicate
   pairs (those crossing train/test marked: leakage), and with `--clean-effect`, the validation
   accuracy of the recipe trained with the flagged training images kept, removed, or relabelled.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import atomic, schema
from ..data import load
from ..data.files import sha256
from ..data.normalization import to_unit
from ..errors import MnistlabError
from ..models.default import DEFAULT_MODEL
from ..models.features import features_and_probs
from ..models.inference import BATCH_SIZE
from ..models.predictor import load_predictor
from ..pictures import image_grid, save_png
from ..stats import over_seeds
from ..tables import csv_cell
from ..training.config import resolve
from ..training.engine import fit

SPLITS = ("train", "test", "all")
AMBIGUOUS_P = 0.10  # a flagged image whose given label keeps this much probability reads as both
# Confident learning counts an image as "confidently class j" when p_j reaches j's threshold, the mean
# p_j over the images labelled j. Fold models as strong as the audit's put every threshold above 0.98,
# which no image they disagree with reaches, so on a clean-looking split it estimates zero noise and
# flags nothing. Capping the thresholds here counts a disagreement the model is 90% sure of. Chosen on
# 50 labels flipped in MNIST test (seed 30), out-of-fold scores of the audit recipe: uncapped 47 of
# them flagged (+2 others), cap 0.9 49 (+13), cap 0.5 50 (+51); on the split as given 0, 13, 51.
CONFIDENT_CAP = 0.9
# Every model the audit trains sees exactly the images it is given, and no label smoothing: smoothing
# caps each probability near 1 - smoothing, below the per-class thresholds confident learning counts
# against, and MNIST's `fast` recipe then flags 5 of 70,000 images instead of ~100.
AUDIT_SETTINGS = {"validation": 0, "train_subset": 0, "label_smoothing": 0.0, "progress": False}


@dataclass
class Pool:
    """The images under audit: train, test, or both (train first), with where each came from."""

    images: torch.Tensor
    labels: torch.Tensor
    split: np.ndarray  # "train" | "test" per image
    index: np.ndarray  # position inside its own split


def pool(ds, split: str) -> Pool:
    """The images under audit."""
    if split not in SPLITS:
        raise MnistlabError(f"--split {split!r}: expected train, test or all")
    return _pool([("train", ds.train), ("test", ds.test)] if split == "all" else [(split, getattr(ds, split))])


def rest_of(ds, split: str) -> Pool | None:
    """The labelled images of the dataset outside the audited split: every fold's model trains on
    them too (None when both splits are audited)."""
    others = [name for name in ("train", "test") if split not in (name, "all")]
    return _pool([(name, getattr(ds, name)) for name in others]) if others else None


def _pool(parts) -> Pool:
    return Pool(torch.cat([p.images for _, p in parts]), torch.cat([p.labels for _, p in parts]),
                np.concatenate([np.full(len(p), name) for name, p in parts]),
                np.concatenate([np.arange(len(p)) for _, p in parts]))


def fold_assignment(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified folds: fold number per image (scikit-learn's StratifiedKFold, shuffled, seeded)."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels)
    if folds < 2 or folds > counts[counts > 0].min():
        raise MnistlabError(f"--folds {folds}: expected 2 to {counts[counts > 0].min()} (the smallest class's size)")
    out = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, scored) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        out[scored] = k
    return out


def score(model, norm, images: torch.Tensor, batch: int = BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, penultimate features: what Datalab compares) of `model` on uint8 images."""
    feats, probs = features_and_probs(model, images, norm, batch_size=batch)
    return probs.numpy(), feats.numpy()


def out_of_fold(ds, data: Pool, *, folds: int, recipe: str, seed: int, overrides: dict | None = None,
                cache: Path | None = None, quiet: bool = True, rest: Pool | None = None) -> dict:
    """Out-of-fold probabilities and features for every image of `data` (see the module docstring);
    each fold's model trains on the other folds and on all of `rest`."""

    labels = data.labels.numpy()
    rest_splits = sorted(set(rest.split)) if rest is not None else []
    key = {"dataset": ds.name, "dataset_hash": ds.content_hash, "n": len(labels), "splits": sorted(set(data.split)),
           "folds": folds, "recipe": recipe, "seed": seed, "overrides": overrides or {},
           "also_trained_on": {"splits": rest_splits, "n": len(rest.labels) if rest is not None else 0}}
    cached = read_cache(cache, key, ds.num_classes) if cache is not None else None
    say = (lambda text: None) if quiet else (lambda text: print(text, flush=True))
    if cached is not None:
        say(f"out-of-fold scores read from {cache} (the same data, folds, recipe and seed)")
        return cached
    say(f"scoring {len(labels):,} images out of fold: {folds} models of recipe {recipe}, each trained without "
        "the images it scores")
    fold = fold_assignment(labels, folds, seed)
    cfg = resolve(recipe, {**AUDIT_SETTINGS, "seed": seed, **(overrides or {})})
    probs = np.zeros((len(labels), ds.num_classes), dtype=np.float32)
    features, t0 = None, time.perf_counter()
    trained_on = []  # which images each fold's model saw: never its own
    for k in range(folds):
        trained, scored = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        trained_on.append(trained)
        images, targets = data.images[trained], data.labels[trained]
        if rest is not None:
            images, targets = torch.cat([images, rest.images]), torch.cat([targets, rest.labels])
        t_fold = time.perf_counter()
        model, norm = fit(cfg, ds, images, targets)
        p, f = score(model, norm, data.images[scored])
        say(f"  fold {k + 1}/{folds}: trained on {len(images):,} images, scored {len(scored):,} "
            f"({(p.argmax(1) == labels[scored]).mean():.2%} right), {time.perf_counter() - t_fold:.0f}s")
        probs[scored] = p
        if features is None:
            features = np.zeros((len(labels), f.shape[1]), dtype=np.float32)
        features[scored] = f
    meta = {"key": key, "seconds": time.perf_counter() - t0,
            "accuracy": float((probs.argmax(1) == labels).mean())}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(cache / "oof.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, probs=probs, features=features, fold=fold)
        atomic.write_text(cache / "oof.json", json.dumps(meta, indent=2))
        atomic.write_text(cache / "folds.json", json.dumps(fold_record(data, fold, trained_on, rest), indent=1))
    return {"probs": probs, "features": features, "fold": fold, **meta, "cached": False, "trained_on": trained_on}


def fold_record(data: Pool, fold: np.ndarray, trained_on: list[np.ndarray], rest: Pool | None) -> list[dict]:
    """What each fold's model trained on and scored: counts per split and the SHA-256 of the audited
    positions it trained on (sorted int64, little-endian), so a reader can check it never saw its fold."""
    out = []
    for k, trained in enumerate(trained_on):
        scored = np.flatnonzero(fold == k)
        seen = {str(name): int((data.split[trained] == name).sum()) for name in sorted(set(data.split))}
        for name in sorted(set(rest.split)) if rest is not None else []:
            seen[str(name)] = seen.get(str(name), 0) + int((rest.split == name).sum())
        out.append({"fold": k, "scored": int(len(scored)), "trained_on": seen,
                    "trained_on_audited_sha256": sha256(np.sort(trained).astype("<i8").tobytes()),
                    "overlap_with_own_fold": int(np.intersect1d(trained, scored).size)})
    return out


def knn_graph(x: torch.Tensor, k: int = 10, chunk: int = 2048):
    """Exact k-nearest-neighbour graph by cosine distance (1 - cos, the metric Datalab itself picks for
    features of more than 3 dimensions), self excluded, nearest first, as scipy CSR: the form Datalab
    takes. Computed in blocks of matrix products, minutes faster than scikit-learn's pairwise loop;
    each pair's distance once (a block serves its rows and, transposed, its columns' rows), so half
    the products of a row-by-row pass: MNIST test's 10,000 images 2.3-2.9 s -> 1.7 s on one thread."""
    from scipy.sparse import csr_matrix

    x = x.float().reshape(len(x), -1)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n = len(x)
    if n <= k:  # each image needs k others
        raise MnistlabError(f"the audit compares each image with its {k} nearest others: it needs more than {k} "
                            f"images, and has {n}")
    best = torch.full((n, k), float("inf"))  # each row's k nearest so far: distances, then indices
    where = torch.zeros((n, k), dtype=torch.long)

    def merge(row0: int, block: torch.Tensor, col0: int) -> None:
        rows = slice(row0, row0 + len(block))
        value, pick = torch.cat([best[rows], block], 1).topk(k, dim=1, largest=False)
        columns = torch.arange(col0, col0 + block.shape[1]).expand(len(block), -1)
        best[rows], where[rows] = value, torch.cat([where[rows], columns], 1).gather(1, pick)

    for i in range(0, n, chunk):
        for j in range(i, n, chunk):
            d = (1 - x[i:i + chunk] @ x[j:j + chunk].T).clamp_min_(0)
            if i == j:
                d.fill_diagonal_(float("inf"))  # not its own neighbour
            merge(i, d, j)
            if i != j:
                merge(j, d.T, i)
    return csr_matrix((best.numpy().ravel(), where.numpy().ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))


MAX_FEATURE_WIDTH = 16_384  # penultimate features a cache may declare (the zoo's widest: a few thousand)
OOF_SPEC = schema.obj({"key": schema.obj(), "seconds": schema.number(0), "accuracy": schema.number(0, 1)})


def _npz_members(path: Path) -> dict[str, tuple[tuple, str]]:
    """{member: (shape, dtype)} of an .npz file, read from each .npy header without reading the arrays."""
    import zipfile

    out = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist()[:16]:
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
            out[info.filename.removesuffix(".npy")] = (tuple(shape), dtype.str)
    return out


def read_cache(cache: Path, key: dict, num_classes: int) -> dict | None:
    """The cached out-of-fold scores if `cache` holds them for exactly `key`, whole and well-formed;
    None otherwise (a missing, foreign, truncated or corrupt cache is recomputed, never trusted). The
    arrays' shapes are checked against the dataset they claim (from the .npy headers, before any is
    read), so a small file declaring huge arrays costs nothing; their values must be finite."""
    import zipfile

    try:
        meta = schema.read_json(cache / "oof.json", OOF_SPEC)
        if meta.get("key") != key:
            return None
        n = key["n"]
        declared = _npz_members(cache / "oof.npz")
        f_shape = declared.get("features", ((),))[0]
        expected = {"probs": ((n, num_classes), "<f4"), "fold": ((n,), None)}
        if (any(declared.get(k, ((), ""))[0] != shape or (kind and declared[k][1] != kind)
                for k, (shape, kind) in expected.items())
                or len(f_shape) != 2 or f_shape[0] != n or not 1 <= f_shape[1] <= MAX_FEATURE_WIDTH
                or declared["features"][1] != "<f4"):
            return None
        with np.load(cache / "oof.npz", allow_pickle=False) as f:
            probs, features, fold = f["probs"], f["features"], f["fold"]
        if (not np.isfinite(probs).all() or not np.isfinite(features).all() or fold.dtype.kind not in "iu"
                or (len(fold) and (fold.min() < 0 or fold.max() >= key["folds"]))):
            return None
        return {"probs": probs, "features": features, "fold": fold, "seconds": float(meta["seconds"]),
                "accuracy": float(meta["accuracy"]), "key": key, "cached": True}
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, MnistlabError):
        return None


def find_issues(labels: np.ndarray, probs: np.ndarray, features: np.ndarray, classes, data: Pool):
    """The ranked issues table (pandas) and the near-duplicate pairs, from out-of-fold scores."""
    try:
        import pandas as pd
        from cleanlab import Datalab
        from cleanlab.count import compute_confident_joint, get_confident_thresholds
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise MnistlabError("mnistlab audit needs cleanlab (with Datalab) and pandas",
                            hint="pip install 'mnistlab[audit]'") from None

    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    thresholds = np.minimum(get_confident_thresholds(labels, probs), CONFIDENT_CAP)
    joint = compute_confident_joint(labels, probs, thresholds=thresholds)
    flagged = find_label_issues(labels, probs, confident_joint=joint, return_indices_ranked_by="self_confidence")
    suggested = probs.argmax(1)
    rows = []
    for i in flagged:
        p_given = float(probs[i, labels[i]])
        rows.append({"index": int(i), "issue": "ambiguous" if p_given >= AMBIGUOUS_P else "mislabeled",
                     "score": float(quality[i])})
    # outliers in the model's feature space (out of place for what the classes look like); near-duplicates
    # in pixel space: in feature space every plain "1" is the near-duplicate of every other
    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    lab.find_issues(knn_graph=knn_graph(torch.from_numpy(features)), issue_types={"outlier": {}})
    outliers = lab.get_issues("outlier")
    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    lab.find_issues(knn_graph=knn_graph(to_unit(data.images.reshape(len(labels), -1))),
                    issue_types={"near_duplicate": {}})
    near = lab.get_issues("near_duplicate")
    for i in np.flatnonzero(outliers["is_outlier_issue"].to_numpy()):
        rows.append({"index": int(i), "issue": "outlier", "score": float(outliers["outlier_score"].iloc[i])})
    pairs, seen = [], set()
    for i in np.flatnonzero(near["is_near_duplicate_issue"].to_numpy()):
        rows.append({"index": int(i), "issue": "near_duplicate", "score": float(near["near_duplicate_score"].iloc[i])})
        for j in near["near_duplicate_sets"].iloc[i]:
            a, b = sorted((int(i), int(j)))
            if (a, b) not in seen:
                seen.add((a, b))
                pairs.append({"a": a, "b": b, "a_split": str(data.split[a]), "b_split": str(data.split[b]),
                              "a_index": int(data.index[a]), "b_index": int(data.index[b]),
                              "a_label": classes[labels[a]], "b_label": classes[labels[b]],
                              "crosses_splits": bool(data.split[a] != data.split[b])})
    order = {"mislabeled": 0, "ambiguous": 1, "near_duplicate": 2, "outlier": 3}
    table = pd.DataFrame(rows, columns=["index", "issue", "score"])
    if len(table):
        idx = table["index"].to_numpy()
        table.insert(1, "split", data.split[idx])
        table.insert(2, "index_in_split", data.index[idx])
        table["given_label"] = [classes[c] for c in labels[idx]]
        table["suggested_label"] = [classes[c] for c in suggested[idx]]
        table["p_given"] = probs[idx, labels[idx]]
        table["p_suggested"] = probs[idx, suggested[idx]]
        table = table.assign(_o=table["issue"].map(order)).sort_values(["_o", "score"], kind="stable")
        table = table.drop(columns="_o").reset_index(drop=True)
    return table, pairs


def clean_effect(ds, table, *, recipe: str, seeds: list[int], overrides: dict | None = None,
                 validation: int = 5000, quiet: bool = True) -> dict:
    """Validation accuracy of `recipe` trained on the training split (less its stratified validation
    holdout, seed 0) as it is, without the flagged training images, and with them relabelled to the
    suggested label; the mean over `seeds`. The validation images keep their given labels."""

    train = ds.train
    val_idx = train.validation_indices(validation, seed=0, stratified=True)
    keep = np.ones(len(train), dtype=bool)
    keep[val_idx.numpy()] = False
    label_rows = table[(table["split"] == "train") & table["issue"].isin(["mislabeled", "ambiguous"])]
    flagged = np.zeros(len(train), dtype=bool)
    flagged[label_rows["index_in_split"].to_numpy()] = True
    flagged &= keep  # a flagged validation image stays where it is, label and all
    suggested = {int(i): ds.classes.index(s) for i, s in zip(label_rows["index_in_split"], label_rows["suggested_label"])}
    relabelled = train.labels.clone()
    for i in np.flatnonzero(flagged):
        relabelled[i] = suggested[int(i)]
    variants = {"as given": (keep, train.labels), "flagged removed": (keep & ~flagged, train.labels),
                "flagged relabelled": (keep, relabelled)}
    val_x, val_y = train.images[val_idx], train.labels[val_idx].numpy()
    out = {"validation": validation, "flagged_training_images": int(flagged.sum()), "seeds": seeds, "recipe": recipe,
           "variants": {}}
    for name, (mask, labels) in variants.items():
        accs = []
        for seed in seeds:
            cfg = resolve(recipe, {**AUDIT_SETTINGS, "seed": seed, **(overrides or {})})
            idx = torch.from_numpy(np.flatnonzero(mask))
            model, norm = fit(cfg, ds, train.images[idx], labels[idx], quiet=quiet)
            probs, _ = score(model, norm, val_x)
            accs.append(float((probs.argmax(1) == val_y).mean()))
        stat = over_seeds(accs)
        out["variants"][name] = {"val_accuracy": accs, "mean": stat["mean"], "std": stat["std"],
                                 "training_images": int(mask.sum())}
    return out


def audit(dataset: str = "mnist", *, split: str = "test", folds: int = 5, recipe: str = "audit", seed: int = 0,
          overrides: dict | None = None, out=None, data_dir=None, quiet: bool = True):
    """The ranked issues table as a pandas DataFrame (see the module docstring); with `out`, the
    out-of-fold scores are cached there. `table.attrs` holds the run's facts and near-duplicate pairs."""
    return _audit(dataset, split=split, folds=folds, recipe=recipe, seed=seed, overrides=overrides, out=out,
                  data_dir=data_dir, quiet=quiet)[0]


def _audit(dataset, *, split, folds, recipe, seed, overrides=None, out=None, data_dir=None, quiet=True):
    """(table, out-of-fold scores, the pool of images, the dataset): `audit` and the command share it."""

    if not isinstance(folds, int) or isinstance(folds, bool):
        raise MnistlabError(f"--folds {folds!r}: expected a whole number of folds, like 5")
    ds = load(dataset, data_dir=data_dir)
    data = pool(ds, split)
    oof = out_of_fold(ds, data, folds=folds, recipe=recipe, seed=seed, overrides=overrides,
                      cache=Path(out) if out else None, quiet=quiet, rest=rest_of(ds, split))
    labels = data.labels.numpy()
    table, pairs = find_issues(labels, oof["probs"], oof["features"], list(ds.classes), data)
    table.attrs.update({"dataset": ds.name, "split": split, "n": len(labels), "folds": folds, "recipe": recipe,
                        "seed": seed, "oof_accuracy": oof["accuracy"], "oof_seconds": oof["seconds"],
                        "cached": oof["cached"], "near_duplicate_pairs": pairs})
    return table, oof, data, ds


def run(dataset: str, *, split: str = "test", folds: int = 5, recipe: str = "audit", seed: int = 0, out=None,
        clean_seeds: int = 0, top: int = 40, data_dir=None, quiet: bool = False) -> tuple[dict, object]:
    """`mnistlab audit`: (its summary, the ranked issues table); the table as CSV and JSON, a gallery of the top label issues, counts per class,
    near-duplicate pairs, the default model's test errors that are label issues, and (clean_seeds > 0)
    the accuracy effect of cleaning."""
    for name, value, low in (("--top", top, 1), ("--clean-seeds", clean_seeds, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 10_000:
            raise MnistlabError(f"{name} {value!r}: expected a whole number from {low}")
    if clean_seeds and split == "test":  # refused before any training, not after it
        raise MnistlabError("--clean-seeds needs the training images in the audit", hint="use --split train or all")
    out_dir = Path(out or f"audit-{dataset}-{split}")
    out_dir.mkdir(parents=True, exist_ok=True)
    table, oof, data, ds = _audit(dataset, split=split, folds=folds, recipe=recipe, seed=seed, out=out_dir,
                                  data_dir=data_dir, quiet=quiet)
    classes = list(ds.classes)
    labels = data.labels.numpy()
    label_issues = table[table["issue"].isin(["mislabeled", "ambiguous"])]
    counts = {c: {"images": int((labels == i).sum()),
                  "label_issues": int((label_issues["given_label"] == c).sum())} for i, c in enumerate(classes)}
    summary = {"dataset": ds.name, "split": split, "n": len(labels), "folds": folds, "recipe": recipe, "seed": seed,
               "oof_accuracy": oof["accuracy"], "oof_seconds": oof["seconds"], "cached": oof["cached"],
               "issues": {k: int(v) for k, v in table["issue"].value_counts().items()},
               "label_issue_rate": len(label_issues) / len(labels), "per_class": counts,
               "disagreements": int((oof["probs"].argmax(1) != labels).sum()),
               "near_duplicate_pairs": table.attrs["near_duplicate_pairs"],
               "cross_split_pairs": sum(p["crosses_splits"] for p in table.attrs["near_duplicate_pairs"])}
    summary["default_model"] = _default_model_errors(ds, data, label_issues)
    if clean_seeds:
        summary["cleaning"] = clean_effect(ds, table, recipe=recipe, seeds=list(range(clean_seeds)))
    table.attrs.clear()
    write_csv(table, out_dir / "issues.csv")
    atomic.write_text(out_dir / "issues.json", table.to_json(orient="records", indent=1))
    ranked = ranking(data, oof["probs"], classes, table)
    write_csv(ranked, out_dir / "ranking.csv")
    picture = gallery(data, table, out_dir / "top-label-issues.png", top)
    summary["gallery"] = str(picture) if picture else None
    picture = gallery(data, ranked, out_dir / "ranking-top.png", top)
    summary["gallery_ranking"] = str(picture) if picture else None
    if "test" in set(data.split):  # the test set's own 20 worst: what caps every model's test accuracy
        picture = gallery(data, ranked[ranked["split"] == "test"], out_dir / "test-top20.png", 20)
        summary["gallery_test"] = str(picture) if picture else None
    summary["ranking"] = str(out_dir / "ranking.csv")
    atomic.write_text(out_dir / "summary.json", json.dumps(summary, indent=2))
    summary["out"] = str(out_dir)
    return summary, table


def write_csv(table, path: Path) -> None:
    """A table as CSV, atomically, its text cells safe to open in a spreadsheet (class names come from
    anyone's folders: `=cmd|...` would run as a formula; tables.csv_cell)."""
    text_columns = [c for c in table.columns if getattr(table[c].dtype, "kind", "O") not in "iufbc"]
    safe = table.assign(**{c: table[c].map(csv_cell) for c in text_columns})
    with atomic.replacing(path) as tmp:
        safe.to_csv(tmp, index=False)


def _default_model_errors(ds, data: Pool, label_issues) -> dict | None:
    """How many of the packaged default model's test errors are images the audit flagged."""

    if "test" not in set(data.split):
        return None
    predictor = load_predictor(DEFAULT_MODEL)
    if predictor.meta.get("dataset") != ds.name:
        return None
    pred = predictor.probs(ds.test.images).argmax(1).cpu().numpy()
    wrong = np.flatnonzero(pred != ds.test.labels.numpy())
    flagged = set(label_issues.loc[label_issues["split"] == "test", "index_in_split"].astype(int))
    hits = [int(i) for i in wrong if int(i) in flagged]
    return {"test_errors": len(wrong), "test_error_rate": len(wrong) / len(ds.test),
            "errors_on_flagged_images": len(hits), "indices": hits}


def ranking(data: Pool, probs: np.ndarray, classes, table):
    """Every audited image, worst label first: its label-quality score (the out-of-fold probability of
    its given label, cleanlab's self-confidence), rank (1 = the label the models believed least), the
    suggested label, and the issue the audit flagged it with, if any. Ties keep the pool's order."""
    import pandas as pd

    labels = data.labels.numpy()
    quality = probs[np.arange(len(labels)), labels]
    order = np.argsort(quality, kind="stable")
    suggested = probs.argmax(1)
    flagged = {}
    for row in table.itertuples():  # the first (most serious) issue of each image, in the table's order
        flagged.setdefault(int(row.index), row.issue)
    return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "index": order, "split": data.split[order],
                         "index_in_split": data.index[order], "given_label": [classes[c] for c in labels[order]],
                         "suggested_label": [classes[c] for c in suggested[order]],
                         "label_quality": quality[order], "p_suggested": probs[order, suggested[order]],
                         "issue": [flagged.get(int(i), "") for i in order]})


def gallery(data: Pool, table, out, top: int = 40):
    """The first `top` label issues of `table`, or the first `top` rows of a `ranking`: each image
    with its split (when both are audited) and index, given > suggested label; in a ranking, * marks
    an image the audit flagged."""

    ranked = "rank" in table.columns
    rows = table if ranked else table[table["issue"].isin(["mislabeled", "ambiguous"])]
    rows = rows.head(top)
    if not len(rows):
        return None
    tiles = data.images[torch.from_numpy(rows["index"].to_numpy().copy())].numpy()
    prefix = len(set(data.split)) > 1  # "tr"/"te" only where both splits are audited
    captions = [f"{r.split[:2] if prefix else ''}{r.index_in_split}{'*' if ranked and r.issue else ''}: "
                f"{r.given_label}>{r.suggested_label}" for r in rows.itertuples()]
    return save_png(image_grid(tiles, captions, scale=4, cols=10), out)


# Below this out-of-fold accuracy the fold models are too weak for their flags to mean much (on MNIST
# they read 99% of the digits right; 150 images a fold read 16%).
WEAK_FOLDS = 0.5


def format_summary(s: dict) -> str:
    """What `mnistlab audit` prints."""
    took = "scores from the cache" if s["cached"] else f"{s['oof_seconds']:.0f} s"
    lines = [f"audit of {s['dataset']} {s['split']} ({s['n']} images): {s['folds']}-fold out-of-fold accuracy "
             f"{s['oof_accuracy']:.2%} with recipe {s['recipe']} (seed {s['seed']}; {took})",
             "issues: " + (", ".join(f"{k} {v}" for k, v in s["issues"].items()) or "none"),
             f"label issues (mislabeled + ambiguous): {s['label_issue_rate']:.2%} of the images; per class: "
             + ", ".join(f"{c} {v['label_issues']}" for c, v in s["per_class"].items()),
             f"near-duplicate pairs: {len(s['near_duplicate_pairs'])}, crossing train/test: {s['cross_split_pairs']}"]
    if s["oof_accuracy"] < WEAK_FOLDS:
        per_fold = s["n"] * (s["folds"] - 1) // s["folds"]
        lines.insert(1, f"warning: the fold models read only {s['oof_accuracy']:.0%} of the images right (each "
                     f"learned from {per_fold:,} images): their flags say more about the models than about the "
                     "labels; audit more images (--split all) or give a stronger --model")
    if not s["label_issue_rate"] and s.get("disagreements"):
        lines.append(f"confident learning flagged no label: the out-of-fold models disagree with the given label "
                     f"of {s['disagreements']} images, none with the confidence its per-class thresholds ask "
                     f"(at most {CONFIDENT_CAP}); ranking.csv lists every image, worst first")
    d = s.get("default_model")
    if d:
        lines.append(f"the default model's test errors: {d['test_errors']} ({d['test_error_rate']:.2%}); of them "
                     f"{d['errors_on_flagged_images']} on images flagged as label issues"
                     + ("; humans misread about 0.2% of MNIST digits (the figure usually quoted)"
                        if s["dataset"] == "mnist" else ""))
    c = s.get("cleaning")
    if c:
        lines.append(f"cleaning ({c['flagged_training_images']} flagged training images; validation accuracy of "
                     f"{c['recipe']}, mean over seeds {c['seeds']}):")
        for name, v in c["variants"].items():
            lines.append(f"  {name:<20} {v['mean']:.2%} +- {v['std']:.2%}  ({v['training_images']} training images)")
    return "\n".join(lines)

