"""The registry of datasets: each one of the MNIST family described once, in one place.

A `DatasetSpec` names the files of each split, how to verify them, their format, shape, class
names and the mirrors to download from. Adding a dataset means adding one `register(...)` call;
the CLI's choices and the parametrised tests read this registry.

Verification: where the SHA-256 of a file's *decompressed* content is pinned (`FileSpec.sha256`),
that is what is checked, so a re-compressed copy of the same bytes (Debian re-gzips Fashion-MNIST)
still verifies. For datasets whose content hash is not yet pinned here, the file as distributed is
checked against its publisher's MD5 (the same pins torchvision uses), and archives are checked at
download time and by `mnistlab data verify`.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field

from ..errors import MnistlabError
from ..names import did_you_mean


@dataclass(frozen=True)
class FileSpec:
    """One data file as the dataset's publisher distributes it."""

    name: str  # file name on the mirrors, e.g. "train-images-idx3-ubyte.gz"
    sha256: str | None = None  # SHA-256 of the decompressed content; None where not pinned yet
    md5: str | None = None  # MD5 of the file exactly as distributed (publisher's / torchvision's pin)
    archive: str | None = None  # name of the archive this file ships inside, if any
    member: str | None = None  # its path inside that archive

    @property
    def stem(self) -> str:
        """The name without a compression suffix: what an uncompressed copy is called."""
        return self.name[:-3] if self.name.endswith(".gz") else self.name


@dataclass(frozen=True)
class ArchiveSpec:
    """An archive (zip or tar.gz) that carries several data files."""

    name: str  # file name on the mirrors, e.g. "gzip.zip"
    md5: str  # MD5 of the archive as distributed
    size: int | None = None  # bytes, for the progress bar and a quick sanity check


@dataclass(frozen=True)
class SplitSpec:
    """One split (train or test): its files and how many examples it must hold."""

    count: int  # number of examples the files must contain
    files: tuple[str, ...]  # FileSpec names; for IDX formats: (images, labels)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything mnistlab needs to find, verify, download and decode one dataset."""

    name: str  # registry key, e.g. "fashion-mnist"
    title: str  # human name
    description: str  # one line
    image_shape: tuple[int, ...]  # (28, 28) for grayscale, (3, 32, 32) for colour (channels first)
    classes: tuple[str, ...]  # class names, index = label
    splits: dict[str, SplitSpec]  # "train", "test"
    files: dict[str, FileSpec]  # by FileSpec.name
    mirrors: tuple[str, ...]  # base URLs, tried in order; file/archive names are appended
    format: str = "idx"  # "idx", "qmnist" (idx images + idx2 int32 labels) or "cifar10-bin"
    dirname: str | None = None  # sub-directory name under each data root (default: name)
    system_dirnames: tuple[str, ...] = ()  # extra names under system roots (e.g. Debian's)
    archives: dict[str, ArchiveSpec] = field(default_factory=dict)
    label_offset: int = 0  # subtracted from stored labels (EMNIST letters are stored 1..26)
    transpose: bool = False  # EMNIST stores images column-major: transpose to read them upright
    bundled: bool = False  # shipped inside the package (MNIST)
    homepage: str = ""
    license: str = ""
    citation: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def directory(self) -> str:
        return self.dirname or self.name

    @property
    def channels(self) -> int:
        return self.image_shape[0] if len(self.image_shape) == 3 else 1

    def max_content_size(self, file_name: str) -> int:
        """The most bytes `file_name`'s decompressed content can hold for the split counts registered here.

        Exact for IDX files (header + data); for CIFAR-10 batches, the whole split's records (a batch
        holds a share of them). Decompression stops past this size, so a gzip bomb costs nothing.
        """
        for split in self.splits.values():
            if file_name not in split.files:
                continue
            if self.format == "cifar10-bin":
                return split.count * (1 + 3 * 32 * 32)
            if file_name == split.files[0]:  # IDX images: magic, 3 dimensions, N*H*W bytes
                return 16 + split.count * math.prod(self.image_shape)
            if self.format == "qmnist":  # IDX int32 label rows: magic, 2 dimensions, N*8 int32
                return 12 + split.count * 8 * 4
            return 8 + split.count  # IDX uint8 labels: magic, 1 dimension, N bytes
        raise ValueError(f"{self.name}: {file_name!r} belongs to no split")

    def describe_file(self, file_name: str) -> str:
        """`file_name`'s role in words, for error messages: '60000 28x28 images of mnist's train split'."""
        for split_name, split in self.splits.items():
            if file_name in split.files:
                if file_name == split.files[0] or self.format == "cifar10-bin":
                    what = "x".join(map(str, self.image_shape)) + " images"
                else:
                    what = "labels"
                return f"{split.count} {what} of {self.name}'s {split_name} split"
        return f"a file of {self.name}"


