"""Which images a verb measures a model on: the test split, or exactly the validation examples its run
held out (by the holdout record saved with the model); and where a verb writes beside a model."""

from __future__ import annotations

from ..data import Holdout, load
from ..errors import MnistlabError
from ..models.predictor import Predictor


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
    return ds, ds.train.held_out(Holdout.from_dict(meta["holdout"]))[1]
