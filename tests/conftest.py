import os

import pytest
import torch
from detectron2.engine import HookBase

# Tests run on 2-core CPU machines: keep torch from oversubscribing them. `make test` runs two
# pytest-xdist workers (PYTEST_XDIST_WORKER_COUNT), which share the cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // _WORKERS))


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


@pytest.fixture
def run_cli_in_process(capsys):
    """``run(cli, argv) -> (exit status, stderr)``: a tool's ``cli`` in this process.

    The user-error cases of the training tools run here instead of in a subprocess each (the
    tool's own process is tested once per tool); the preemption handlers a tool installs are
    restored afterwards.
    """
    import signal

    from se_detectron.engine.preemption import PREEMPTION_SIGNALS

    def run(cli, argv):
        saved = {signum: signal.getsignal(signum) for signum in PREEMPTION_SIGNALS}
        capsys.readouterr()
        try:
            with pytest.raises(SystemExit) as exit_info:
                cli([str(a) for a in argv])
        finally:
            for signum, handler in saved.items():
                signal.signal(signum, handler)
        return exit_info.value.code, capsys.readouterr().err

    return run
