"""Datasets as uint8 tensors: `load` finds, verifies and decodes a dataset's files; `Split` and
`Dataset` hold the result with the registry's metadata.

    import mnistlab
    ds = mnistlab.load("mnist")                     # Dataset: .train, .test, .classes, .sources
    (x_train, y_train), (x_test, y_test) = mnistlab.load_data("mnist")   # numpy, like Keras
    train, val = ds.train.split(validation=5000, seed=0, stratified=True)
    x, y = train.prepare(normalize="standardize", layout="nchw", device="cpu")
    mine = mnistlab.Dataset.from_arrays(x_train, y_train, x_test, y_test, classes=[...])  # your own
    mnistlab.load("path/to/folder")                # root/train/<class>/*.png, root/test/<class>/*.png
    mnistlab.load("mnist", imbalance="exp:100", label_noise="sym:0.4", seed=0)   # a variant (data/variants.py)

A dataset of one's own is usable by every verb by its name: from arrays, the name given (or
`arrays-HASH`), known to this process; from a folder, its path, read again (and its content hash
compared) by any process.

Files are looked for where `mnistlab.data.paths` says and read and verified by
`mnistlab.data.files`, decoded by `mnistlab.data.formats`, and downloaded by
`mnistlab.data.fetch` only when no copy is found.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .. import atomic, pictures
from ..errors import MnistlabError
from . import files, formats, own, paths, variants
from .fetch import fetch
from .files import FileRecord, Located
from .normalization import pixel_stats, prepare
from .registry import DatasetSpec, SplitSpec, get_spec
from .variants import Variant, VariantSpec, draw, with_positions

VERIFIED = ("sha256", "md5", "archive md5")  # FileRecord.verified values that checked something


@dataclass(frozen=True)
class Holdout:
    """Which training examples were held out for validation: how they were drawn, and their hash.

    Saved with every run, so that evaluating on "val" uses exactly the examples the run never
    trained on, and an ensemble's members can be shown to share them.
    """

    count: int  # examples held out
    seed: int  # seed of the draw
    stratified: bool  # each class's share kept
    sha256: str  # of the held-out positions in the training split (sorted int64, little-endian)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Holdout:
        return cls(int(d["count"]), int(d["seed"]), bool(d["stratified"]), str(d["sha256"]))

    @staticmethod
    def hash_of(indices: torch.Tensor) -> str:
        return files.sha256(indices.to(torch.int64).cpu().numpy().astype("<i8").tobytes())


class Split:
    """One split of a dataset: uint8 images and int64 labels as tensors, plus the dataset's metadata.

    images: (N,H,W) for grayscale, (N,C,H,W) for colour; labels: (N,) int64 in [0, num_classes).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, name: str, dataset: Dataset):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{name}: {images.shape[0]} images but {labels.shape[0]} labels")
        self.images = images
        self.labels = labels
        self.name = name
        self.dataset = dataset
        self.holdout: Holdout | None = None  # set on a validation split drawn by `split`
        self.variant: Variant | None = None  # set on a training split made by a variant (data/variants.py)

    def __len__(self) -> int:
        return self.images.shape[0]

    def _repr_html_(self) -> str:
        """The first nine images with their labels, as the Keras and PyTorch tutorials plot them."""
        n = min(9, len(self))
        captions = [self.classes[int(y)] for y in self.labels[:n]]
        return pictures.grid_html(self.images[:n].numpy(), captions, repr(self))

    def __repr__(self) -> str:
        return (f"Split({self.dataset.name}:{self.name}, n={len(self)}, images={tuple(self.images.shape)} "
                f"{self.images.dtype}, device={self.images.device})")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.dataset.classes

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels.cpu(), minlength=self.dataset.num_classes)

    def subset(self, indices, name: str | None = None) -> Split:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        return Split(self.images[idx], self.labels[idx], name=name or f"{self.name}[subset]", dataset=self.dataset)

    def split(self, validation: int | float = 5000, *, seed: int = 0, stratified: bool = True) -> tuple[Split, Split]:
        """(rest, validation): hold out `validation` examples (a count, or a fraction < 1), seeded.

        Stratified keeps each class's share in both parts (largest-remainder rounding, so the
        validation part has exactly the requested size). The same seed gives the same split;
        `holdout(val)` records which examples it holds.
        """
        n = len(self)
        val_idx = self.validation_indices(validation, seed=seed, stratified=stratified)
        mask = torch.ones(n, dtype=torch.bool)
        mask[val_idx] = False
        rest_idx = torch.nonzero(mask).flatten()
        val = self.subset(val_idx, name="val")
        val.holdout = Holdout(len(val_idx), seed, stratified, Holdout.hash_of(val_idx))
        return self.subset(rest_idx, name=f"{self.name}-minus-val"), val

    def validation_indices(self, validation: int | float = 5000, *, seed: int = 0,
                           stratified: bool = True) -> torch.Tensor:
        """The sorted positions `split` holds out (for code that needs to know which images they are)."""
        n = len(self)
        if isinstance(validation, float) and not validation.is_integer():
            n_val = round(validation * n) if 0 < validation < 1 else -1
        else:
            n_val = int(validation)
        if not 0 < n_val < n:
            raise MnistlabError(f"validation={validation!r}: expected a count between 1 and {n - 1} "
                                f"or a fraction between 0 and 1 for the {n} examples of {self.name}")
        return torch.sort(self._draw_validation(n_val, seed, stratified)).values  # the original order kept

    def _draw_validation(self, n_val: int, seed: int, stratified: bool) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        labels = self.labels.cpu()
        if not stratified:
            return torch.randperm(len(self), generator=gen)[:n_val]
        counts = torch.bincount(labels, minlength=self.dataset.num_classes).double()
        quota = counts * n_val / len(self)
        take = quota.floor().long()
        short = n_val - int(take.sum())
        if short:  # give the remaining places to the largest remainders (ties: lower class)
            order = torch.argsort(quota - take, descending=True, stable=True)
            take[order[:short]] += 1
        val_parts = []
        for c in range(self.dataset.num_classes):
            members = torch.nonzero(labels == c).flatten()
            if take[c] > 0:
                val_parts.append(members[torch.randperm(len(members), generator=gen)[: take[c]]])
        return torch.cat(val_parts)

    def drawn(self, spec: VariantSpec, *, where: str | None = None, positions: torch.Tensor | None = None,
              stream_offset: int = 0) -> Split:
        """The variant `spec` of this split (data/variants.py): the examples it keeps, with their given
        labels, and `.variant` saying what it did. `positions` are this split's examples' positions in
        the split it was cut from (recorded, hashed); `stream_offset` moves the seeded draws."""
        v = draw(self.labels, self.dataset.num_classes, spec, stream_offset=stream_offset,
                 where=where or f"{self.dataset.name}'s {self.name} split")
        if positions is not None:
            v = with_positions(v, positions)
        out = Split(self.images[v.indices.to(self.images.device)], v.labels.to(self.labels.device), name=self.name,
                    dataset=self.dataset)
        out.variant = v
        return out

    def held_out(self, record: Holdout) -> tuple[Split, Split]:
        """(rest, validation) exactly as the run that wrote `record` drew them; an error if the data
        or the draw no longer give the same examples."""
        rest, val = self.split(record.count, seed=record.seed, stratified=record.stratified)
        if val.holdout.sha256 != record.sha256:
            raise MnistlabError(
                f"the validation split recorded with the model ({record.count} examples, seed {record.seed}) is "
                f"not what {self.dataset.name}'s {self.name} split gives now (hash {val.holdout.sha256[:12]}, "
                f"recorded {record.sha256[:12]})",
                hint="the dataset's files changed since the model was trained: evaluate on the test split, or "
                "retrain")
        return rest, val

    def to(self, device: str | torch.device) -> Split:
        moved = Split(self.images.to(device), self.labels.to(device), name=self.name, dataset=self.dataset)
        moved.holdout, moved.variant = self.holdout, self.variant
        return moved

    def prepare(self, normalize: str = "standardize", layout: str = "nchw", device=None,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) as float images and int64 labels on `device`, normalised with the dataset's stats."""
        mean, std = self.dataset.stats
        x = prepare(self.images, normalize=normalize, mean=mean, std=std, layout=layout, device=device, dtype=dtype)
        y = self.labels.to(x.device)
        return x, y

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images.cpu().numpy(), self.labels.cpu().numpy()

    def torch_dataset(self, normalize: str = "standardize", transform=None) -> TensorImageDataset:
        """A torch `Dataset` of (image (C,H,W) float, label int), for code that wants one."""
        x, y = self.prepare(normalize=normalize, layout="nchw")
        return TensorImageDataset(x, y, transform=transform)

    def loader(self, batch_size: int = 64, *, shuffle: bool = True, seed: int = 0, normalize: str = "standardize",
               transform=None, **kwargs) -> torch.utils.data.DataLoader:
        """A seeded `DataLoader` over this split (the fast path in mnistlab itself does not need one)."""
        gen = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(self.torch_dataset(normalize, transform), batch_size=batch_size,
                                           shuffle=shuffle, generator=gen, **kwargs)


