"""The resumable training loader and per-process states, without training: batches after a
resume continue exactly (workers, both orientations), augmentation depends only on the image's
position, another world size is reported, the run-folder lock, the srun environment."""

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from se_detectron.engine.resume import ProcessStates, build_resumable_train_loader
from se_detectron.utils.distributed import first_slurm_host, launcher_environment
from se_detectron.utils.run_dir import LOCK_FILE, lock_run_dir

ROOT = Path(__file__).resolve().parent.parent


def _dicts(n=7):
    # odd images portrait, even landscape
    return [
        {"id": k, "width": 40 if k % 2 else 60, "height": 60 if k % 2 else 40} for k in range(n)
    ]


def augment(d):
    """A mapper drawing from every global generator, as Detectron2's augmentations do."""
    return {
        **d,
        "aug": (random.random(), float(np.random.rand()), float(torch.rand(1))),
    }


def _take(loader, n):
    it = iter(loader)
    return [[(d["id"], d["aug"]) for d in next(it)] for _ in range(n)]


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_continue_exactly_after_a_resume(workers):
    def make():
        return build_resumable_train_loader(
            _dicts(), mapper=augment, total_batch_size=3, seed=5, num_workers=workers
        )

    straight = _take(make(), 9)
    waited = 0
    for cut in (2, 3, 5) if workers else range(1, 9):
        first = make()
        it = iter(first)
        head = [[(d["id"], d["aug"]) for d in next(it)] for _ in range(cut)]
        state = first.state_dict()
        waited += bool(state["waiting"])
        resumed = make()
        resumed.load_state_dict(state)
        assert head + _take(resumed, 9 - cut) == straight, cut
    assert waited, "no cut had images waiting in an orientation group"
    for batch in straight:  # grouped by orientation
        assert len({d_id % 2 for d_id, _ in batch}) == 1


def test_augmentation_does_not_depend_on_workers_nor_touch_global_generators():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = _take(build_resumable_train_loader(_dicts(), mapper=augment, total_batch_size=2, seed=1), 5)
    assert torch.equal(before, torch.get_rng_state())
    b = _take(
        build_resumable_train_loader(
            _dicts(), mapper=augment, total_batch_size=2, seed=1, num_workers=2
        ),
        5,
    )
    assert a == b


def test_another_world_size_is_not_exact_and_says_so():
    loader = build_resumable_train_loader(_dicts(), mapper=None, total_batch_size=2, seed=3)
    states = ProcessStates(loader)
    two = {"world_size": 2, "ranks": [states.local_state(), states.local_state()]}
    two["ranks"][0]["data"]["seed"] = 11
    states.load_state_dict(two)
    assert not states.exact and loader.stream.seed == 11
    message = states.inexact_resume_message(4)
    assert "written by 2 process(es) with 1 process(es)" in message
    assert "not be bit-identical" in message
    states.load_state_dict({"world_size": 1, "ranks": [states.local_state()]})
    assert states.exact


@pytest.mark.slow
def test_one_run_per_folder(tmp_path):
    lock_run_dir(str(tmp_path))
    lock_run_dir(str(tmp_path))  # again in the same process: nothing happens
    holder = (tmp_path / LOCK_FILE).read_text()
    code = (
        "import sys; from se_detectron.utils.run_dir import lock_run_dir; "
        "from se_detectron.errors import exit_on_user_error; "
        "exit_on_user_error(lock_run_dir, sys.argv[1])"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.count("error:") == 1 and "in use by another run" in proc.stderr
    assert holder.split()[1] in proc.stderr  # the holder's pid


def test_launcher_environments():
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    env = launcher_environment(torchrun)
    assert (env.launcher, env.rank, env.world_size, env.local_rank) == ("torchrun", 3, 4, 1)
    slurm = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
        "SLURM_STEP_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "123456",
    }
    env = launcher_environment(slurm)
    assert (env.launcher, env.rank, env.world_size, env.local_world_size) == ("slurm", 5, 8, 4)
    assert (env.master_addr, env.master_port) == ("gpu07", 20000 + 123456 % 20000)
    assert launcher_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None
    assert launcher_environment({}) is None
    assert first_slurm_host("node1,node2") == "node1"
