"""SOLVER.OPTIMIZER: Detectron2's SGD, AdamW with the same parameter groups, fused kernels."""

import pytest
import torch
from detectron2.solver import build_optimizer as detectron2_build_optimizer
from torch import nn

from se_detectron.engine import SolverConfigError, build_optimizer
from se_detectron.model_zoo import get_se_cfg
from se_detectron.utils.optim import fused_kernel_args


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
    kernel = ("params", "fused", "foreach")  # the only difference: fused instead of foreach
    assert [{k: v for k, v in g.items() if k not in kernel} for g in ours.param_groups] == [
        {k: v for k, v in g.items() if k not in kernel} for g in theirs.param_groups
    ]
    assert all(g["fused"] for g in ours.param_groups)


def _steps(model_state, build, steps=3, fixed_grads=False):
    """Weights after ``steps`` optimizer steps on fixed data, from the same initial weights.

    With ``fixed_grads`` every step uses the same seeded gradients instead of backpropagating: an
    adaptive optimizer amplifies rounding-level weight differences through near-zero gradients,
    so comparing two kernels over several steps needs identical gradients.
    """
    torch.manual_seed(0)
    model = small_model()
    model(torch.zeros(1, 3, 5, 5))
    model.load_state_dict(model_state)
    opt = build(model)
    data = torch.randn(steps, 4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    for x in data:
        opt.zero_grad()
        if fixed_grads:
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=gen)
        else:
            model(x).square().sum().backward()
        opt.step()
    return model.state_dict(), opt


@pytest.mark.parametrize(
    "opts",
    [
        ["SOLVER.MOMENTUM", "0.9", "SOLVER.NESTEROV", "True"],
        ["SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "0.5"],
    ],
)
def test_fused_sgd_steps_equal_detectron2s(opts):
    model = small_model()
    model(torch.zeros(1, 3, 5, 5))
    cfg = solver_cfg(*opts)
    ours, opt = _steps(model.state_dict(), lambda m: build_optimizer(cfg, m))
    theirs, _ = _steps(model.state_dict(), lambda m: detectron2_build_optimizer(cfg, m))
    assert opt.defaults["fused"]
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-6, atol=1e-7)
    assert not torch.equal(ours["0.weight"], model.state_dict()["0.weight"])


def test_fused_adamw_steps_equal_the_per_parameter_loop():
    model = small_model()
    model(torch.zeros(1, 3, 5, 5))
    cfg = solver_cfg("SOLVER.OPTIMIZER", "AdamW", "SOLVER.BETAS", "(0.8, 0.99)")
    ours, opt = _steps(model.state_dict(), lambda m: build_optimizer(cfg, m), fixed_grads=True)

    def loop(m):
        groups = [
            {"params": g["params"], "lr": g["lr"], "weight_decay": g["weight_decay"]}
            for g in build_optimizer(cfg, m).param_groups
        ]
        return torch.optim.AdamW(groups, betas=(0.8, 0.99), foreach=False)

    reference, _ = _steps(model.state_dict(), loop, fixed_grads=True)
    assert opt.defaults["fused"]
    for key in reference:
        torch.testing.assert_close(ours[key], reference[key], rtol=1e-6, atol=1e-7)
    assert not torch.equal(ours["0.weight"], model.state_dict()["0.weight"])


def test_fused_kernel_args_only_when_every_tensor_supports_it():
    assert fused_kernel_args([torch.zeros(2), torch.zeros(3, dtype=torch.float64)]) == {
        "fused": True
    }
    assert fused_kernel_args([torch.zeros(2), torch.zeros(2, dtype=torch.int64)]) == {}
    assert fused_kernel_args([torch.zeros(2, device="meta")]) == {}
    assert fused_kernel_args([]) == {}


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
        (["SOLVER.OPTIMIZER", "AdamW", "SOLVER.BETAS", "(0.9, 'a')"], "SOLVER.BETAS"),
    ],
)
def test_bad_solver_options_name_the_key(opts, message):
    with pytest.raises(SolverConfigError, match=message):
        build_optimizer(solver_cfg(*opts), small_model())