class TensorImageDataset(torch.utils.data.Dataset):
    """(image, label) pairs over prepared tensors; `transform` applies to each image tensor."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform=None):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        img = self.x[i]
        return (self.transform(img) if self.transform else img), int(self.y[i])


@dataclass
class Dataset:
    """A loaded dataset: its spec, the train and test splits, and where each file came from."""

    spec: DatasetSpec
    sources: list[FileRecord]
    train: Split = field(init=False, repr=False)
    test: Split = field(init=False, repr=False)
    variant: VariantSpec | None = None  # a variant of `base`: its training split made by it, the test split unchanged
    base: str | None = None  # the name of the dataset it is a variant of

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.spec.image_shape

    @cached_property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) of the training images scaled to [0,1]: the normalisation constants.

        Computed once per dataset content and remembered in the cache (keyed by the content hash).
        """
        path = paths.cache_dir() / "stats" / f"{self.content_hash}.json"
        try:
            saved = json.loads(path.read_text())
            mean, std = tuple(map(float, saved["mean"])), tuple(map(float, saved["std"]))
            if len(mean) == len(std) == self.spec.channels:
                return mean, std
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not computed yet, or a damaged cache file: compute again
        mean, std = pixel_stats(self.train.images)
        if all(r.verified in VERIFIED for r in self.sources):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic.remove_stale(path.parent)
                atomic.write_text(path, json.dumps({"mean": mean, "std": std}))
            except OSError:
                pass
        return mean, std

    @property
    def content_hash(self) -> str:
        """One SHA-256 over the content hashes of every file read: names this exact data in a summary."""
        joined = "\n".join(f"{r.name} {r.sha256}" for r in sorted(self.sources, key=lambda r: r.name))
        return files.sha256(joined.encode())

    @classmethod
    def from_arrays(cls, x_train, y_train, x_test, y_test, *, classes=None, name: str | None = None) -> Dataset:
        """A dataset of one's own from arrays (uint8 or floats in [0,1]; NHW, NHWC or NCHW; integer labels),
        checked with errors that name the argument. Known by `name` (default `arrays-HASH`) to every
        verb in this process: `mnistlab.train(dataset=ds)` or `dataset=ds.name`."""
        splits = {"train": own.from_arrays(x_train, y_train, "x_train", "y_train"),
                  "test": own.from_arrays(x_test, y_test, "x_test", "y_test")}
        if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
            raise MnistlabError(f"x_test: images of shape {list(splits['test'][0].shape[1:])}, but x_train's are "
                                f"{list(splits['train'][0].shape[1:])}")
        names = own.check_classes(classes, [y for _, y in splits.values()], "from_arrays")
        hashes = {k: own.content_hash(*v) for k, v in splits.items()}
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= 100 or "/" in name):
            raise MnistlabError(f"name {name!r}: expected a short name without '/'")
        ds = _own_dataset(name or f"arrays-{hashes['train'][:10]}", splits, names, hashes, "arrays", "memory")
        OWN[ds.name] = ds
        return ds

    @classmethod
    def from_folder(cls, root: str | os.PathLike) -> Dataset:
        """A dataset from a folder of images in class subfolders (train/<class>/*, test/<class>/*), named
        by the folder's absolute path: any process can read it again."""
        root = Path(root).expanduser().resolve()
        splits, classes = own.read_folder(root)
        hashes = {k: own.content_hash(*v) for k, v in splits.items()}
        return _own_dataset(str(root), splits, classes, hashes, "folder", str(root))

    def split(self, name: str) -> Split:
        if name not in ("train", "test"):
            raise MnistlabError(f"split {name!r}: expected 'train' or 'test'")
        return getattr(self, name)

    def __repr__(self) -> str:
        return f"Dataset({self.name}, train={len(self.train)}, test={len(self.test)}, classes={self.num_classes})"

