"""fp16 AMP + gradient clipping + fused optimizer: every GradScaler loop clips the true gradients.

Run on the CPU: ``GradScaler("cpu")`` scales the loss and checks for inf/NaN as on CUDA, and the
fused SGD/AdamW kernels take its scale there too. Three loops are checked against one unfused
(``foreach=False``), unscaled step per gradient with the gradient clipped by hand: PyTorch's AMP
recipe (``scaler.scale(loss).backward(); scaler.step(opt)``), the same with an explicit
``scaler.unscale_(opt)`` before the step, and Detectron2's ``AMPTrainer``. That trainer insists
on CUDA, so its ``torch.cuda.is_available()`` check is patched (for that one call per step); its
(CUDA) autocast is then off and the forward runs in float32, which changes nothing in what is
tested: the scaling of the gradients.
"""

import itertools
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from detectron2.engine import AMPTrainer
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils.events import EventStorage
from torch import nn

from se_detectron.engine import build_optimizer
from se_detectron.model_zoo import get_se_cfg
from se_detectron.pretrain.loop import train_one_epoch
from se_detectron.utils.optim import step_reads_gradients, unscale_before_step

SCALE = 65536.0
LR = 0.5
MOMENTUM = 0.9
CLIP = 1.0
OPTIMIZERS = {"SGD": torch.optim.SGD, "AdamW": torch.optim.AdamW}


class LossModel(nn.Module):
    """Four weights whose loss is ``sum(w * x)``: the gradient is the input, chosen exactly."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return {"loss": (self.w * x).sum()}


class Classifier(nn.Module):
    """A bias-free linear classifier with one output, zero weights, as pretraining's output."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1, bias=False)
        nn.init.zeros_(self.fc.weight)

    def forward(self, x):
        return {"linear": self.fc(x)}


GRAD = torch.tensor([0.1, -0.1, 0.1, -0.1])  # norm 0.2, within CLIP: clipping changes nothing
# Within the clip, above it (norm 5.4, values up to 5) and mixed: several steps, so that AdamW's
# moments (which make one step nearly sign(grad) * lr) see the clipped magnitudes.
GRADS = [GRAD, torch.tensor([5.0, -2.0, 0.5, 0.0]), torch.tensor([0.3, 0.02, -0.4, 1e-3])]


def clip_cfg(optimizer, clip_type="norm"):
    opts = [
        "SOLVER.OPTIMIZER", optimizer, "SOLVER.BASE_LR", str(LR), "SOLVER.MOMENTUM", str(MOMENTUM),
        "SOLVER.WEIGHT_DECAY", "0.0", "SOLVER.WEIGHT_DECAY_NORM", "0.0",
    ]  # fmt: skip
    if clip_type is not None:
        opts += [
            "SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", clip_type,
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", str(CLIP),
        ]  # fmt: skip
    return get_se_cfg(None, opts)


def reference_weights(optimizer_name, grads, clip_type="norm"):
    """Unfused, unscaled steps, one per gradient, each gradient clipped by hand."""
    w = nn.Parameter(torch.zeros(4))
    kwargs = {"weight_decay": 0.0, "foreach": False}
    if optimizer_name == "SGD":
        kwargs["momentum"] = MOMENTUM
    optimizer = OPTIMIZERS[optimizer_name]([w], lr=LR, **kwargs)
    for grad in grads:
        w.grad = grad.clone()
        if clip_type == "norm":
            torch.nn.utils.clip_grad_norm_([w], CLIP)
        elif clip_type == "value":
            torch.nn.utils.clip_grad_value_([w], CLIP)
        optimizer.step()
    return w.detach()


def recipe(model, optimizer, scaler, grads, unscale=False):
    """PyTorch's AMP recipe; with ``unscale`` its variant for code that reads the gradients."""
    for grad in grads:
        optimizer.zero_grad()
        scaler.scale(model(grad)["loss"]).backward()
        if unscale:
            scaler.unscale_(optimizer)
        scaler.step(optimizer)
        scaler.update()


def detectron2_amp_trainer(model, optimizer, scaler, grads):
    trainer = AMPTrainer(model, grads, optimizer, grad_scaler=scaler)
    with EventStorage(0) as trainer.storage:
        for trainer.iter in range(len(grads)):
            # True for the first call of each step only: run_step's assert (autocast asks too)
            answers = itertools.chain([True], itertools.repeat(False))
            with mock.patch("torch.cuda.is_available", side_effect=answers):
                trainer.run_step()
            trainer.storage.iter += 1


LOOPS = {
    "recipe": recipe,
    "recipe_with_unscale": lambda *args: recipe(*args, unscale=True),
    "detectron2_amp_trainer": detectron2_amp_trainer,
}


