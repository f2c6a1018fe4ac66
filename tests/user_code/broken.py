"""Models, an optimizer and a loss with the bugs people make, one each, for `mnistlab check` to
catch (tests/test_check.py), and one correct model of one's own that must pass."""

import torch
from torch import nn


class Correct(nn.Module):
    """A small CNN written by hand: what a user's working model looks like."""

    def __init__(self, num_classes=10, in_shape=(1, 28, 28)):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_shape[0], 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Linear(32 * (in_shape[1] // 4) * (in_shape[2] // 4), num_classes)

    def forward(self, x):
        return self.head(self.features(x))


class NoNonlinearity(nn.Module):
    """Two linear layers and no activation between them: one linear layer in disguise."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.net(x)


class SoftmaxOutput(nn.Module):
    """Softmax at the end, then the cross-entropy applies it again."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


class FrozenLayer(nn.Module):
    """The first layer's parameters left frozen after an experiment with transfer."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, num_classes))
        for p in self.net[1].parameters():
            p.requires_grad_(False)

    def forward(self, x):
        return self.net(x)


class BatchDependent(nn.Module):
    """Centres each batch by its own mean: an image's answer depends on its neighbours."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.net(x - x.mean(0, keepdim=True))


class DeadReLU(nn.Module):
    """A hidden layer whose bias starts far below zero: every ReLU unit is dead from the first step."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, num_classes))
        nn.init.constant_(self.net[1].bias, -100.0)

    def forward(self, x):
        return self.net(x)


class DoesNothing(torch.optim.Optimizer):
    """An optimizer whose step forgets to update anything."""

    def __init__(self, params, lr=1e-3):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    _ = p.grad * group["lr"]  # computed, never applied
        return None


class HandSGD(torch.optim.Optimizer):
    """SGD with momentum written by hand: an optimizer of one's own that works."""

    def __init__(self, params, lr=0.05, momentum=0.9):
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("buf", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                p.add_(buf, alpha=-group["lr"])


def hand_cross_entropy(logits, labels):
    """Cross-entropy written by hand: a loss of one's own that works."""
    return -(logits.log_softmax(1).gather(1, labels[:, None])).mean()
