"""The data layer: the registry of the MNIST family, finding, verifying, downloading and decoding files,
and the uint8 tensors every other stage starts from.

    registry.py       each dataset's files, hashes, shape, classes, mirrors
    paths.py          where data is looked for and cached
    files.py          finding a file, and the one function that reads and verifies it
    formats.py        gzip/zip/tar reading with size caps; IDX and CIFAR-10 decoding
    fetch.py          verified, atomic downloads from mirrors with retries
    dataset.py        load / load_data, Dataset, Split, the validation holdout
    normalization.py  uint8 -> model input: Normalization, to_unit, prepare
    catalog.py        status(_all), info, verify(_all), show: what `mnistlab data` answers
"""

from .catalog import (
           DatasetInfo,
           Verification,
           info,
           show,
           status,
           status_all,
           verify,
           verify_all,
)
from .dataset import Dataset, Holdout, Split, load, load_data
from .fetch import fetch
from .normalization import Normalization, prepare, to_unit

__all__ = ["Dataset", "DatasetInfo", "Holdout", "Normalization", "Split", "Verification", "fetch", "info", "load",
           "load_data", "prepare", "show", "status", "status_all", "to_unit", "verify", "verify_all"]
