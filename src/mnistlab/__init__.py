"""mnistlab: load, train, evaluate, ensemble and serve models on the MNIST family of datasets.

    import mnistlab
    ds = mnistlab.load("mnist")                                       # ds.train[:9] shows in a notebook
    (x_train, y_train), (x_test, y_test) = mnistlab.load_data("mnist")
    run = mnistlab.train(recipe="seed-cnn", epochs=3)                 # a Run: run.test_acc, run.run_dir
    ev = mnistlab.evaluate(run.run_dir)                               # ev.accuracy, ev.confusion_matrix
    r = mnistlab.attack(run.run_dir, x_test[:500], y_test[:500], method="pgd", eps=[0.1, 0.3])
    mnistlab.map(run.run_dir); mnistlab.report([run.run_dir])
    results = mnistlab.predict(["my_digit.png"])                     # the packaged default model

One function per CLI verb, of the verb's name (mnistlab.api); settings are the recipe keys.
"""

import importlib
import types

from . import api
from ._version import __version__
from .api import (
                  attack,
                  audit,
                  check,
                  ensemble,
                  evaluate,
                  export,
                  inspect,
                  lr_find,
                  map,
                  predict,
                  pretrain,
                  report,
                  serve,
                  shift,
                  sota,
                  summary,
                  train,
                  transfer_curve,
                  trust,
                  tune,
)
from .data import Dataset, Split, load, load_data, prepare
from .data.registry import get_spec, list_datasets
from .errors import MnistlabError

__all__ = ["Dataset", "MnistlabError", "Split", "__version__", "attack", "audit", "check", "ensemble", "evaluate", "export",
           "get_spec", "inspect", "list_datasets", "load", "load_data", "lr_find", "map", "models", "predict", "prepare", "pretrain",
           "recipes", "report", "serve", "shift", "sota", "summary", "train", "transfer_curve", "trust", "tune"]


class _CallablePackage(types.ModuleType):
    """`mnistlab.models` and `mnistlab.recipes` are packages (the networks; the recipes' TOML files) and,
    called, the verbs of their names like every other verb's function: `mnistlab.models()` lists the
    zoo, `mnistlab.recipes(show="seed-cnn")` prints one recipe."""

    def __call__(self, *args, **kwargs):
        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


for _name in ("models", "recipes"):  # each module stays the module, now callable
    importlib.import_module(f"{__name__}.{_name}").__class__ = _CallablePackage
del _name
