"""The data layer: find, verify and load any dataset of the family as uint8 tensors.

    import mnistlab
    ds = mnistlab.load("mnist")                     # Dataset: .train, .test, .classes, .sources
    (x_train, y_train), (x_test, y_test) = mnistlab.load_data("mnist")   # numpy, like Keras
    train, val = ds.train.split(validation=5000, seed=0, stratified=True)
    x, y = train.prepare(normalize="standardize", layout="nchw", device="cpu")

Files are looked for where `mnistlab.paths` says, verified (see `mnistlab.datasets`), decoded by
`mnistlab.formats`, and downloaded by `mnistlab.fetch` only when no copy is found. A verified
decompressed copy of pinned files is kept in the cache, so a warm load skips gunzip.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .. import atomic
from ..errors import MnistlabError
from . import formats, paths
from .fetch import download, file_md5
from .registry import DatasetSpec, FileSpec, get_spec

# ----------------------------------------------------------------------------------------------
# Finding files


@dataclass(frozen=True)
class Located:
    """Where one data file was found: a plain file, or a member of an archive."""

    file: FileSpec
    path: Path  # the file itself, or the archive holding it
    origin: str  # "data-dir", "cache", "system" or "bundled"
    member: str | None = None  # path inside the archive at `path`

    def __str__(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    @property
    def is_as_distributed(self) -> bool:
        """True when this is the publisher's file itself, so its MD5 pin applies."""
        return self.member is None and self.path.name == self.file.name


