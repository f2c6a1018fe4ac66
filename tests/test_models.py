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


def test_keras_cnn_initialises_as_the_keras_tutorial():
    import math

    model = create_model("keras-cnn")
    conv, hidden, out = model[0][0], model[1], model[3]
    for layer, limit in ((conv, math.sqrt(6 / 9)), (hidden, math.sqrt(6 / 5408)), (out, math.sqrt(6 / 110))):
        w = layer.weight.abs()
        assert w.max() <= limit and w.max() > 0.9 * limit  # uniform in +-limit: he_uniform, glorot for the output
        assert (layer.bias == 0).all()
