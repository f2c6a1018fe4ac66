"""Which images a verb measures a model on: the test split, or exactly the validation examples its run
held out (by the holdout record saved with the model); and where a verb writes beside a model."""

from __future__ import annotations

from ..data import Holdout, load
from ..data.variants import VariantSpec
from ..errors import MnistlabError
from ..models.predictor import Predictor
from ..training.setup import as_train


def target_split(predictor: Predictor, split: str, dataset: str | None, data_dir=None):
    """(dataset, split) to evaluate `predictor` on: the test split, or exactly the validation examples
    its run held out (by the holdout record saved with the model)."""
    meta = predictor.meta
    name = dataset or meta["dataset"]
    ds = load(name, data_dir=data_dir)
    in_shape = [ds.spec.channels, *ds.image_shape[-2:]]
    if list(meta["in_shape"]) != in_shape or list(meta["classes"]) != list(ds.classes):
        raise MnistlabError(
            f"{meta['source']} was trained for {meta['dataset']} ({'x'.join(map(str, meta['in_shape']))}, "
            f"{meta['num_classes']} classes); {name} is {'x'.join(map(str, in_shape))} with {ds.num_classes} classes",
            hint="evaluate it on the dataset it was trained on (leave out --dataset)")
    if split == "test":
        return ds, ds.test
    if split != "val":
        raise MnistlabError(f"--split {split!r}: expected test or val")
    if name != meta["dataset"]:
        raise MnistlabError(f"--split val with --dataset {name}: the validation split belongs to {meta['dataset']}",
                            hint="evaluate another dataset on its test split")
    if not meta.get("holdout"):
        raise MnistlabError(f"{meta['source']} records no validation split (trained without one, or by an older "
                            "mnistlab)", hint="evaluate --split test")
    holdout = Holdout.from_dict(meta["holdout"])
    val = ds.train.held_out(holdout)[1]
    recorded = ((meta.get("variant") or {}).get("validation") or {})
    if recorded.get("mode") == "as-train":  # the run's validation examples took its variant's imbalance and noise
        cfg = meta.get("config") or {}
        seed = cfg.get("variant_seed") if cfg.get("variant_seed") is not None else cfg.get("seed", 0)
        val = as_train(val, VariantSpec(cfg.get("imbalance", ""), cfg.get("label_noise", ""), 0, seed), holdout)
        if val.variant.sha256 != recorded.get("sha256"):
            raise MnistlabError(f"the validation examples recorded with {meta['source']} (as-train: its variant's "
                                f"imbalance and noise) are not what {name} gives now",
                                hint="the dataset's files (or a noise matrix file) changed: evaluate on the test split")
    return ds, val
