"""The data layer: the registry of the MNIST family, finding, verifying, downloading and decoding files,
and the uint8 tensors every other stage starts from."""

from .dataset import (
    Dataset,
    Split,
    fetch,
    info,
    load,
    load_data,
    prepare,
    show,
    status,
    verify,
)

__all__ = ["Dataset", "Split", "fetch", "info", "load", "load_data", "prepare", "show", "status", "verify"]
