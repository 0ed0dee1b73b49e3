"""tools/train_net.py end to end on a tiny generated dataset: train, resume, evaluate, errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.utils.env import seed_all_rng

from se_detectron.data import generate_synthetic_dataset, register_datasets_from_cfg
from se_detectron.engine import SETrainer, read_metrics
from se_detectron.engine.train_net import cpu_threads_per_process
from se_detectron.model_zoo import get_se_cfg

ROOT = Path(__file__).resolve().parent.parent
INSTANT = "configs/quick_schedules/faster_rcnn_SE_R_50_FPN_instant_test.yaml"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "tiny"
    info = generate_synthetic_dataset(str(root), num_train=12, num_val=4, image_size=64, seed=3)
    return info


def tiny_opts(info, out_dir, max_iter=4):
    """Overrides making the instant-test config train on `info` at 64x64 for a few iterations."""
    return [
        "DATASETS.REGISTER_COCO",
        f"['tiny_train:{info['train_json']}:{info['train_images']}',"
        f"'tiny_val:{info['val_json']}:{info['val_images']}']",
        "DATASETS.TRAIN", "('tiny_train',)",
        "DATASETS.TEST", "('tiny_val',)",
        "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MAX_SIZE_TRAIN", "64",
        "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "64",
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.STEPS", "(3,)",
        "SOLVER.CHECKPOINT_PERIOD", "2",
        "TEST.EVAL_PERIOD", "0",
        "MODEL.DEVICE", "cpu",
        "OUTPUT_DIR", str(out_dir),
    ]  # fmt: skip


def run_train_net(*args, timeout=600, threads="1"):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=threads)
    if threads is None:
        env.pop("OMP_NUM_THREADS")
    return subprocess.run(
        [sys.executable, str(ROOT / "tools/train_net.py"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.slow
def test_train_evaluate_and_eval_only(tiny_data, tmp_path):
    out = tmp_path / "run"
    proc = run_train_net("--config-file", INSTANT, *tiny_opts(tiny_data, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in (
        "model_final.pth",
        "metrics.json",
        "curves.png",
        "final_results.json",
        "config.yaml",
    ):
        assert (out / name).is_file(), name
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    losses = [r["total_loss"] for r in read_metrics(str(out / "metrics.json")) if "total_loss" in r]
    assert losses and all(0 < v < 50 for v in losses)
    final = json.loads((out / "final_results.json").read_text())["tiny_val"]["bbox"]
    assert set(final) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert all(f"AP-{c}" in final for c in ("circle", "rectangle", "triangle", "cross", "star"))
    box_json = out / "inference/tiny_val/box_ap_tiny_val.json"
    assert json.loads(box_json.read_text())["bbox"]["AP"] == pytest.approx(final["AP"], nan_ok=True)
    assert not list(out.glob("*.tmp*")), "temporary checkpoint files left behind"

    # tools/predict.py draws the trained model's detections
    pictures = tmp_path / "pictures"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools/predict.py"), "--config-file", str(out / "config.yaml"),
         "--input", tiny_data["val_images"], "--output", str(pictures),
         "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS", str(out / "model_final.pth")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    detections = json.loads((pictures / "detections.json").read_text())
    assert len(detections) == 4 and len(list(pictures.glob("*.png"))) == 4
    for record in detections:
        for det in record["detections"]:
            assert det["category"] in ("circle", "rectangle", "triangle", "cross", "star")
            x0, y0, x1, y1 = det["bbox"]
            assert 0 <= x0 <= x1 <= 64 and 0 <= y0 <= y1 <= 64 and 0 <= det["score"] <= 1

    # --eval-only on the checkpoint gives the same numbers
    ev = tmp_path / "eval"
    proc = run_train_net(
        "--config-file", INSTANT, "--eval-only", *tiny_opts(tiny_data, ev),
        "MODEL.WEIGHTS", str(out / "model_final.pth"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((ev / "final_results.json").read_text())["tiny_val"]["bbox"]
    assert again["AP"] == pytest.approx(final["AP"], nan_ok=True)


@pytest.mark.slow
def test_mask_rcnn_trains_and_reports_mask_ap(tiny_data, tmp_path):
    """Mask R-CNN on the synthetic RLE masks: mask loss, box and mask AP, both AP files."""
    out = tmp_path / "mask"
    config = "configs/quick_schedules/mask_rcnn_SE_R_50_FPN_instant_test.yaml"
    proc = run_train_net("--config-file", config, *tiny_opts(tiny_data, out, max_iter=2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_metrics(str(out / "metrics.json"))
    assert any(0 < r.get("loss_mask", 0) < 5 for r in records)
    final = json.loads((out / "final_results.json").read_text())["tiny_val"]
    assert set(final) == {"bbox", "segm"}
    assert set(final["segm"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    mask_json = out / "inference/tiny_val/mask_ap_tiny_val.json"
    written = json.loads(mask_json.read_text())["segm"]["AP"]
    assert written == pytest.approx(final["segm"]["AP"], nan_ok=True)
    assert "Final mask AP on tiny_val" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_resume_continues_exactly(tiny_data, tmp_path, run_trainer):
    """Crash after iteration 4 (last checkpoint at 3), resume: same weights as without a crash."""

    def trainer_for(out):
        cfg = get_se_cfg(INSTANT, tiny_opts(tiny_data, out, max_iter=7))
        cfg.SOLVER.CHECKPOINT_PERIOD = 4
        cfg.DATASETS.TEST = ()
        cfg.freeze()
        register_datasets_from_cfg(cfg)
        seed_all_rng(cfg.SEED)
        return SETrainer(cfg)

    run_trainer(trainer_for(tmp_path / "straight"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_trainer(trainer_for(tmp_path / "crashed"), crash_after=4)
    assert (tmp_path / "crashed/last_checkpoint").read_text().strip() == "model_0000003.pth"
    assert not (tmp_path / "crashed/model_final.pth").exists()
    resumed = run_trainer(trainer_for(tmp_path / "crashed"), resume=True)
    assert resumed.start_iter == 4

    a = torch.load(tmp_path / "straight/model_final.pth", weights_only=False)
    b = torch.load(tmp_path / "crashed/model_final.pth", weights_only=False)
    assert a["iteration"] == b["iteration"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["trainer"]["hooks"]["LRScheduler"] == b["trainer"]["hooks"]["LRScheduler"]


@pytest.mark.slow
def test_two_process_cpu_training(tiny_data, tmp_path):
    """`--num-gpus 2` on a CPU-only machine: two gloo processes train one model together."""
    if torch.cuda.is_available():
        pytest.skip("this test exercises the CPU (gloo) path")
    out = tmp_path / "ddp"
    opts = tiny_opts(tiny_data, out, max_iter=2) + ["DATASETS.TEST", "()"]
    # without OMP_NUM_THREADS the processes split the cores between them
    proc = run_train_net("--num-gpus", "2", "--config-file", INSTANT, *opts, threads=None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    threads = max(1, os.cpu_count() // 2)
    assert f"2 CPU training processes on {os.cpu_count()} cores: {threads} torch" in proc.stdout
    assert (out / "model_final.pth").is_file()
    log = (out / "log.txt").read_text()
    assert "world size: 2" in log.lower() or "Rank of current process: 0. World size: 2" in log


def test_cpu_threads_per_process():
    assert cpu_threads_per_process(1, cores=2, environ={}) is None
    assert cpu_threads_per_process(2, cores=2, environ={}) == 1
    assert cpu_threads_per_process(4, cores=2, environ={}) == 1
    assert cpu_threads_per_process(2, cores=16, environ={}) == 8
    assert cpu_threads_per_process(2, cores=2, environ={"OMP_NUM_THREADS": "2"}) is None


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra,message",
    [
        (["MODEL.SE.GAT", "tanh"], "MODEL.SE.GAT"),
        (["MODEL.SE.GATE", "foo"], "MODEL.SE.GATE='foo' is invalid"),
        (["MODEL.WEIGHTS", "/nonexistent/w.pkl"], "/nonexistent/w.pkl"),
        (["DATASETS.TRAIN", "('nope_train',)"], "nope_train"),
        (["MODEL.BACKBONE.FREEZE_AT", "2"], "FREEZE_AT"),
        (["SOLVER.BASE_LR", "1e12", "SOLVER.WARMUP_ITERS", "0"], r"NaN.*iteration=\d+"),
        (["SOLVER.OPTIMIZER", "Adam"], r"SOLVER.OPTIMIZER must be one of .*'Adam'"),
        (["SOLVER.OPTIMIZER", "AdamW", "SOLVER.BETAS", "(0.9, 1.5)"], r"SOLVER.BETAS .*1.5"),
    ],
    ids=[
        "unknown-key",
        "bad-value",
        "weights",
        "dataset",
        "frozen-random",
        "nan",
        "optimizer",
        "betas",
    ],
)
def test_user_errors_are_one_clear_message(tiny_data, tmp_path, run_cli_in_process, extra, message):
    from se_detectron.engine.train_net import cli

    argv = ["--config-file", INSTANT, *tiny_opts(tiny_data, tmp_path / "e"), *extra]
    status, stderr = run_cli_in_process(cli, argv)
    assert status == 2, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(message, last), last


@pytest.mark.slow
def test_missing_config_file(tmp_path):
    """The tool's own process: one error line, exit status 2."""
    proc = run_train_net("--config-file", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert "missing.yaml" in last and "quick_schedules/faster_rcnn_SE_R_50_FPN_instant_test" in last


def test_amp_precision_is_checked():
    from se_detectron.engine import SolverConfigError
    from se_detectron.engine.trainer import amp_precision

    cfg = get_se_cfg(INSTANT, ["SOLVER.AMP.ENABLED", "True", "MODEL.DEVICE", "cuda"])
    assert cfg.SOLVER.AMP.PRECISION == "float16" and amp_precision(cfg) == torch.float16
    cfg.SOLVER.AMP.PRECISION = "bfloat16"
    assert amp_precision(cfg) == torch.bfloat16
    cfg.SOLVER.AMP.PRECISION = "fp8"
    with pytest.raises(SolverConfigError, match="SOLVER.AMP.PRECISION must be one of .*'fp8'"):
        amp_precision(cfg)
    cfg.SOLVER.AMP.PRECISION, cfg.MODEL.DEVICE = "float16", "cpu"
    with pytest.raises(SolverConfigError, match="SOLVER.AMP.ENABLED True needs CUDA.*'cpu'"):
        amp_precision(cfg)