DATASETS: dict[str, DatasetSpec] = {}
ALIASES: dict[str, str] = {}


def register(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add a dataset to the registry (tests register small ones of their own)."""
    if spec.name in DATASETS and not replace:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    for split in spec.splits.values():
        for name in split.files:
            if name not in spec.files:
                raise ValueError(f"{spec.name}: split names file {name!r} that is not in its files")
    DATASETS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    DATASETS.pop(name, None)


def list_datasets() -> list[str]:
    return list(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    """The spec of a dataset by name or alias; a clear error naming the known ones otherwise."""
    key = ALIASES.get(name, name)
    if key in DATASETS:
        return DATASETS[key]
    raise MnistlabError(
        f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}",
        hint=f"{did_you_mean(name, list(DATASETS) + list(ALIASES))}`mnistlab data list` shows them all",
    )


def _idx_files(prefix: str, hashes: dict[str, tuple[str | None, str | None]]) -> dict[str, FileSpec]:
    """FileSpecs for the four classic IDX files, from {stem: (content sha256, distributed md5)}."""
    files = {}
    for stem, (sha, md5) in hashes.items():
        name = f"{prefix}{stem}.gz"
        files[name] = FileSpec(name=name, sha256=sha, md5=md5)
    return files


def _classic_splits(prefix: str = "", train: int = 60000, test: int = 10000) -> dict[str, SplitSpec]:
    return {
        "train": SplitSpec(train, (f"{prefix}train-images-idx3-ubyte.gz", f"{prefix}train-labels-idx1-ubyte.gz")),
        "test": SplitSpec(test, (f"{prefix}t10k-images-idx3-ubyte.gz", f"{prefix}t10k-labels-idx1-ubyte.gz")),
    }


DIGITS = tuple(string.digits)

register(DatasetSpec(
    name="mnist",
    title="MNIST",
    description="handwritten digits 0-9, 28x28 grayscale (LeCun, Cortes, Burges)",
    image_shape=(28, 28),
    classes=DIGITS,
    splits=_classic_splits(),
    # Content SHA-256 from ../shared/data/mnist/SHA256SUMS.raw; MD5s of the official .gz files.
    files=_idx_files("", {
        "train-images-idx3-ubyte": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels-idx1-ubyte": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", "d53e105ee54ea40749a09fcbcd1e9432"),
        "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", "9fb629c4189551a2d022fa330f9573f3"),
        "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", "ec29112dd5afa0611ce80d1b7f02629c"),
    }),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    bundled=True,
    homepage="http://yann.lecun.com/exdb/mnist/",
    license="CC BY-SA 3.0",
    citation="LeCun, Bottou, Bengio, Haffner (1998). Gradient-based learning applied to document recognition.",
))

register(DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    description="Zalando article images in 10 classes, 28x28 grayscale, a drop-in for MNIST",
    image_shape=(28, 28),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    splits=_classic_splits(),
    # Content SHA-256 computed from Debian's dataset-fashion-mnist (0.0~git20200523.55506a9-1),
    # which re-gzips the upstream files; MD5s are upstream's pins for the original .gz files.
    files=_idx_files("", {
        "train-images-idx3-ubyte": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels-idx1-ubyte": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", "25c81989df183df01b3e8a0aad5dffbe"),
        "t10k-images-idx3-ubyte": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", "bef4ecab320f06d8554ea6380940ec79"),
        "t10k-labels-idx1-ubyte": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", "bb300cfdad3c16e7a12a480ee83cd310"),
    }),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    license="MIT",
    citation="Xiao, Rasul, Vollgraf (2017). Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms.",
))

register(DatasetSpec(
    name="kmnist",
    title="Kuzushiji-MNIST",
    description="cursive Japanese (Kuzushiji) characters in 10 classes, 28x28 grayscale",
    image_shape=(28, 28),
    classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    splits=_classic_splits(),
    files=_idx_files("", {
        "train-images-idx3-ubyte": (None, "bdb82020997e1d708af4cf47b453dcf7"),
        "train-labels-idx1-ubyte": (None, "e144d726b3acfaa3e44228e80efcd344"),
        "t10k-images-idx3-ubyte": (None, "5c965bf0a639b31b8f53240b1b52f4d7"),
        "t10k-labels-idx1-ubyte": (None, "7320c461ea6c1c855c0b718fb2a4b134"),
    }),
    mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    homepage="https://github.com/rois-codh/kmnist",
    license="CC BY-SA 4.0",
    citation="Clanuwat et al. (2018). Deep Learning for Classical Japanese Literature.",
))

register(DatasetSpec(
    name="qmnist",
    title="QMNIST",
    description="MNIST reconstructed from NIST, with a 60,000-image test set (Yadav, Bottou)",
    image_shape=(28, 28),
    classes=DIGITS,
    splits={
        "train": SplitSpec(60000, ("qmnist-train-images-idx3-ubyte.gz", "qmnist-train-labels-idx2-int.gz")),
        "test": SplitSpec(60000, ("qmnist-test-images-idx3-ubyte.gz", "qmnist-test-labels-idx2-int.gz")),
    },
    files={f.name: f for f in (
        FileSpec("qmnist-train-images-idx3-ubyte.gz", md5="ed72d4157d28c017586c42bc6afe6370"),
        FileSpec("qmnist-train-labels-idx2-int.gz", md5="0058f8dd561b90ffdd0f734c6a30e5e4"),
        FileSpec("qmnist-test-images-idx3-ubyte.gz", md5="1394631089c404de565df7b7aeaf9412"),
        FileSpec("qmnist-test-labels-idx2-int.gz", md5="5b5b05890a5e13444e108efe57b788aa"),
    )},
    mirrors=("https://raw.githubusercontent.com/facebookresearch/qmnist/master/",),
    format="qmnist",
    homepage="https://github.com/facebookresearch/qmnist",
    license="BSD-style (see the QMNIST repository)",
    citation="Yadav, Bottou (2019). Cold Case: The Lost MNIST Digits.",
))

# EMNIST ships as one zip of gzip files for all six splits; images are stored transposed.
_EMNIST_ZIP = ArchiveSpec("gzip.zip", md5="58c8d27c78d21e728a6bc7b3cc06412e")
_EMNIST_MERGED = tuple(string.digits + string.ascii_uppercase + "abdefghnqrt")
_EMNIST = {  # split: (train count, test count, classes, label offset)
    "byclass": (697932, 116323, tuple(string.digits + string.ascii_uppercase + string.ascii_lowercase), 0),
    "bymerge": (697932, 116323, _EMNIST_MERGED, 0),
    "balanced": (112800, 18800, _EMNIST_MERGED, 0),
    "letters": (124800, 20800, tuple(string.ascii_lowercase), 1),
    "digits": (240000, 40000, DIGITS, 0),
    "mnist": (60000, 10000, DIGITS, 0),
}
for _split, (_n_train, _n_test, _classes, _offset) in _EMNIST.items():
    _names = {
        part: f"emnist-{_split}-{part}-idx{3 if 'images' in part else 1}-ubyte.gz"
        for part in ("train-images", "train-labels", "test-images", "test-labels")
    }
    register(DatasetSpec(
        name=f"emnist-{_split}",
        title=f"EMNIST {_split}",
        description=f"EMNIST '{_split}' split: {len(_classes)} classes of handwritten characters, 28x28",
        image_shape=(28, 28),
        classes=_classes,
        splits={
            "train": SplitSpec(_n_train, (_names["train-images"], _names["train-labels"])),
            "test": SplitSpec(_n_test, (_names["test-images"], _names["test-labels"])),
        },
        files={n: FileSpec(n, archive="gzip.zip", member=f"gzip/{n}") for n in _names.values()},
        archives={"gzip.zip": _EMNIST_ZIP},
        mirrors=(
            "https://biometrics.nist.gov/cs_links/EMNIST/",
            "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/",
        ),
        dirname="emnist",
        label_offset=_offset,
        transpose=True,
        homepage="https://www.nist.gov/itl/products-and-services/emnist-dataset",
        license="NIST public data (see the EMNIST page)",
        citation="Cohen, Afshar, Tapson, van Schaik (2017). EMNIST: an extension of MNIST to handwritten letters.",
    ))
ALIASES["emnist"] = "emnist-balanced"  # the split with equal counts per class, for benchmarks

# CIFAR-10 in its binary version: fixed-length records (1 label byte + 3072 pixel bytes), no pickle.
_CIFAR_TAR = ArchiveSpec("cifar-10-binary.tar.gz", md5="c32a1d4ab5d03f1284b67883e8d87530", size=170052171)
_CIFAR_BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
register(DatasetSpec(
    name="cifar10",
    title="CIFAR-10",
    description="natural images in 10 classes, 32x32 RGB (Krizhevsky)",
    image_shape=(3, 32, 32),
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    splits={
        "train": SplitSpec(50000, tuple(_CIFAR_BATCHES[:5])),
        "test": SplitSpec(10000, ("test_batch.bin",)),
    },
    files={n: FileSpec(n, archive=_CIFAR_TAR.name, member=f"cifar-10-batches-bin/{n}") for n in _CIFAR_BATCHES},
    archives={_CIFAR_TAR.name: _CIFAR_TAR},
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    format="cifar10-bin",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    license="see the CIFAR-10 page",
    citation="Krizhevsky (2009). Learning Multiple Layers of Features from Tiny Images.",
))
