"""What makes training fast on the CPUs people have, besides the precision (test_precision.py): the
allocator keeping freed memory, the fast models' layout options, and the fused optimizers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from mnistlab import MnistlabError, allocator
from mnistlab.models import create_model
from mnistlab.training.config import resolve
from mnistlab.training.optim import make_optimizer


@pytest.mark.slow
def test_the_allocator_tuning_can_be_turned_off():
    code = "from mnistlab import allocator; print(allocator.keep_freed_memory())"
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, MNISTLAB_MALLOC_TUNING="0"), check=True).stdout
    assert "left as it is (MNISTLAB_MALLOC_TUNING=0)" in off
    state = allocator.keep_freed_memory()
    assert state == allocator.keep_freed_memory()  # once per process
    if sys.platform.startswith("linux"):
        assert "glibc malloc keeps freed memory" in state or "no glibc mallopt" in state


def test_fast_model_stem_padding_and_channels_last_flatten():
    x = torch.rand(4, 1, 28, 28)
    old = create_model("fast", (1, 28, 28), 10, width=8)  # the defaults: the model the packaged weights fit
    new = create_model("fast", (1, 28, 28), 10, width=8, stem_padding=0, flatten="nhwc")
    assert old[0][:3](x).shape[-2:] == (14, 14) and new[0][:3](x).shape[-2:] == (12, 12)
    assert new[1].in_features == 16 * 6 * 6 and old[1].in_features == 16 * 7 * 7
    # The NHWC flatten is the NCHW one with the classifier's inputs permuted: same function, other order.
    nchw = create_model("fast", (1, 28, 28), 10, width=8, stem_padding=0, flatten="nchw")
    nchw.load_state_dict(new.state_dict())
    with torch.no_grad():
        w = new[1].weight.view(10, 6, 6, 16).permute(0, 3, 1, 2).reshape(10, -1)
        nchw[1].weight.copy_(w)
    new.eval(), nchw.eval()
    assert torch.allclose(new(x), nchw(x), atol=1e-5)
    cl = new.to(memory_format=torch.channels_last)
    assert torch.allclose(cl(x.contiguous(memory_format=torch.channels_last)), nchw(x), atol=1e-5)
    for bad, words in (({"stem_padding": 3}, "stem_padding must be 0, 1 or 2"),
                       ({"flatten": "hwc"}, "flatten must be 'nchw' or 'nhwc'")):
        with pytest.raises(MnistlabError, match=words):
            create_model("fast", (1, 28, 28), 10, **bad)


def test_keras_cnn_flattens_in_keras_order_when_asked():
    a = create_model("keras-cnn", (1, 28, 28), 10)
    b = create_model("keras-cnn", (1, 28, 28), 10, flatten="nhwc")
    assert a.state_dict().keys() == b.state_dict().keys()
    # the same function with the hidden layer's inputs permuted (C,H,W -> H,W,C): shapes alone would pass
    # a flatten that scrambled the features
    x = torch.rand(4, 1, 28, 28)
    a.load_state_dict(b.state_dict())
    assert not torch.allclose(a(x), b(x), atol=1e-3)  # the same weights read in the other order
    with torch.no_grad():
        a[1].weight.copy_(b[1].weight.view(100, 13, 13, 32).permute(0, 3, 1, 2).reshape(100, -1))
    assert torch.allclose(a(x), b(x), atol=1e-5)
    cl = b.to(memory_format=torch.channels_last)
    assert torch.allclose(cl(x.contiguous(memory_format=torch.channels_last)), a(x), atol=1e-5)
    assert resolve("seed-cnn").model_args == {"flatten": "nhwc"} and resolve("seed-cnn").channels_last


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizers_use_the_fused_update_on_the_cpu(optimizer):
    model = torch.nn.Linear(4, 2)
    opt = make_optimizer(resolve("seed-mlp", {"optimizer": optimizer}), model.parameters())
    assert opt.defaults["fused"] is True
    before = model.weight.detach().clone()
    model(torch.rand(3, 4)).sum().backward()
    opt.step()
    assert not torch.equal(before, model.weight)
