"""Reference trainings outside mnistlab's engine, timed in the same run as the recipes they compare with.

`plain_script`: what a user writes in 60 lines of PyTorch: conv 24 3x3, pool, conv 32 3x3, pool,
fc 256, fc 10; Adam, batch 64, fp32, one epoch over tensors in memory; the test set at the end.
`keras_tutorial`: the seeds' Keras CNN (conv 32 3x3 he_uniform, max-pool, dense 100 he_uniform,
dense 10), Adam 1e-3, batch 32, 10 epochs, run by TensorFlow in a child process when it is installed
(`pip install 'mnistlab[tensorflow]'`, or a `python` with TensorFlow named by $MNISTLAB_KERAS_PYTHON).
Both time their whole job: data load, model creation, training, the test pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data import load_data


def plain_script(seed: int = 0, epochs: int = 1) -> dict:
    """Train and test the plain PyTorch script's CNN; wall time and test accuracy."""

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    (x_train, y_train), (x_test, y_test) = load_data("mnist")
    x_train = (torch.from_numpy(x_train).float().unsqueeze(1) / 255 - 0.1307) / 0.3081
    x_test = (torch.from_numpy(x_test).float().unsqueeze(1) / 255 - 0.1307) / 0.3081
    y_train, y_test = torch.from_numpy(y_train).long(), torch.from_numpy(y_test).long()
    model = nn.Sequential(nn.Conv2d(1, 24, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(24, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(32 * 7 * 7, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(y_train))
        for i in range(0, len(order), 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x_test[i:i + 1000]).argmax(1) == y_test[i:i + 1000]).sum())
                      for i in range(0, len(y_test), 1000))
    return {"wall_s": time.perf_counter() - t0, "test_acc": correct / len(y_test), "epochs": epochs}


KERAS_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import keras
from keras import layers
data = np.load(sys.argv[1])
keras.utils.set_random_seed(int(sys.argv[2]))
x_train = data["x_train"].astype("float32")[..., None] / 255
x_test = data["x_test"].astype("float32")[..., None] / 255
y_train = keras.utils.to_categorical(data["y_train"], 10)
y_test = keras.utils.to_categorical(data["y_test"], 10)
model = keras.Sequential([keras.Input((28, 28, 1)),
    layers.Conv2D(32, 3, activation="relu", kernel_initializer="he_uniform"), layers.MaxPooling2D(2),
    layers.Flatten(), layers.Dense(100, activation="relu", kernel_initializer="he_uniform"),
    layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=32, epochs=int(sys.argv[3]), verbose=0)
_, acc = model.evaluate(x_test, y_test, verbose=0)
print(json.dumps({"wall_s": time.perf_counter() - t0, "test_acc": float(acc), "epochs": int(sys.argv[3]),
                  "keras": keras.__version__}))
"""


def keras_python() -> str | None:
    """A Python that imports TensorFlow's Keras: $MNISTLAB_KERAS_PYTHON, else this one if it can."""
    candidates = [os.environ.get("MNISTLAB_KERAS_PYTHON"), sys.executable]
    for python in filter(None, candidates):
        try:
            probe = subprocess.run([python, "-c", "import tensorflow, keras"], capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return python
    return None


def keras_tutorial(seed: int = 0, epochs: int = 10) -> dict | None:
    """The Keras tutorial CNN trained by TensorFlow in a child process; None when none is installed.
    The wall time counts from the child's start (TensorFlow's import included, as a user's script)."""

    python = keras_python()
    if python is None:
        return None
    (x_train, y_train), (x_test, y_test) = load_data("mnist")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mnist.npz")
        np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}  # the reference is TF's
        done = subprocess.run([python, "-c", KERAS_SCRIPT, path, str(seed), str(epochs)], capture_output=True,
                              text=True, timeout=3600, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the Keras reference failed: {done.stderr[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
