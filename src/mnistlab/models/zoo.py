"""The model zoo, from logistic regression to An et al.'s M3/M5/M7: each a function that
`@register_model` adds to the registry (see `mnistlab.models`)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from .registry import register_model


def _flat_size(features: nn.Module, in_shape: tuple[int, ...]) -> int:
    """The number of features `features` gives for one image. A skeleton built on the meta device
    (checkpoint loading checks shapes that way) is measured on an uninitialised CPU copy: a meta
    forward through batch norm imports torch._dynamo, 1.3 s of every process's start. A real model
    is measured as it always was (in training mode: its batch-norm statistics see the zeros once)."""
    if any(p.is_meta for p in features.parameters()):
        with torch.no_grad(), torch.device("cpu"):
            return copy.deepcopy(features).to_empty(device="cpu")(torch.zeros(1, *in_shape)).numel()
    with torch.no_grad():
        return features(torch.zeros(1, *in_shape)).numel()


@register_model("logreg", "multinomial logistic regression: flatten, one linear layer, softmax")
def logreg(in_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), num_classes))


@register_model("mlp", "the seeds' three-layer net: 784-128-10, ReLU, dropout (hidden sizes configurable)")
def mlp(in_shape, num_classes, hidden: Sequence[int] = (128,), dropout: float = 0.0):
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(in_shape)
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_model("keras-cnn", "Keras tutorial CNN: conv 32 3x3 ReLU, max-pool 2, dense 100 ReLU, dense 10 (he_uniform)")
def keras_cnn(in_shape, num_classes, flatten: str = "nchw"):
    # flatten="nhwc" is Keras's own order (channels-last), and with channels-last activations it is a
    # view, so the dense layer's gradient needs no layout conversion on the way back (1.7 ms a step
    # at batch 32 on 2 AVX2 cores). "nchw" is the order of runs trained before the option existed.
    conv = nn.Conv2d(in_shape[0], 32, 3)
    features = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2), _flatten(flatten))
    hidden, out = nn.Linear(_flat_size(features, in_shape), 100), nn.Linear(100, num_classes)
    # As the tutorial builds it in Keras: kernel_initializer='he_uniform' on the convolution and the
    # hidden dense layer (uniform in +-sqrt(6 / fan_in), which is PyTorch's kaiming_uniform_ for ReLU),
    # Keras's default glorot_uniform on the output layer, and zero biases throughout.
    nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
    nn.init.kaiming_uniform_(hidden.weight, nonlinearity="relu")
    nn.init.xavier_uniform_(out.weight)
    for layer in (conv, hidden, out):
        nn.init.zeros_(layer.bias)
    return nn.Sequential(features, hidden, nn.ReLU(), out)


@register_model("pytorch-example", "pytorch/examples mnist Net: conv 32, conv 64, max-pool, dropout, fc 128, fc 10")
def pytorch_example(in_shape, num_classes):
    features = nn.Sequential(
        nn.Conv2d(in_shape[0], 32, 3), nn.ReLU(),
        nn.Conv2d(32, 64, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
    )
    return nn.Sequential(features, nn.Linear(_flat_size(features, in_shape), 128), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(128, num_classes))


@register_model("lenet5", "LeNet-5 (LeCun et al. 1998): conv 6 5x5, avg-pool, conv 16 5x5, avg-pool, 120, 84, tanh")
def lenet5(in_shape, num_classes):
    # The original takes 32x32 inputs; MNIST's 28x28 gets 2 pixels of padding so C1 is 28x28 either way.
    pad = 2 if in_shape[1] == 28 else 0
    features = nn.Sequential(
        nn.Conv2d(in_shape[0], 6, 5, padding=pad), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
    )
    return nn.Sequential(features, nn.Linear(_flat_size(features, in_shape), 120), nn.Tanh(),
                         nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, num_classes))


def _an2020(in_shape, num_classes, kernel: int, widths: Sequence[int]) -> nn.Module:
    """An et al. (2020): bias-free convolutions without padding or pooling, each with BatchNorm and ReLU,
    then a bias-free linear layer with BatchNorm1d."""
    layers: list[nn.Module] = []
    channels = in_shape[0]
    for w in widths:
        layers += [nn.Conv2d(channels, w, kernel, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        channels = w
    features = nn.Sequential(*layers, nn.Flatten())
    return nn.Sequential(features, nn.Linear(_flat_size(features, in_shape), num_classes, bias=False),
                         nn.BatchNorm1d(num_classes))


@register_model("m3", "An et al. 2020 M3: ten 3x3 convs (32..176 channels), BatchNorm, no pooling")
def m3(in_shape, num_classes):
    return _an2020(in_shape, num_classes, 3, range(32, 177, 16))


@register_model("m5", "An et al. 2020 M5: five 5x5 convs (32..160 channels), BatchNorm, no pooling")
def m5(in_shape, num_classes):
    return _an2020(in_shape, num_classes, 5, (32, 64, 96, 128, 160))


@register_model("m7", "An et al. 2020 M7: four 7x7 convs (48..192 channels), BatchNorm, no pooling")
def m7(in_shape, num_classes):
    return _an2020(in_shape, num_classes, 7, (48, 96, 144, 192))


class RowRNN(nn.Module):
    """Reads an image row by row: each row (C*W values) is one time step; the last state classifies."""

    def __init__(self, in_shape, num_classes, cell: str, hidden: int, layers: int):
        super().__init__()
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell={cell!r}: expected 'lstm' or 'gru'")
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(in_shape[0] * in_shape[2], hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):  # x: (N,C,H,W)
        seq = x.permute(0, 2, 1, 3).flatten(2)  # (N,H,C*W): one step per row
        out, _ = self.rnn(seq)
        return self.head(out[:, -1])


@register_model("rnn", "a recurrent net reading one image row per time step (LSTM or GRU)")
def rnn(in_shape, num_classes, cell: str = "lstm", hidden: int = 128, layers: int = 1):
    return RowRNN(in_shape, num_classes, cell, hidden, layers)


@register_model("fast", "mnistlab's own small CNN for time-to-accuracy: stride-2 5x5, 3x3, pool, 3x3 (see `fast` recipe)")
def fast(in_shape, num_classes, width: int = 16, stem_padding: int = 2, flatten: str = "nchw"):
    # Downsample first (a stride-2 5x5 conv: the one-channel input is cheap to read but slow to
    # convolve at full size), then spend the FLOPs at the middle resolution and half of it.
    # BatchNorm lets a one-cycle schedule with a high learning rate converge in one epoch. Chosen
    # on the validation split by time-to-accuracy on 2 CPU cores (see README, "Speed").
    # stem_padding=0 reads 28x28 as 12x12 instead of 14x14 (MNIST's border is empty): 27% less
    # work everywhere after the stem, and better validation accuracy in one epoch.
    # flatten="nhwc" flattens channels-last activations without a copy, so the classifier's
    # gradient comes back channels-last too (a mixed-layout gradient costs ~18x in ReLU's backward).
    if stem_padding not in (0, 1, 2):
        raise ValueError(f"stem_padding must be 0, 1 or 2 (got {stem_padding!r})")
    c = in_shape[0]

    def block(ci, co, k, stride=1, padding=None):
        return [nn.Conv2d(ci, co, k, stride=stride, padding=k // 2 if padding is None else padding, bias=False),
                nn.BatchNorm2d(co), nn.ReLU()]

    features = nn.Sequential(*block(c, width, 5, stride=2, padding=stem_padding), *block(width, 2 * width, 3),
                             nn.MaxPool2d(2), *block(2 * width, 2 * width, 3),
                             _flatten(flatten))
    return nn.Sequential(features, nn.Linear(_flat_size(features, in_shape), num_classes))


def _flatten(order: str) -> nn.Module:
    if order not in ("nchw", "nhwc"):
        raise ValueError(f"flatten must be 'nchw' or 'nhwc' (got {order!r})")
    return nn.Flatten() if order == "nchw" else ChannelsLastFlatten()


class ChannelsLastFlatten(nn.Module):
    """(N,C,H,W) -> (N, H*W*C): a view of a channels-last tensor (a copy of any other)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1)
