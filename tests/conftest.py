import os

import pytest
import torch
from detectron2.engine import HookBase

# Tests run on 2-core CPU machines: keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def se_cfg():
    """A fresh config: configs/Base-SE-RCNN-FPN.yaml (SE-R50-FPN Faster R-CNN) on CPU."""
    from se_detectron import get_se_cfg

    cfg = get_se_cfg("Base-SE-RCNN-FPN.yaml")
    cfg.MODEL.DEVICE = "cpu"
    return cfg


class CrashAfter(HookBase):
    """Raises ``RuntimeError("simulated crash")`` after iteration ``at``."""

    def __init__(self, at):
        self.at = at

    def after_step(self):
        if self.trainer.iter == self.at:
            raise RuntimeError("simulated crash")


@pytest.fixture
def run_trainer():
    """``run(trainer, resume=False, crash_after=None)``: resume or load, then train.

    The shared half of the exact-resume tests (yacs, LazyConfig, CUDA): with ``crash_after=N``
    the run raises ``RuntimeError("simulated crash")`` after iteration N.
    """

    def run(trainer, resume=False, crash_after=None):
        if crash_after is not None:
            trainer.register_hooks([CrashAfter(crash_after)])
        trainer.resume_or_load(resume=resume)
        trainer.train()
        return trainer

    return run