def _decode_split(spec: DatasetSpec, split_name: str, contents: dict[str, bytes],
                  sources: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) numpy arrays for one split, checked against the spec."""
    split = spec.splits[split_name]
    if spec.format == "cifar10-bin":
        parts = [formats.parse_cifar10(contents[n], sources[n]) for n in split.files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        image_source = label_source = ", ".join(sources[n] for n in split.files)
    else:
        image_name, label_name = split.files
        image_source, label_source = sources[image_name], sources[label_name]
        images = formats.parse_idx(contents[image_name], image_source, ndim=3)
        if spec.format == "qmnist":  # int32 (N, 8) rows; column 0 is the class
            labels = formats.parse_idx(contents[label_name], label_source, ndim=2, dtype_code=0x0C)[:, 0]
        else:
            labels = formats.parse_idx(contents[label_name], label_source, ndim=1)
    if tuple(images.shape[1:]) != spec.image_shape:
        raise MnistlabError(
            f"{image_source}: images are {'x'.join(map(str, images.shape[1:]))}, expected "
            f"{'x'.join(map(str, spec.image_shape))} for {spec.name}",
            hint="this file belongs to another dataset: check --data-dir")
    if images.shape[0] != split.count or labels.shape[0] != split.count:
        raise MnistlabError(
            f"{spec.name} {split_name}: {images.shape[0]} images in {image_source} and {labels.shape[0]} labels "
            f"in {label_source}; expected {split.count} of each",
            hint="the files are truncated or belong to another dataset or split")
    labels = labels.astype(np.int64) - spec.label_offset
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        bad = labels[(labels < 0) | (labels >= spec.num_classes)]
        raise MnistlabError(
            f"{label_source}: {bad.size} label(s) outside 0..{spec.num_classes - 1} (e.g. "
            f"{int(bad[0]) + spec.label_offset} as stored) for the {spec.num_classes} classes of {spec.name}",
            hint="the label file is corrupt or belongs to another dataset")
    if spec.transpose:
        images = images.transpose(0, 2, 1)
    images = np.ascontiguousarray(images)
    if not images.flags.writeable:  # a view of immutable bytes: torch wants memory it may write
        images = images.copy()
    return images, labels



def _read_split_files(spec: DatasetSpec, split_names: Sequence[str], data_dir, verify: bool, download_missing: bool,
                      progress) -> tuple[dict[str, bytes], dict[str, Located], list[FileRecord]]:
    """Every file of the named splits: located (downloaded first if missing and allowed), read, verified."""
    names = [n for s in split_names for n in spec.splits[s].files]
    located = {name: files.locate(spec, spec.files[name], data_dir) for name in names}
    missing = [name for name, loc in located.items() if loc is None]
    if missing:
        if not download_missing:
            raise _missing_error(spec, missing, data_dir)
        fetch(spec.name, data_dir=data_dir, progress=progress, files_wanted=missing)
        for name in missing:
            located[name] = files.locate(spec, spec.files[name], data_dir)
            if located[name] is None:  # pragma: no cover - fetch either places the file or raises
                raise _missing_error(spec, [name], data_dir)
    # Archive members: check each archive once, then read all its members in one pass.
    by_archive: dict[Path, list[Located]] = {}
    for loc in located.values():
        if loc.member is not None:
            by_archive.setdefault(loc.path, []).append(loc)
    raws: dict[str, bytes] = {}
    for archive, members in by_archive.items():
        raws.update(files.read_members(spec, archive, members, verify=verify))
    contents, records = {}, []
    for name in names:
        contents[name], record = files.read_file(spec, located[name], verify=verify, raw=raws.get(name))
        records.append(record)
    return contents, located, records


def _missing_error(spec: DatasetSpec, missing: Sequence[str], data_dir) -> MnistlabError:
    where = "\n".join(f"  - {root}" for _, root in files.search_roots(spec, data_dir))
    return MnistlabError(
        f"{spec.name}: {', '.join(missing)} not found; looked in:\n{where}",
        hint=f"run `mnistlab data fetch {spec.name}` where a network exists, or place the files in "
        f"{paths.cache_dir() / spec.directory} (or a directory named by --data-dir / $MNISTLAB_DATA_DIR)",
    )


OWN: dict[str, Dataset] = {}  # datasets made from arrays in this process, by name


def _own_dataset(name: str, splits: dict, classes: tuple[str, ...], hashes: dict, origin: str,
                 location: str) -> Dataset:
    images = splits["train"][0]
    spec = DatasetSpec(name=name, title=name, description=f"your own data ({origin})",
                       image_shape=tuple(images.shape[1:]), classes=classes,
                       splits={k: SplitSpec(len(v[1]), ()) for k, v in splits.items()}, files={}, mirrors=(),
                       format=origin)
    records = [FileRecord(f"{k}-images-and-labels", location, origin, hashes[k], "content") for k in splits]
    ds = Dataset(spec=spec, sources=records)
    for split_name, (x, y) in splits.items():
        if int(y.max()) >= len(classes):
            raise MnistlabError(f"{location}: {split_name} label {int(y.max())} with {len(classes)} classes")
        setattr(ds, split_name, Split(torch.from_numpy(x), torch.from_numpy(y), name=split_name, dataset=ds))
    return ds


def load(name: str = "mnist", *, data_dir: str | os.PathLike | None = None, download: bool = True,
         verify: bool = True, progress: bool | None = None, imbalance: str = "", label_noise: str = "",
         labels_per_class: int = 0, seed: int = 0) -> Dataset:
    """Load a dataset's train and test splits as uint8 tensors (images) and int64 tensors (labels).

    Looks for the files in `data_dir` (or $MNISTLAB_DATA_DIR), the user cache, the system dataset
    directories and the package's bundled copy; downloads what is missing if `download`. A folder's
    path loads the folder (`Dataset.from_folder`); a name made by `Dataset.from_arrays` its arrays.

    `imbalance` (exp:RHO, step:RHO), `label_noise` (sym:P, pair:P, trace:T, matrix:FILE) and
    `labels_per_class` make a variant of the training split, drawn with `seed` (data/variants.py); the
    test split is never altered. The variant is named `NAME[imbalance=...,seed=S]`, a name every verb
    (and `load`) takes.
    """
    wanted = VariantSpec(imbalance, label_noise, labels_per_class, seed)
    if wanted.active:
        base = load(name, data_dir=data_dir, download=download, verify=verify, progress=progress)
        if base.variant is not None:
            raise MnistlabError(f"{base.name} is a variant already: give the whole variant at once",
                                hint=f"load({base.base!r}, imbalance=..., label_noise=..., labels_per_class=...)")
        return variant_of(base, wanted.check(base.num_classes))
    if isinstance(name, Dataset):
        OWN.setdefault(name.name, name)
        return name
    if name in OWN:
        return OWN[name]
    base_name, named = variants.split_name(name) if isinstance(name, str) else (name, None)
    if named is not None:
        base = load(base_name, data_dir=data_dir, download=download, verify=verify, progress=progress)
        return variant_of(base, named.check(base.num_classes))
    if isinstance(name, (str, os.PathLike)) and ("/" in str(name) or os.sep in str(name)):
        if not Path(name).expanduser().is_dir():
            raise MnistlabError(f"dataset {str(name)!r}: no such folder",
                                hint="an image folder holds train/<class>/*.png and test/<class>/*.png")
        return Dataset.from_folder(name)
    if str(name).startswith("arrays-"):
        raise MnistlabError(f"dataset {name!r} was made from arrays in another Python session",
                            hint="make it again with mnistlab.Dataset.from_arrays(...) and pass it as dataset=")
    spec = get_spec(name)
    contents, located, records = _read_split_files(spec, ["train", "test"], data_dir, verify, download, progress)
    sources = {name: str(loc) for name, loc in located.items()}
    ds = Dataset(spec=spec, sources=records)
    for split_name in ("train", "test"):
        images, labels = _decode_split(spec, split_name, contents, sources)
        setattr(ds, split_name, Split(torch.from_numpy(images), torch.from_numpy(labels), name=split_name, dataset=ds))
    if verify:
        files.remember_decoded(contents, located)
    return ds


def variant_of(base: Dataset, spec: VariantSpec) -> Dataset:
    """`base` with its training split replaced by the variant `spec` draws from all of it; the test
    split, the files and the normalisation constants are the base's."""
    ds = Dataset(spec=dataclasses.replace(base.spec, name=spec.name(base.name)), sources=base.sources,
                 variant=spec, base=base.name)
    ds.__dict__["stats"] = base.stats  # the base's: a variant is normalised as the dataset it comes from
    ds.train = Split(base.train.images, base.train.labels, name="train", dataset=ds).drawn(
        spec, where=f"{base.name}'s training split")
    ds.test = Split(base.test.images, base.test.labels, name="test", dataset=ds)
    return ds


def load_data(name: str = "mnist", **kwargs) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """`((x_train, y_train), (x_test, y_test))` as numpy arrays, like `keras.datasets.mnist.load_data()`.

    Images are uint8 (N,28,28) (CIFAR-10: (N,32,32,3), as Keras gives it); labels uint8.
    """
    ds = load(name, **kwargs)
    out = []
    for split in (ds.train, ds.test):
        x, y = split.numpy()
        if x.ndim == 4:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        out.append((x, y.astype(np.uint8)))
    return out[0], out[1]