def search_roots(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The directories to look in for `spec`'s files, in order, each with its origin label."""
    roots: list[tuple[str, Path]] = []
    user = paths.user_data_dir(data_dir)
    if user is not None:
        roots += [("data-dir", user / spec.directory), ("data-dir", user)]
    roots.append(("cache", paths.cache_dir() / spec.directory))
    for system in paths.system_data_dirs():
        for name in (spec.directory, *spec.system_dirnames):
            roots.append(("system", system / name))
    if spec.bundled:
        roots.append(("bundled", paths.BUNDLED_DIR / spec.directory))
    return roots


def locate(spec: DatasetSpec, file: FileSpec, data_dir=None) -> Located | None:
    """The first copy of `file` in the search roots, compressed, uncompressed or in its archive."""
    for origin, root in search_roots(spec, data_dir):
        for candidate in (file.name, file.stem):
            if (root / candidate).is_file():
                return Located(file, root / candidate, origin)
        if file.member and (root / file.member).is_file():  # an archive the user unpacked
            return Located(file, root / file.member, origin)
        if file.archive and (root / file.archive).is_file():
            return Located(file, root / file.archive, origin, member=file.member)
    return None


# ----------------------------------------------------------------------------------------------
# Reading and verifying


@dataclass(frozen=True)
class FileRecord:
    """What was read for one file: where from, its content hash, and how it was verified."""

    name: str
    location: str
    origin: str
    sha256: str  # SHA-256 of the decompressed content actually read
    verified: str  # "sha256" (content pinned), "md5" (as distributed), "archive md5", or "unverified"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_archive_members(path: Path, members: Sequence[str]) -> dict[str, bytes]:
    """The bytes of several archive members, reading a tar.gz in one pass."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return {m: zf.read(m) for m in members}
        wanted, found = set(members), {}
        with tarfile.open(path, "r:*") as tf:
            for info in tf:
                if info.name in wanted and info.isfile():
                    found[info.name] = tf.extractfile(info).read()
        missing = wanted - set(found)
        if missing:
            raise KeyError(", ".join(sorted(missing)))
        return found
    except KeyError as exc:
        raise MnistlabError(f"{path}: archive lacks member {exc}",
                            hint="the archive is incomplete or not the expected one: fetch it again") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise MnistlabError(f"{path}: cannot read the archive ({exc})",
                            hint="it is probably truncated: delete it and fetch it again") from None


def _verify_archive(spec: DatasetSpec, path: Path) -> None:
    """Check an archive against its pinned MD5, remembering a success in a stamp file beside it."""
    archive = spec.archives.get(path.name)
    if archive is None:
        return
    stat = path.stat()
    stamp = path.with_name(path.name + ".verified")
    key = f"{archive.md5} {stat.st_size} {stat.st_mtime_ns}"
    if stamp.is_file() and stamp.read_text().strip() == key:
        return
    actual = file_md5(path)
    if actual != archive.md5:
        raise MnistlabError(
            f"{path}: MD5 is {actual}, expected {archive.md5} for {archive.name}",
            hint="the archive is corrupt, truncated or another version: delete it and fetch it again",
        )
    try:
        _atomic_write_bytes(stamp, key.encode())
    except OSError:
        pass  # a read-only location: verification just runs again next time


def _decoded_cache_path(located: Located) -> Path:
    """Where the verified decompressed copy of this exact source file (path, size, mtime) is kept.

    Keyed by the source's identity as well as its pinned hash, so that a corrupt file the user
    points at is read (and rejected), never masked by an earlier good copy.
    """
    stat = located.path.stat()
    identity = f"{located.path.resolve()}|{located.member}|{stat.st_size}|{stat.st_mtime_ns}"
    return paths.cache_dir() / "decoded" / f"{located.file.sha256[:16]}-{_sha256(identity.encode())[:16]}"


def _atomic_write_bytes(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, data)


def _read_decoded_cache(located: Located) -> mmap.mmap | None:
    """The cached decompressed content of `located`, but only if it still hashes to the pin.

    Memory-mapped copy-on-write: no zero-filled buffer to allocate, and arrays over it are writable.
    """
    try:
        path = _decoded_cache_path(located)
        with open(path, "rb") as f:
            content = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):  # missing, unreadable, or empty (mmap refuses length 0)
        return None
    return content if _sha256(content) == located.file.sha256 else None


def read_content(spec: DatasetSpec, located: Located, *, verify: bool = True,
                 raw: bytes | None = None) -> tuple[bytes | mmap.mmap, FileRecord]:
    """The decompressed, verified content of one located file, and a record of how it was checked."""
    file = located.file
    if verify and file.sha256:
        cached = _read_decoded_cache(located)
        if cached is not None:
            return cached, FileRecord(file.name, str(located), located.origin, file.sha256, "sha256")
    if raw is None:
        try:
            raw = located.path.read_bytes()
        except OSError as exc:
            raise MnistlabError(f"{located}: cannot read ({exc.strerror})",
                                hint="check the file's permissions") from None
    content = formats.decompress(raw, str(located))
    sha = _sha256(content)
    how = "unverified"
    if verify:
        if file.sha256:
            if sha != file.sha256:
                raise MnistlabError(
                    f"{located}: SHA-256 of the decompressed content is {sha}, expected {file.sha256} "
                    f"for {spec.name}'s {file.stem}",
                    hint="the file is corrupt or a different file: delete it and run "
                    f"`mnistlab data fetch {spec.name}`, or point --data-dir at a good copy",
                )
            how = "sha256"
        elif located.member is not None:
            how = "archive md5"  # checked by _verify_archive before the members were read
        elif file.md5 and located.is_as_distributed:
            actual = hashlib.md5(raw, usedforsecurity=False).hexdigest()
            if actual != file.md5:
                raise MnistlabError(
                    f"{located}: MD5 is {actual}, expected {file.md5} for the file as {spec.title} distributes it",
                    hint="the file is corrupt, truncated or re-compressed: fetch it again; if you re-compressed "
                    "it yourself, load with verify=False (CLI: --no-verify)",
                )
            how = "md5"
    return content, FileRecord(file.name, str(located), located.origin, sha, how)


# ----------------------------------------------------------------------------------------------
# Splits and datasets


def pixel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images scaled to [0,1], exact (integer sums, in chunks)."""
    per_channel = images.unsqueeze(1) if images.dim() == 3 else images  # (N,C,H,W)
    means, stds = [], []
    for c in range(per_channel.shape[1]):
        total = total_sq = 0
        n = 0
        for chunk in per_channel[:, c].reshape(-1).split(1 << 22):
            v = chunk.to(torch.int32)
            total += int(v.sum(dtype=torch.int64))
            total_sq += int((v * v).sum(dtype=torch.int64))
            n += v.numel()
        mean = total / n
        var = total_sq / n - mean * mean
        means.append(mean / 255)
        stds.append(max(var, 0.0) ** 0.5 / 255)
    return tuple(means), tuple(stds)


def prepare(
    images: torch.Tensor,
    *,
    normalize: str = "standardize",
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    layout: str = "nchw",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 images -> float tensor, in one batched op on `device` (the tutorials' preprocessing).

    normalize: "standardize" ((x/255 - mean)/std), "scale" (x/255 in [0,1]) or "none" (values 0..255).
    layout: "nchw" (channel axis added: (N,1,28,28)), "flat" ((N,784)), "nhw" (as stored) or "nhwc".
    mean/std: per-channel statistics of the [0,1]-scaled training images (required to standardize).
    """
    if normalize not in ("standardize", "scale", "none"):
        raise MnistlabError(f"normalize={normalize!r}: expected 'standardize', 'scale' or 'none'")
    if layout not in ("nchw", "flat", "nhw", "nhwc"):
        raise MnistlabError(f"layout={layout!r}: expected 'nchw', 'flat', 'nhw' or 'nhwc'")
    x = images.to(device) if device is not None else images  # move uint8: 4x fewer bytes than float
    x = x.unsqueeze(1) if x.dim() == 3 else x  # (N,C,H,W)
    x = x.to(dtype)
    if normalize != "none":
        x = x / 255.0
    if normalize == "standardize":
        if mean is None or std is None:
            raise MnistlabError("normalize='standardize' needs the training set's mean and std",
                                hint="use Split.prepare(), which knows them, or pass mean= and std=")
        m = torch.as_tensor(mean, dtype=dtype, device=x.device).reshape(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=dtype, device=x.device).reshape(1, -1, 1, 1)
        x = (x - m) / s
    if layout == "flat":
        return x.reshape(x.shape[0], -1)
    if layout == "nhw":
        return x.squeeze(1) if x.shape[1] == 1 else x
    if layout == "nhwc":
        return x.permute(0, 2, 3, 1).contiguous()
    return x


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

    def __len__(self) -> int:
        return self.images.shape[0]

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
        validation part has exactly the requested size). The same seed gives the same split.
        """
        n = len(self)
        if isinstance(validation, float) and not validation.is_integer():
            n_val = round(validation * n) if 0 < validation < 1 else -1
        else:
            n_val = int(validation)
        if not 0 < n_val < n:
            raise MnistlabError(f"validation={validation!r}: expected a count between 1 and {n - 1} "
                                f"or a fraction between 0 and 1 for the {n} examples of {self.name}")
        gen = torch.Generator().manual_seed(seed)
        labels = self.labels.cpu()
        if stratified:
            counts = torch.bincount(labels, minlength=self.dataset.num_classes).double()
            quota = counts * n_val / n
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
            val_idx = torch.cat(val_parts)
        else:
            val_idx = torch.randperm(n, generator=gen)[:n_val]
        mask = torch.ones(n, dtype=torch.bool)
        mask[val_idx] = False
        val_idx = torch.sort(val_idx).values  # keep the original order inside each part
        rest_idx = torch.nonzero(mask).flatten()
        return self.subset(rest_idx, name=f"{self.name}-minus-val"), self.subset(val_idx, name="val")

    def to(self, device: str | torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device), name=self.name, dataset=self.dataset)

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
            return tuple(saved["mean"]), tuple(saved["std"])
        except (OSError, ValueError, KeyError):
            pass
        mean, std = pixel_stats(self.train.images)
        if all(r.verified != "unverified" for r in self.sources):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic.write_text(path, json.dumps({"mean": mean, "std": std}))
            except OSError:
                pass
        return mean, std

    @property
    def content_hash(self) -> str:
        """One SHA-256 over the content hashes of every file read: names this exact data in a summary."""
        joined = "\n".join(f"{r.name} {r.sha256}" for r in sorted(self.sources, key=lambda r: r.name))
        return _sha256(joined.encode())

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
    names = [n for s in split_names for n in spec.splits[s].files]
    located: dict[str, Located] = {}
    missing = []
    for name in names:
        found = locate(spec, spec.files[name], data_dir)
        if found is None:
            missing.append(name)
        else:
            located[name] = found
    if missing:
        if not download_missing:
            raise _missing_error(spec, missing, data_dir)
        fetch(spec.name, data_dir=data_dir, progress=progress, files=missing)
        for name in missing:
            found = locate(spec, spec.files[name], data_dir)
            if found is None:  # pragma: no cover - fetch either places the file or raises
                raise _missing_error(spec, [name], data_dir)
            located[name] = found
    # Archive members: verify each archive once, then read all its members in one pass.
    by_archive: dict[Path, list[str]] = {}
    for name, loc in located.items():
        if loc.member is not None:
            by_archive.setdefault(loc.path, []).append(name)
    raws: dict[str, bytes] = {}
    for archive_path, members in by_archive.items():
        if verify:
            _verify_archive(spec, archive_path)
        data = _read_archive_members(archive_path, [located[n].member for n in members])
        for n in members:
            raws[n] = data[located[n].member]
    contents, records = {}, []
    for name in names:
        content, record = read_content(spec, located[name], verify=verify, raw=raws.get(name))
        contents[name] = content
        records.append(record)
    return contents, located, records


def _remember_decoded(contents: dict[str, bytes], located: dict[str, Located]) -> None:
    """Keep verified decompressed copies of pinned files, so the next load skips gunzip.

    Called only after the whole dataset decoded without error: a failed load leaves the cache as it was.
    """
    for name, content in contents.items():
        loc = located[name]
        if loc.file.sha256 and not isinstance(content, mmap.mmap):  # an mmap came from the cache already
            try:
                _atomic_write_bytes(_decoded_cache_path(loc), content)
            except OSError:
                pass  # the cache is an optimisation only


def _missing_error(spec: DatasetSpec, missing: Sequence[str], data_dir) -> MnistlabError:
    where = "\n".join(f"  - {root}" for _, root in search_roots(spec, data_dir))
    return MnistlabError(
        f"{spec.name}: {', '.join(missing)} not found; looked in:\n{where}",
        hint=f"run `mnistlab data fetch {spec.name}` where a network exists, or place the files in "
        f"{paths.cache_dir() / spec.directory} (or a directory named by --data-dir / $MNISTLAB_DATA_DIR)",
    )


def load(name: str = "mnist", *, data_dir: str | os.PathLike | None = None, download: bool = True,
         verify: bool = True, progress: bool | None = None) -> Dataset:
    """Load a dataset's train and test splits as uint8 tensors (images) and int64 tensors (labels).

    Looks for the files in `data_dir` (or $MNISTLAB_DATA_DIR), the user cache, the system dataset
    directories and the package's bundled copy; downloads what is missing if `download`.
    """
    spec = get_spec(name)
    contents, located, records = _read_split_files(spec, ["train", "test"], data_dir, verify, download, progress)
    sources = {name: str(loc) for name, loc in located.items()}
    ds = Dataset(spec=spec, sources=records)
    for split_name in ("train", "test"):
        images, labels = _decode_split(spec, split_name, contents, sources)
        setattr(ds, split_name, Split(torch.from_numpy(images), torch.from_numpy(labels), name=split_name, dataset=ds))
    if verify:
        _remember_decoded(contents, located)
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


# ----------------------------------------------------------------------------------------------
# Fetching


def fetch(name: str, *, data_dir=None, progress: bool | None = None, files: Sequence[str] | None = None,
          force: bool = False, retries: int = 2, backoff: float = 0.5, timeout: float = 30.0) -> list[Path]:
    """Download the dataset's missing files (or all of them, with `force`) into the user cache."""
    spec = get_spec(name)
    wanted = list(files) if files is not None else list(spec.files)
    target_dir = paths.cache_dir() / spec.directory
    mirrors = paths.extra_mirrors(spec.directory) + list(spec.mirrors)
    fetched: list[Path] = []
    archives_done: set[str] = set()
    for fname in wanted:
        file = spec.files[fname]
        if not force and locate(spec, file, data_dir) is not None:
            continue
        if file.archive:
            if file.archive in archives_done:
                continue
            archive = spec.archives[file.archive]
            dest = target_dir / archive.name

            def check_archive(path: Path, archive=archive) -> None:
                actual = file_md5(path)
                if actual != archive.md5:
                    raise MnistlabError(f"MD5 {actual}, expected {archive.md5}")

            fetched.append(download(archive.name, mirrors, dest, check=check_archive, progress=progress,
                                    retries=retries, backoff=backoff, timeout=timeout,
                                    manual_hint=f"{spec.title} home page: {spec.homepage}"))
            archives_done.add(file.archive)
            continue

        def check_file(path: Path, file=file) -> None:
            raw = path.read_bytes()
            if file.sha256:
                sha = _sha256(formats.decompress(raw, file.name))
                if sha != file.sha256:
                    raise MnistlabError(f"content SHA-256 {sha}, expected {file.sha256}")
            elif file.md5:
                actual = hashlib.md5(raw, usedforsecurity=False).hexdigest()
                if actual != file.md5:
                    raise MnistlabError(f"MD5 {actual}, expected {file.md5}")

        fetched.append(download(file.name, mirrors, target_dir / file.name, check=check_file, progress=progress,
                                retries=retries, backoff=backoff, timeout=timeout,
                                manual_hint=f"{spec.title} home page: {spec.homepage}"))
    return fetched


# ----------------------------------------------------------------------------------------------
# Questions the CLI asks: what is there, what is in it, is it intact


def status(name: str, data_dir=None) -> dict:
    """Where each of a dataset's files would be read from, without reading them."""
    spec = get_spec(name)
    found = {fname: locate(spec, f, data_dir) for fname, f in spec.files.items()}
    present = [loc for loc in found.values() if loc is not None]
    origins = sorted({loc.origin for loc in present})
    state = "present" if len(present) == len(found) else ("partial" if present else "missing")
    return {
        "name": spec.name,
        "title": spec.title,
        "state": state,
        "origin": "+".join(origins) if origins else "download",
        "location": str(next(iter(present)).path.parent) if present else spec.mirrors[0],
        "files": {fname: (str(loc) if loc else None) for fname, loc in found.items()},
    }


def info(name: str, data_dir=None, *, download: bool = False, verify: bool = True) -> dict:
    """Sizes, classes, per-class counts, pixel statistics, content hashes and sources of a dataset."""
    ds = load(name, data_dir=data_dir, download=download, verify=verify)
    mean, std = ds.stats
    return {
        "name": ds.name,
        "title": ds.spec.title,
        "description": ds.spec.description,
        "image_shape": list(ds.image_shape),
        "num_classes": ds.num_classes,
        "classes": list(ds.classes),
        "splits": {
            s.name: {"count": len(s), "class_counts": s.class_counts().tolist()} for s in (ds.train, ds.test)
        },
        "pixel_mean": list(mean),
        "pixel_std": list(std),
        "content_hash": ds.content_hash,
        "files": [r.as_dict() for r in ds.sources],
        "homepage": ds.spec.homepage,
        "license": ds.spec.license,
        "citation": ds.spec.citation,
    }


def verify(name: str, data_dir=None) -> list[dict]:
    """Re-hash every file of a dataset found on disk; one result per file (status ok/missing/error)."""
    spec = get_spec(name)
    results = []
    for fname, file in spec.files.items():
        loc = locate(spec, file, data_dir)
        if loc is None:
            results.append({"file": fname, "status": "missing", "location": None, "detail": "not found"})
            continue
        try:
            if loc.member is not None:
                _verify_archive(spec, loc.path)
                raw = _read_archive_members(loc.path, [loc.member])[loc.member]
            else:
                raw = loc.path.read_bytes()
            content = formats.decompress(raw, str(loc))  # not the decoded cache: re-hash what is on disk
            sha = _sha256(content)
            if file.sha256:
                ok = sha == file.sha256
                how = "content sha256"
                detail = sha if ok else f"content SHA-256 {sha}, expected {file.sha256}"
            elif loc.member is not None:
                ok, how, detail = True, "archive md5", spec.archives[file.archive].md5
            elif file.md5 and loc.is_as_distributed:
                actual = file_md5(loc.path)
                ok, how = actual == file.md5, "md5 as distributed"
                detail = actual if ok else f"MD5 {actual}, expected {file.md5}"
            else:
                ok, how, detail = True, "unpinned", f"content SHA-256 {sha} (no pin to compare with)"
            results.append({"file": fname, "status": "ok" if ok else "mismatch", "location": str(loc),
                            "method": how, "detail": detail})
        except MnistlabError as exc:
            results.append({"file": fname, "status": "error", "location": str(loc), "detail": exc.message})
    return results


def show(name: str, *, out: str | os.PathLike, split: str = "train", count: int = 25, start: int = 0,
         random: bool = False, seed: int = 0, scale: int = 3, data_dir=None, download: bool = False) -> Path:
    """Write a labelled grid of `count` images of a split to the PNG file `out`."""
    from ..analysis.plots import image_grid, save_png

    if count < 1 or count > 1024:
        raise MnistlabError(f"--count {count}: expected 1 to 1024 images")
    if not 1 <= scale <= 16:
        raise MnistlabError(f"--scale {scale}: expected 1 to 16")
    ds = load(name, data_dir=data_dir, download=download)
    part = ds.split(split)
    if random:
        idx = torch.randperm(len(part), generator=torch.Generator().manual_seed(seed))[:count]
    else:
        if not 0 <= start < len(part):
            raise MnistlabError(f"--start {start}: expected 0 to {len(part) - 1} for {name}'s {split} split")
        idx = torch.arange(start, min(start + count, len(part)))
    images = part.images[idx].numpy()
    captions = [f"{int(i)}: {ds.classes[int(y)]}" for i, y in zip(idx, part.labels[idx])]
    return save_png(image_grid(images, captions, scale=scale), out)
