"""The pretraining loop reads the device every few steps, not every step, and still stops on NaN."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from se_detectron.pretrain import loop
from se_detectron.pretrain.loop import train_one_epoch

BATCHES = 12


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return {"linear": self.fc(x)}


def args(**kw):
    base = dict(
        amp=False, amp_dtype="auto", channels_last=False, grad_accum_steps=1,
        clip_grad_norm=None, model_ema_steps=1, lr_warmup_epochs=0, epochs=1,
    )  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def loader():
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 4, generator=gen), torch.tensor([0, 2])) for _ in range(BATCHES)]


class Criterion:
    """Cross-entropy that returns NaN from batch ``nan_at`` on; counts its calls."""

    def __init__(self, nan_at=None):
        self.nan_at, self.calls = nan_at, 0

    def __call__(self, logits, target):
        loss = nn.functional.cross_entropy(logits, target)
        self.calls += 1
        return loss * float("nan") if self.nan_at is not None and self.calls > self.nan_at else loss


def run(criterion, sync_period=4, **kw):
    torch.manual_seed(0)
    model = Classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return train_one_epoch(
        model, criterion, optimizer, loader(), torch.device("cpu"), 0, args(**kw),
        sync_period=sync_period,
    )  # fmt: skip


@pytest.fixture
def host_reads(monkeypatch):
    """Counts the tensor -> Python reads (each one a host sync on a GPU)."""
    reads = []
    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, _name=name, **kw):
            reads.append(_name)
            return _original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def test_host_reads_every_sync_period_not_every_step(host_reads):
    result = run(Criterion(), sync_period=4)
    # 12 batches / 4: three window reads, plus the epoch's final all-reduced totals
    assert host_reads == ["tolist"] * 4
    assert result["images"] == 2 * BATCHES and result["train_loss"] > 0


def test_metrics_do_not_depend_on_the_sync_period():
    a, b = run(Criterion(), sync_period=1), run(Criterion(), sync_period=5)
    for key in ("train_loss", "train_top1", "images"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("sync_period", [1, 4, 100])
def test_nonfinite_loss_is_reported_at_most_sync_period_late(sync_period):
    criterion = Criterion(nan_at=5)  # batches 0-4 are finite, batch 5 is NaN
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1, batch 5: lower --lr"):
        run(criterion, sync_period=sync_period)
    assert 6 <= criterion.calls <= min(5 + sync_period, BATCHES)


def test_cudnn_benchmark_on_cuda_only_and_restored(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    with loop._cudnn_autotune(torch.device("cuda")):
        assert torch.backends.cudnn.benchmark
    assert not torch.backends.cudnn.benchmark
    with loop._cudnn_autotune(torch.device("cpu")):
        assert not torch.backends.cudnn.benchmark
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    with loop._cudnn_autotune(torch.device("cuda")):
        assert not torch.backends.cudnn.benchmark  # deterministic runs keep their algorithms
