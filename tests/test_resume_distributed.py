"""Exact resume beyond one process, preemption and one run per folder, end to end on the CPU.

Every run trains on 64 px images of both orientations (landscape and portrait: Detectron2's
aspect-ratio grouping has two groups in progress) with 2 data-loader workers per process and one
torch thread per process. One uninterrupted reference run serves several interrupted variants:
an interrupted run (SIGTERM, SIGUSR2 under submitit, or kill -9) resumed by any launcher with the
same number of processes must end with bit-identical weights (max difference 0).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from se_detectron.data import generate_synthetic_dataset
from se_detectron.engine.preemption import PREEMPTED_EXIT_STATUS

ROOT = Path(__file__).resolve().parent.parent
YACS = "Synthetic/faster_rcnn_SE_R_18_FPN_synthetic.yaml"
LAZY = "Synthetic/mask_rcnn_SE_R_18_FPN_synthetic.py"
MAX_ITER = 8

pytestmark = [
    pytest.mark.slow,
    pytest.mark.distributed,
    pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU (gloo) path"),
]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The tiny synthetic set with its training images cut to 64x44 (even) or 44x64 (odd)."""
    root = tmp_path_factory.mktemp("data") / "mixed"
    info = generate_synthetic_dataset(str(root), num_train=8, num_val=2, image_size=64, seed=3)
    data = json.loads(Path(info["train_json"]).read_text())
    sizes = {}
    for k, image in enumerate(data["images"]):
        w, h = (64, 44) if k % 2 == 0 else (44, 64)
        path = Path(info["train_images"]) / image["file_name"]
        Image.open(path).crop((0, 0, w, h)).save(path)
        image["width"], image["height"] = w, h
        sizes[image["id"]] = (w, h)
    kept = []
    for ann in data["annotations"]:
        w, h = sizes[ann["image_id"]]
        x, y, bw, bh = ann["bbox"]
        x1, y1 = min(x + bw, w - 1), min(y + bh, h - 1)
        if x1 - x >= 4 and y1 - y >= 4:
            ann["bbox"] = [x, y, x1 - x, y1 - y]
            ann["area"] = float((x1 - x) * (y1 - y))
            ann.pop("segmentation", None)
            kept.append(ann)
    data["annotations"] = kept
    Path(info["train_json"]).write_text(json.dumps(data))
    return info


def yacs_opts(info, out):
    return [
        "DATASETS.REGISTER_COCO", f"['mixed_train:{info['train_json']}:{info['train_images']}']",
        "DATASETS.TRAIN", "('mixed_train',)", "DATASETS.TEST", "()",
        "INPUT.MIN_SIZE_TRAIN", "(44, 48)", "INPUT.MAX_SIZE_TRAIN", "64",
        "DATALOADER.NUM_WORKERS", "2", "DATALOADER.ASPECT_RATIO_GROUPING", "True",
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.STEPS", "(6,)",
        "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "0", "SEED", "7",
        "MODEL.BACKBONE.FREEZE_AT", "0", "SOLVER.WARMUP_ITERS", "2",
        "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(out),
    ]  # fmt: skip


def lazy_args(info, out):
    return [
        "--config-file", LAZY,
        "--register-coco", f"mixed_train:{info['train_json']}:{info['train_images']}",
        "dataloader.train.dataset.names=mixed_train",
        "dataloader.train.mapper.use_instance_mask=False",
        "model.roi_heads.mask_in_features=None",
        "dataloader.train.total_batch_size=4",
        "dataloader.train.num_workers=2",
        "dataloader.evaluator=None",
        "train.device=cpu",
        f"train.max_iter={MAX_ITER}",
        "train.checkpointer.period=2",
        "train.eval_period=0",
        "train.log_period=1",
        "train.seed=7",
        f"train.output_dir={out}",
    ]  # fmt: skip


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def start(*cmd):
    """Start a command in its own process group (so kill -9 reaches every process of it)."""
    return subprocess.Popen(
        [str(c) for c in cmd], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def train_net(*args):
    return [sys.executable, ROOT / "tools/train_net.py", *args]


def lazy_train_net(*args):
    return [sys.executable, ROOT / "tools/lazy_train_net.py", *args]


def torchrun(*args):
    port = _free_port()
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(port), *args]  # fmt: skip


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def run(cmd, timeout=600):
    return finish(start(*cmd), timeout)


def saved_iteration(out):
    """The iteration of the checkpoint ``last_checkpoint`` names (-1: none yet)."""
    marker = Path(out) / "last_checkpoint"
    if not marker.is_file():
        return -1
    name = marker.read_text().strip()
    if name == "model_final.pth":
        return MAX_ITER - 1
    return int(name[len("model_") : -len(".pth")])


