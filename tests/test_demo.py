"""The demo's whole chain (pretrain -> convert -> fine-tune -> predict), a few steps per stage."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d

from se_detectron.checkpoint import SEDetectionCheckpointer
from se_detectron.data.synthetic_crops import BACKGROUND_CLASS, write_synthetic_crops
from se_detectron.demo import DemoError, DemoPlan, run_demo
from se_detectron.engine import SETrainer
from se_detectron.model_zoo import get_se_cfg

TINY_PRETRAIN = (
    "--data-path synthetic-crops --arch se_resnet18 --crops-size 16 --batch-size 64 "
    "--lr 0.03 --epochs 1 --workers 0"
)
TINY_FINETUNE = [
    "SOLVER.MAX_ITER", "3",
    "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.CHECKPOINT_PERIOD", "2",
    "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MAX_SIZE_TRAIN", "64",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "64",
]  # fmt: skip


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One tiny demo run; the crops folder goes to a temporary place."""
    out = tmp_path_factory.mktemp("demo")
    crops = out / "crops"
    plan = DemoPlan(
        output_dir=str(out / "run"),
        device="cpu",
        pretrain_args=TINY_PRETRAIN.split() + ["--crops-root", str(crops)],
        finetune_opts=list(TINY_FINETUNE),
        num_pictures=2,
    )
    os.environ["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "1")
    return plan, run_demo(plan), crops


@pytest.mark.slow
def test_chain_summary_and_outputs(demo_run):
    plan, summary, _ = demo_run
    assert set(summary["stages"]) == {"pretrain", "convert", "finetune", "predict"}
    assert not any(s["reused"] for s in summary["stages"].values())
    assert 0 <= summary["bbox"]["AP"] <= 100
    assert len(summary["detections_per_picture"]) == 2
    for path in summary["outputs"].values():
        assert os.path.exists(path), path
    with open(plan.path("summary.json")) as f:
        assert json.load(f)["bbox"] == summary["bbox"]
    # where and how fast: the CPU model, s/epoch and s/iter next to the minutes
    from se_detectron.demo import format_summary
    from se_detectron.utils.machine import cpu_name

    speed = summary["speed"]
    assert summary["machine"] == {"cpu": cpu_name(), "cores": os.cpu_count()}
    assert speed["pretrain_epochs"] == 1 and speed["pretrain_s_per_epoch"] > 0
    assert speed["finetune_iterations"] == 3
    assert speed["finetune_s_per_iter"] > 0  # Detectron2's "Overall training speed"
    text = format_summary(summary)
    assert f"({cpu_name()}, {os.cpu_count()} cores)" in text
    assert "[demo] speed: pretraining 1 epochs at " in text
    assert f"3 iterations at {speed['finetune_s_per_iter']:.3f} s/iter" in text


@pytest.mark.slow
def test_converted_trunk_loads_with_no_missing_keys_and_stays_frozen(demo_run):
    plan, _, _ = demo_run
    cfg = get_se_cfg(plan.path("finetune", "config.yaml"))
    assert cfg.MODEL.RESNETS.NORM == "FrozenBN"
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2
    assert cfg.MODEL.RESNETS.DEPTH == 18
    model = SETrainer.build_model(cfg)
    trunk = model.backbone.bottom_up
    incompatible = SEDetectionCheckpointer(model)._load_model(
        SEDetectionCheckpointer(model)._load_file(plan.trunk_weights)
    )
    assert not [k for k in incompatible.missing_keys if k.startswith("backbone.bottom_up.")]
    assert not incompatible.unexpected_keys
    # FrozenBN everywhere in the trunk; stem and res2 frozen, res3-res5 trained.
    norms = [m.norm for m in trunk.modules() if hasattr(m, "norm") and m.norm is not None]
    assert norms and all(isinstance(n, FrozenBatchNorm2d) for n in norms)
    for name, p in trunk.named_parameters():
        assert p.requires_grad == (not name.startswith(("stem.", "res2."))), name

    # The fine-tuned detector kept the pretrained stem/res2 exactly and changed res3+.
    with open(plan.trunk_weights, "rb") as f:
        pretrained = pickle.load(f)["model"]
    final = torch.load(plan.path("finetune", "model_final.pth"), weights_only=False)["model"]
    stem = torch.as_tensor(pretrained["stem.conv1.weight"])
    assert torch.equal(final["backbone.bottom_up.stem.conv1.weight"], stem)
    res3 = torch.as_tensor(pretrained["res3.0.conv1.weight"])
    assert not torch.equal(final["backbone.bottom_up.res3.0.conv1.weight"], res3)


@pytest.mark.slow
def test_rerun_reuses_finished_stages(demo_run, capsys):
    plan, first, _ = demo_run
    again = run_demo(plan)
    assert all(s["reused"] for s in again["stages"].values())
    assert again["bbox"] == first["bbox"]
    assert "reused" in capsys.readouterr().out


@pytest.mark.slow
def test_rerun_flag_names_a_stage(demo_run):
    plan, _, _ = demo_run
    with pytest.raises(DemoError, match="--rerun 'evaluate'"):
        run_demo(plan, rerun="evaluate")


@pytest.mark.slow
def test_crops_come_from_train_images_only(demo_run):
    _, _, crops = demo_run
    manifest = json.loads((crops / "manifest.json").read_text())
    assert manifest["source"] == "se_synthetic train split"
    assert BACKGROUND_CLASS in manifest["classes"] and len(manifest["classes"]) == 6
    # val crops are cut from the last train images (ids), never from the detection val split.
    train_ids = {int(p.name.split("_")[0]) for p in (crops / "train").rglob("*.png")}
    val_ids = {int(p.name.split("_")[0]) for p in (crops / "val").rglob("*.png")}
    assert train_ids and val_ids and not train_ids & val_ids
    assert min(val_ids) > max(train_ids)
    assert all(
        manifest["counts"][split][c] > 0 for split in ("train", "val") for c in manifest["classes"]
    )


def test_crops_are_reused_and_checked(tmp_path):
    root = tmp_path / "c"
    assert write_synthetic_crops(str(root), crop_size=16) == str(root)
    stamp = (root / "manifest.json").stat().st_mtime_ns
    write_synthetic_crops(str(root), crop_size=16)
    assert (root / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="context"):
        write_synthetic_crops(str(tmp_path / "d"), context=0.5)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a crops folder"):
        write_synthetic_crops(str(tmp_path / "other"))
    assert Path(tmp_path / "other" / "x.txt").exists()


@pytest.mark.slow
def test_mask_rcnn_demo_reports_mask_ap_and_draws_masks(demo_run, tmp_path):
    """`make demo DEMO_ARGS="--config-file Synthetic/mask_rcnn_SE_R_18_FPN_synthetic.yaml"`
    (the crops of the Faster R-CNN chain above are reused)."""
    from se_detectron.demo import format_summary

    crops = demo_run[2]
    plan = DemoPlan(
        output_dir=str(tmp_path / "run"),
        device="cpu",
        config_file="Synthetic/mask_rcnn_SE_R_18_FPN_synthetic.yaml",
        pretrain_args=TINY_PRETRAIN.split() + ["--crops-root", str(crops)],
        finetune_opts=list(TINY_FINETUNE) + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],
        num_pictures=1,
    )
    summary = run_demo(plan)
    assert set(summary["segm"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert "[demo] mask AP: AP" in format_summary(summary)
    # the fine-tuned model's masks in se-predict's output (3 iterations: keep every detection)
    from se_detectron.engine.predict import cli as predict_cli

    out = tmp_path / "pictures"
    argv = ["--config-file", plan.path("finetune", "config.yaml"), "--output", str(out)]
    argv += ["--input", plan.path("predictions"), "--confidence-threshold", "0.0"]
    argv += ["--opts", "MODEL.WEIGHTS", plan.path("finetune", "model_final.pth")]
    argv += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    assert predict_cli(argv) == 0
    with open(out / "detections.json") as f:
        detections = json.load(f)[0]["detections"]
    assert detections and all("segmentation" in d for d in detections)


def test_finetune_speed_is_read_from_detectron2s_log(tmp_path):
    from se_detectron.demo import _finetune_s_per_iter

    log = tmp_path / "log.txt"
    assert _finetune_s_per_iter(str(log)) is None  # no log (yet)
    log.write_text(
        "[12/07 02:58:48 d2.engine.hooks]: Overall training speed: 977 iterations in 0:07:01 "
        "(0.4311 s / it)\n[12/07 02:58:48 d2.engine.hooks]: Total training time: 0:07:30\n"
        "[12/07 03:20:01 d2.engine.hooks]: Overall training speed: 1197 iterations in 0:05:02 "
        "(0.2527 s / it)\n"
    )
    assert _finetune_s_per_iter(str(log)) == 0.2527  # a resumed run: its last session


def test_stage_environment_keeps_freed_memory_unless_the_user_chose_an_allocator():
    from se_detectron.demo import MALLOC_TUNABLES, stage_environment

    env = stage_environment({"HOME": "/h"}, PYTHONPATH="/p")
    assert env == {"HOME": "/h", "PYTHONPATH": "/p", "GLIBC_TUNABLES": MALLOC_TUNABLES}
    assert stage_environment({"GLIBC_TUNABLES": "mine"})["GLIBC_TUNABLES"] == "mine"
    assert "GLIBC_TUNABLES" not in stage_environment({"LD_PRELOAD": "libjemalloc.so"})
