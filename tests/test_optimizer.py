"""SOLVER.OPTIMIZER: Detectron2's SGD unchanged, AdamW with the same parameter groups."""

import pytest
import torch
from detectron2.solver import build_optimizer as detectron2_build_optimizer
from torch import nn

from se_detectron.engine import SolverConfigError, build_optimizer
from se_detectron.model_zoo import get_se_cfg


def small_model():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.LazyLinear(4))


def solver_cfg(*opts):
    return get_se_cfg(None, ["SOLVER.BASE_LR", "0.01", "SOLVER.WEIGHT_DECAY", "0.05", *opts])


def groups_by_param(optimizer):
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


def test_sgd_is_detectron2s():
    model = small_model()
    model(torch.zeros(1, 3, 5, 5))
    cfg = solver_cfg()
    assert cfg.SOLVER.OPTIMIZER == "SGD"
    ours, theirs = build_optimizer(cfg, model), detectron2_build_optimizer(cfg, model)
    assert type(ours) is type(theirs) is torch.optim.SGD
    assert [{k: v for k, v in g.items() if k != "params"} for g in ours.param_groups] == [
        {k: v for k, v in g.items() if k != "params"} for g in theirs.param_groups
    ]


def test_adamw_uses_detectron2_groups_and_betas():
    model = small_model()
    model(torch.zeros(1, 3, 5, 5))
    cfg = solver_cfg("SOLVER.OPTIMIZER", "AdamW", "SOLVER.BETAS", "(0.8, 0.99)")
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    groups = groups_by_param(opt)
    bn, conv = model[1], model[0]
    assert groups[id(bn.weight)]["weight_decay"] == 0.0  # SOLVER.WEIGHT_DECAY_NORM
    assert groups[id(conv.weight)]["weight_decay"] == pytest.approx(0.05)
    assert all(g["betas"] == (0.8, 0.99) and g["lr"] == 0.01 for g in opt.param_groups)
    # one step moves the weights (the optimizer is live, not a stub)
    before = conv.weight.detach().clone()
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()
    assert not torch.equal(before, conv.weight)


def test_adamw_with_gradient_clipping():
    model = small_model()
    model(torch.zeros(1, 3, 5, 5))
    cfg = solver_cfg("SOLVER.OPTIMIZER", "AdamW", "SOLVER.CLIP_GRADIENTS.ENABLED", "True")
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW) and type(opt) is not torch.optim.AdamW


@pytest.mark.parametrize(
    "opts,message",
    [
        (["SOLVER.OPTIMIZER", "Adam"], "SOLVER.OPTIMIZER must be one of"),
        (["SOLVER.OPTIMIZER", "AdamW", "SOLVER.BETAS", "(0.9, 1.5)"], "SOLVER.BETAS"),
    ],
)
def test_bad_solver_options_name_the_key(opts, message):
    with pytest.raises(SolverConfigError, match=message):
        build_optimizer(solver_cfg(*opts), small_model())