def wait_for_checkpoint(proc, out, after, timeout=600):
    """Wait until ``out`` has a checkpoint of an iteration > ``after`` (or ``proc`` ended)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if saved_iteration(out) > after:
            return saved_iteration(out)
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint after iteration {after}: {proc.communicate()[1][-3000:]}")


def interrupt(cmd, out, after, how):
    """Run ``cmd`` until it saved a checkpoint past iteration ``after``, then stop it ``how``
    (``"sigterm"``: the process is asked to stop; ``"kill"``: SIGKILL to its whole group).
    Returns the (status, stdout, stderr) of the process."""
    proc = start(*cmd)
    wait_for_checkpoint(proc, out, after)
    if how == "kill":
        # every training process at once, as a machine that fails (torchrun starts its
        # processes in sessions of their own: their pids are in the heartbeats)
        for beat in (Path(out) / ".heartbeat").glob("rank_*.json"):
            if time.time() - beat.stat().st_mtime > 5:  # a finished process's heartbeat
                continue
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(json.loads(beat.read_text())["pid"], signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGTERM)
    return finish(proc)


def assert_same_weights(a, b):
    wa = torch.load(Path(a) / "model_final.pth", weights_only=False)
    wb = torch.load(Path(b) / "model_final.pth", weights_only=False)
    assert wa["iteration"] == wb["iteration"] == MAX_ITER - 1
    diff = max((wa["model"][k] - wb["model"][k]).abs().max().item() for k in wa["model"])
    assert diff == 0, f"max difference {diff}"


@pytest.fixture(scope="module")
def reference2(mixed, tmp_path_factory):
    """The uninterrupted two-process run (--num-gpus 2) the interrupted variants must equal."""
    ref = tmp_path_factory.mktemp("reference2")
    status, _, err = run(
        train_net(
            "--num-gpus", "2", "--dist-url", "auto", "--config-file", YACS, *yacs_opts(mixed, ref)
        )
    )
    assert status == 0, err[-3000:]
    return ref


def test_two_processes_resume_exactly_through_every_launcher(mixed, reference2, tmp_path):
    """--num-gpus 2 interrupted by SIGTERM, continued by torchrun and killed with -9, finished by
    two localhost "machines": the same weights as one uninterrupted --num-gpus 2 run. A second
    run into the folder while it is in use exits 2 naming the process that holds it."""
    ref, out = reference2, tmp_path / "interrupted"

    first = start(
        *train_net(
            "--num-gpus", "2", "--dist-url", "auto", "--config-file", YACS, *yacs_opts(mixed, out)
        )
    )
    wait_for_checkpoint(first, out, -1)
    os.killpg(first.pid, signal.SIGSTOP)  # keep it in the middle of training meanwhile
    try:
        status, _, err = run(
            train_net("--config-file", YACS, "--resume-if-possible", *yacs_opts(mixed, out))
        )
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert status == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "in use by another run: process " in lines[0], err[-2000:]
    assert "train_net.py --num-gpus 2" in lines[0]
    first.send_signal(signal.SIGTERM)
    status, _, err = finish(first)
    assert status == PREEMPTED_EXIT_STATUS, err[-3000:]
    assert "preempted by SIGTERM" in err
    stopped_at = saved_iteration(out)
    assert 0 <= stopped_at < MAX_ITER - 1
    assert not (out / "model_final.pth").exists()
    _assert_no_process_left(out)

    cmd = torchrun(
        "tools/train_net.py", "--dist-url", "env://", "--resume", "--config-file", YACS,
        *yacs_opts(mixed, out),
    )  # fmt: skip
    interrupt(cmd, out, stopped_at, "kill")
    assert saved_iteration(out) < MAX_ITER - 1, "the torchrun segment was not interrupted"

    port = _free_port()
    machines = [
        start(*train_net(
            "--num-machines", "2", "--machine-rank", str(rank), "--num-gpus", "1",
            "--dist-url", f"tcp://127.0.0.1:{port}", "--resume", "--config-file", YACS,
            *yacs_opts(mixed, out),
        ))
        for rank in (0, 1)
    ]  # fmt: skip
    for proc in machines:
        status, _, err = finish(proc)
        assert status == 0, err[-3000:]
    assert_same_weights(ref, out)


def _assert_no_process_left(out):
    """No training process of the run in ``out`` is left (their pids are in the heartbeats)."""
    pids = [json.loads(p.read_text())["pid"] for p in (Path(out) / ".heartbeat").glob("*.json")]
    assert len(pids) == 2
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids), pids


def test_submitit_local_job_preempted_and_requeued(mixed, reference2, tmp_path):
    """tools/submit_train.py --local: submitit's LocalExecutor runs 2 tasks; SIGUSR2 (submitit's
    preemption signal) to one of them saves after the iteration, submitit requeues the job, and
    the requeued job ends with the weights of the uninterrupted --num-gpus 2 run."""
    out = tmp_path / "submitit"
    env = dict(_env(), MASTER_PORT=str(_free_port()))
    code = (
        "import sys; from se_detectron.engine.submit import submit, submit_argument_parser; "
        "job = submit(submit_argument_parser().parse_args(sys.argv[1:])); "
        "print('JOB', job.job_id, flush=True); job.wait(); print('DONE', job.state, flush=True)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--local", "--gpus-per-node", "2", "--timeout", "30",
         "--config-file", YACS, *yacs_opts(mixed, out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 600
    while saved_iteration(out) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    pid = int((out / ".run.lock").read_text().split()[1])  # rank 0, the lock's holder
    os.kill(pid, signal.SIGUSR2)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0 and "DONE" in stdout, stderr[-3000:]
    logs = "".join(p.read_text() for p in (out / "submitit").glob("*_0_log.*"))
    assert "preempted by SIGUSR2" in logs and "Requeued" in logs, logs[-3000:]
    assert_same_weights(reference2, out)


def test_lazy_config_two_processes_resume_exactly_after_sigterm_and_a_stopped_process(
    mixed, tmp_path
):
    """LazyConfig, --num-gpus 2: stopped by SIGTERM, resumed; then one process stopped
    (SIGSTOP) ends the job after --dist-timeout with one error line naming it; resumed again:
    the uninterrupted run's weights."""
    ref, out = tmp_path / "reference", tmp_path / "interrupted"
    launch = ("--num-gpus", "2", "--dist-url", "auto")
    status, _, err = run(lazy_train_net(*launch, *lazy_args(mixed, ref)))
    assert status == 0, err[-3000:]
    status, _, err = interrupt(lazy_train_net(*launch, *lazy_args(mixed, out)), out, 0, "sigterm")
    assert status == PREEMPTED_EXIT_STATUS, err[-3000:]
    stopped_at = saved_iteration(out)
    assert stopped_at < MAX_ITER - 1

    proc = start(
        *lazy_train_net(*launch, "--dist-timeout", "10", "--resume", *lazy_args(mixed, out))
    )
    wait_for_checkpoint(proc, out, stopped_at)
    rank1 = json.loads((out / ".heartbeat/rank_1.json").read_text())["pid"]
    os.kill(rank1, signal.SIGSTOP)
    began = time.time()
    status, _, err = finish(proc)
    assert status == 1, err[-3000:]
    assert time.time() - began < 120
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"rank 1 (pid {rank1} on" in lines[0], err[-3000:]
    assert "is stopped" in lines[0] and "--dist-timeout" in lines[0]
    assert not Path(f"/proc/{rank1}").exists()

    status, _, err = run(lazy_train_net(*launch, "--resume", *lazy_args(mixed, out)))
    assert status == 0, err[-3000:]
    assert_same_weights(ref, out)


def test_one_process_resumes_exactly_after_kill_9(mixed, tmp_path):
    """One process, killed with -9 after a checkpoint, resumed: the uninterrupted weights."""
    ref, out = tmp_path / "reference", tmp_path / "interrupted"
    status, _, err = run(train_net("--config-file", YACS, *yacs_opts(mixed, ref)))
    assert status == 0, err[-3000:]
    interrupt(train_net("--config-file", YACS, *yacs_opts(mixed, out)), out, 1, "kill")
    assert saved_iteration(out) < MAX_ITER - 1
    status, _, err = run(train_net("--config-file", YACS, "--resume", *yacs_opts(mixed, out)))
    assert status == 0, err[-3000:]
    assert_same_weights(ref, out)

    # killed while writing model_final.pth (same iteration as the last periodic checkpoint):
    # the atomic save left the periodic checkpoint as the last one; --resume writes the final
    (out / "model_final.pth").unlink()
    (out / "last_checkpoint").write_text(f"model_{MAX_ITER - 1:07d}.pth")
    status, _, err = run(train_net("--config-file", YACS, "--resume", *yacs_opts(mixed, out)))
    assert status == 0, err[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert_same_weights(ref, out)
