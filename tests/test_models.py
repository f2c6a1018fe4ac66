"""Every registered model: forward shape, finite outputs, gradients for every parameter; bad options."""

from __future__ import annotations

import pytest
import torch

from mnistlab import MnistlabError
from mnistlab.models import count_parameters, create_model, list_models

SHAPES = [(1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list_models())
def test_forward_and_backward(name, shape):
    torch.manual_seed(0)
    model = create_model(name, shape, num_classes=10)
    x = torch.randn(8, *shape)
    out = model(x)
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 10)  # single-example inference (BatchNorm in eval mode)


def test_known_parameter_counts():
    # logreg: 784*10+10; the three-layer MLP: 784*128+128 + 128*10+10; LeNet-5 with 28x28 input
    assert count_parameters(create_model("logreg")) == 7850
    assert count_parameters(create_model("mlp")) == 101770
    assert count_parameters(create_model("lenet5")) == 61706
    assert count_parameters(create_model("mlp", hidden=[256, 128])) == 784 * 256 + 256 + 256 * 128 + 128 + 1290


def test_model_errors():
    with pytest.raises(MnistlabError, match="unknown model 'resnet'"):
        create_model("resnet")
    with pytest.raises(MnistlabError, match="has no option widht"):
        create_model("fast", widht=8)
    with pytest.raises(MnistlabError, match="does not fit input shape 1x12x12"):
        create_model("m7", (1, 12, 12))
    with pytest.raises(MnistlabError, match="cell='transformer'"):
        create_model("rnn", cell="transformer")