def amp_weights(loop, optimizer_name, clip_type, grads=GRADS):
    model = LossModel()
    optimizer = build_optimizer(clip_cfg(optimizer_name, clip_type), model)
    assert optimizer.param_groups[0]["fused"], "the case under test: a fused kernel"
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    LOOPS[loop](model, optimizer, scaler, grads)
    return model.w.detach(), scaler


@pytest.mark.parametrize("clip_type", ["norm", "value", None])
@pytest.mark.parametrize("optimizer_name", ["SGD", "AdamW"])
@pytest.mark.parametrize("loop", list(LOOPS))
def test_amp_update_equals_the_unscaled_unfused_reference(loop, optimizer_name, clip_type):
    expected = reference_weights(optimizer_name, GRADS, clip_type)
    update, scaler = amp_weights(loop, optimizer_name, clip_type)
    ratio = (update.norm() / expected.norm()).item()
    assert ratio == pytest.approx(1.0, rel=1e-5), f"update ratio {ratio}"
    torch.testing.assert_close(update, expected, rtol=1e-5, atol=1e-7)
    assert scaler.get_scale() == SCALE  # no step was skipped


@pytest.mark.parametrize("optimizer_name", ["SGD", "AdamW"])
def test_clipping_actually_clips_true_gradients(optimizer_name):
    big = GRAD * 50  # norm 10: clipped to norm 1
    update, _ = amp_weights("recipe", optimizer_name, "norm", [big])
    torch.testing.assert_close(update, reference_weights(optimizer_name, [big]))
    if optimizer_name == "SGD":
        assert update.norm().item() == pytest.approx(LR * CLIP, rel=1e-5)


@pytest.mark.parametrize("loop", ["recipe", "detectron2_amp_trainer"])
def test_step_whose_scaled_gradients_overflow_is_skipped(loop):
    # a finite loss whose gradient times the scale exceeds float32's range: inf after scaling
    grads = [GRADS[0], torch.tensor([3e38, 0.0, 0.0, 0.0]), GRADS[1]]
    update, scaler = amp_weights(loop, "AdamW", "norm", grads)
    torch.testing.assert_close(update, reference_weights("AdamW", [GRADS[0], GRADS[1]]))
    assert scaler.get_scale() == SCALE / 2  # GradScaler saw the inf and backed off


def test_a_clipping_fused_optimizer_without_the_fix_clips_scaled_gradients():
    """Detectron2's clipping class around a fused AdamW, as a LazyConfig can instantiate it."""
    clipped_adamw = maybe_add_gradient_clipping(clip_cfg("AdamW"), torch.optim.AdamW)
    expected = reference_weights("AdamW", GRADS)
    ratios = {}
    for fixed in (False, True):
        model = LossModel()
        optimizer = clipped_adamw(model.parameters(), lr=LR, weight_decay=0.0, fused=True)
        if fixed:
            assert unscale_before_step(optimizer) is optimizer
        recipe(model, optimizer, torch.amp.GradScaler("cpu", init_scale=SCALE), GRADS)
        ratios[fixed] = (model.w.detach().norm() / expected.norm()).item()
    assert ratios[True] == pytest.approx(1.0, rel=1e-5)
    assert abs(ratios[False] - 1.0) > 0.01, ratios  # the kernel unscaled after the clip


def test_only_optimizers_whose_step_reads_gradients_stop_the_in_kernel_unscale():
    model = LossModel()
    plain = build_optimizer(clip_cfg("SGD", None), model)
    clipping = build_optimizer(clip_cfg("AdamW"), model)
    assert not step_reads_gradients(plain) and step_reads_gradients(clipping)
    # the fused kernel keeps unscaling by itself (GradScaler hands it the scale) without a clip
    assert plain._step_supports_amp_scaling
    assert not clipping._step_supports_amp_scaling
    unfused = unscale_before_step(torch.optim.SGD(model.parameters(), lr=LR))
    assert not getattr(unfused, "_step_supports_amp_scaling", False)


def test_pretraining_clip_grad_norm_with_scaler_and_fused_sgd():
    """``--clip-grad-norm`` with a GradScaler: the pretraining loop unscales before clipping."""
    big = GRAD * 50
    model = Classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, fused=True)
    args = SimpleNamespace(
        amp=False, amp_dtype="auto", channels_last=False, grad_accum_steps=1,
        clip_grad_norm=CLIP, model_ema_steps=1, lr_warmup_epochs=0, epochs=1,
    )  # fmt: skip
    # loss = logits.sum() = w . x, so the gradient of w is x = big (norm 10, clipped to 1)
    loader = [(big[None, :], torch.zeros(1, dtype=torch.long))]
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    train_one_epoch(
        model, lambda logits, _: logits.sum(), optimizer, loader, torch.device("cpu"), 0,
        args, scaler=scaler,
    )  # fmt: skip
    expected = torch.zeros(4) - LR * big / big.norm() * CLIP  # one plain SGD step, clipped
    torch.testing.assert_close(model.fc.weight.detach()[0], expected)
