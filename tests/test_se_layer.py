import itertools

import pytest
import torch
from torch.nn import functional as F

from se_detectron.layers import SE_GATES, SE_SQUEEZES, SqueezeExcitation


def reference_se(x, layer):
    """SE computed directly from the paper's equations with the layer's weights."""
    if layer.squeeze_type == "avg":
        z = x.sum(dim=(2, 3)) / (x.shape[2] * x.shape[3])
    else:
        z = x.flatten(2).max(dim=2).values
    w1 = layer.fc1.weight.flatten(1)
    w2 = layer.fc2.weight.flatten(1)
    h = z @ w1.T
    if layer.fc1.bias is not None:
        h = h + layer.fc1.bias
    h = torch.clamp(h, min=0)
    s = h @ w2.T
    if layer.fc2.bias is not None:
        s = s + layer.fc2.bias
    s = {"sigmoid": lambda t: 1 / (1 + torch.exp(-t)), "tanh": torch.tanh, "relu": F.relu}[
        layer.gate
    ](s)
    return x * s[:, :, None, None]


@pytest.mark.parametrize(
    "squeeze,gate,bias", list(itertools.product(SE_SQUEEZES, SE_GATES, (True, False)))
)
def test_matches_direct_computation(squeeze, gate, bias):
    torch.manual_seed(0)
    layer = SqueezeExcitation(32, reduction=4, squeeze=squeeze, gate=gate, bias=bias).double()
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(3, 32, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_se(x, layer))
    residual = torch.randn_like(x)
    torch.testing.assert_close(layer.scale_add(x, residual), residual + reference_se(x, layer))


def test_shapes_and_reduction():
    layer = SqueezeExcitation(256, reduction=16)
    assert layer.fc1.weight.shape == (16, 256, 1, 1)
    assert layer.fc2.weight.shape == (256, 16, 1, 1)
    assert layer.excitation(torch.randn(2, 256, 3, 3)).shape == (2, 256, 1, 1)
    assert SqueezeExcitation(10, reduction=3).fc1.out_channels == 3


def test_gradients_reach_every_parameter_and_input():
    layer = SqueezeExcitation(16, reduction=4)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    layer.scale_add(x, torch.randn(2, 16, 4, 4)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"gate": "foo"}, "gate must be one of"),
        ({"squeeze": "median"}, "squeeze must be one of"),
        ({"reduction": 0}, "positive integer"),
        ({"reduction": -4}, "positive integer"),
        ({"reduction": 2.5}, "positive integer"),
        ({"reduction": 64}, "larger than the 32 channels"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SqueezeExcitation(32, **kwargs)
