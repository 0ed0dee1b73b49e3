"""Test models whose every weight counts in a comparison (imported by the weight tests).

Freshly built models have BatchNorm at identity statistics, timm zero-inits the last BatchNorm
gain of each block and conv biases start at zero, so a conversion that drops or misplaces those
tensors would still give equal features; these helpers make them random.
"""

import timm
import torch


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics, gains and biases and random conv biases; ``model`` in eval
    mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model.eval()


def random_timm_model(name: str, **kwargs) -> torch.nn.Module:
    """``timm.create_model(name)`` (seeded, no download) with :func:`randomize` applied."""
    torch.manual_seed(0)
    return randomize(timm.create_model(name, pretrained=False, **kwargs))
