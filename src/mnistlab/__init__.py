"""mnistlab: load, train, evaluate, ensemble and serve models on the MNIST family of datasets.

    import mnistlab
    ds = mnistlab.load("mnist")
    (x_train, y_train), (x_test, y_test) = mnistlab.load_data("mnist")
    results = mnistlab.predict(["my_digit.png"])      # the packaged default model
    study = mnistlab.tune("fast", "fast", trials=40, workers=2)     # Optuna search; best.toml, study.html
    result = mnistlab.attack("runs/seed-cnn-mnist-s0", x_test[:500], y_test[:500], method="pgd", eps=[0.1, 0.3])
"""

__version__ = "0.1.0"

from .analysis.attack import attack  # noqa: E402
from .analysis.audit import audit  # noqa: E402
from .data import Dataset, Split, load, load_data, prepare  # noqa: E402
from .data.registry import get_spec, list_datasets  # noqa: E402
from .errors import MnistlabError  # noqa: E402
from .serving.predict import predict  # noqa: E402  (the function; the module is mnistlab.serving.predict)
from .tuning import tune  # noqa: E402

__all__ = ["Dataset", "MnistlabError", "Split", "__version__", "attack", "audit", "get_spec", "list_datasets", "load",
           "load_data", "predict", "prepare", "tune"]
