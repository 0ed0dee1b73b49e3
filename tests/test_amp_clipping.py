"""fp16 AMP + gradient clipping + fused optimizer: the clip sees the true (unscaled) gradients.

Run on the CPU: ``GradScaler("cpu")`` scales the loss and checks for inf/NaN as on CUDA, and the
fused SGD/AdamW kernels take its scale there too. Detectron2's AMPTrainer insists on CUDA, so its
``torch.cuda.is_available()`` check is patched (for that one call); its (CUDA) autocast is then
off and the forward runs in float32, which changes nothing in what is tested: the scaling of the
gradients.
"""

import itertools
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from detectron2.engine import AMPTrainer
from detectron2.utils.events import EventStorage
from torch import nn

from se_detectron.engine import build_optimizer
from se_detectron.engine.amp import SEAMPTrainer, step_reads_gradients
from se_detectron.model_zoo import get_se_cfg
from se_detectron.pretrain.loop import train_one_epoch

SCALE = 65536.0
LR = 0.5
CLIP = 1.0


class LossModel(nn.Module):
    """A linear layer whose loss is ``sum(w * x)``: its gradient is the input, chosen exactly."""

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


def clip_cfg(optimizer):
    return get_se_cfg(
        None,
        [
            "SOLVER.OPTIMIZER", optimizer, "SOLVER.BASE_LR", str(LR), "SOLVER.MOMENTUM", "0.0",
            "SOLVER.WEIGHT_DECAY", "0.0", "SOLVER.WEIGHT_DECAY_NORM", "0.0",
            "SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm",
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", str(CLIP),
        ],
    )  # fmt: skip


def reference_update(optimizer_name, grad):
    """One unfused, unscaled step with the gradient clipped by hand."""
    w = nn.Parameter(torch.zeros(4))
    w.grad = grad.clone()
    torch.nn.utils.clip_grad_norm_([w], CLIP)
    cls = {"SGD": torch.optim.SGD, "AdamW": torch.optim.AdamW}[optimizer_name]
    kwargs = {"weight_decay": 0.0, "foreach": False}
    cls([w], lr=LR, **kwargs).step()
    return w.detach()


def amp_step(trainer_class, optimizer_name, grad=GRAD):
    model = LossModel()
    optimizer = build_optimizer(clip_cfg(optimizer_name), model)
    assert optimizer.param_groups[0]["fused"], "the case under test: a fused kernel"
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    # True for the first call only: AMPTrainer.run_step's assert (the optimizers ask too)
    cuda = itertools.chain([True], itertools.repeat(False))
    with mock.patch("torch.cuda.is_available", side_effect=lambda: next(cuda)):
        trainer = trainer_class(model, [grad], optimizer, grad_scaler=scaler)
        trainer.iter = 0
        with EventStorage(0) as trainer.storage:
            trainer.run_step()
    return model.w.detach()


@pytest.mark.parametrize("optimizer_name", ["SGD", "AdamW"])
def test_amp_step_with_clipping_equals_unscaled_reference(optimizer_name):
    expected = reference_update(optimizer_name, GRAD)
    torch.testing.assert_close(amp_step(SEAMPTrainer, optimizer_name), expected)


def test_clipping_actually_clips_true_gradients():
    big = GRAD * 50  # norm 10: clipped to norm 1
    update = amp_step(SEAMPTrainer, "SGD", big)
    torch.testing.assert_close(update, reference_update("SGD", big))
    assert update.norm().item() == pytest.approx(LR * CLIP, rel=1e-5)


def test_detectron2s_amp_trainer_clips_scaled_gradients():
    """Why SEAMPTrainer exists: without the unscale, the clip sees GRAD * 65536 and the update
    shrinks."""
    update = amp_step(AMPTrainer, "SGD")
    assert update.norm().item() < 1e-4 * reference_update("SGD", GRAD).norm().item()


def test_step_reads_gradients():
    model = LossModel()
    plain = build_optimizer(get_se_cfg(None, ["SOLVER.BASE_LR", "0.1"]), model)
    assert not step_reads_gradients(plain)
    assert step_reads_gradients(build_optimizer(clip_cfg("AdamW"), model))


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
    torch.testing.assert_close(model.fc.weight.detach()[0], reference_update("SGD", big))
