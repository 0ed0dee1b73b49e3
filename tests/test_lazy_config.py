"""LazyConfig: make_se_resnet, every shipped python config (a training step), exact resume and
tools/lazy_train_net.py end to end (train, eval-only, user errors, two CPU processes)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.utils.env import seed_all_rng

from se_detectron import get_se_cfg
from se_detectron.data import generate_synthetic_dataset, register_coco_dataset
from se_detectron.engine import read_metrics
from se_detectron.engine.lazy_config import LazyConfigError, apply_overrides
from se_detectron.engine.lazy_trainer import SELazyTrainer
from se_detectron.model_zoo import get_config, list_configs
from se_detectron.modeling import SEConfigError, build_se_resnet, make_se_resnet
from se_detectron.modeling.config_check import se_trunk_options

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = "Synthetic/mask_rcnn_SE_R_18_FPN_synthetic.py"
PY_CONFIGS = list_configs(".py")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "tiny"
    info = generate_synthetic_dataset(str(root), num_train=12, num_val=4, image_size=64, seed=3)
    register_coco_dataset("lazy_tiny_train", info["train_json"], info["train_images"])
    register_coco_dataset("lazy_tiny_val", info["val_json"], info["val_images"])
    return info


def tiny_overrides(out_dir, max_iter=2, period=1000):
    """Train on the 64x64 tiny split as is (no resizing), 2 images a step, no evaluation."""
    return [
        "dataloader.train.dataset.names=lazy_tiny_train",
        "dataloader.test.dataset.names=lazy_tiny_val",
        "dataloader.train.mapper.augmentations=[]",
        "dataloader.train.mapper.instance_mask_format=bitmask",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.evaluator=None",
        "train.device=cpu",
        f"train.max_iter={max_iter}",
        f"train.checkpointer.period={period}",
        "train.eval_period=0",
        "train.log_period=1",
        f"train.output_dir={out_dir}",
    ]


# ------------------------------------------------------------------------------- make_se_resnet
@pytest.mark.parametrize(
    "config_file", ["Base-SE-RCNN-FPN.yaml", "Synthetic/faster_rcnn_SE_R_18_FPN_synthetic.yaml"]
)
def test_make_se_resnet_is_the_yacs_trunk(config_file):
    cfg = get_se_cfg(config_file)
    torch.manual_seed(0)
    a = build_se_resnet(cfg, type("Shape", (), {"channels": 3})())
    torch.manual_seed(0)
    b = make_se_resnet(**se_trunk_options(cfg))
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and any(".se.fc1." in k for k in sa)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.output_shape() == b.output_shape()
    assert [n for n, p in a.named_parameters() if not p.requires_grad] == [
        n for n, p in b.named_parameters() if not p.requires_grad
    ]


def test_make_se_resnet_defaults_and_res2_width():
    r18 = make_se_resnet(depth=18)
    assert r18.output_shape()["res2"].channels == 64
    assert type(r18.res2[0]).__name__ == "SEBasicBlock"
    x = make_se_resnet(depth=50, num_groups=32, width_per_group=4, se_stages=["res5"])
    assert x.output_shape()["res5"].channels == 2048
    assert type(x.res4[0]).__name__ == "BottleneckBlock"
    assert type(x.res5[0]).__name__ == "SEBottleneckBlock" and x.res5[0].conv2.groups == 32


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"se_gate": "foo"}, "se_gate='foo' is invalid"),
        ({"depth": 42}, "depth=42 is invalid"),
        ({"depth": "50"}, "depth='50' is invalid"),
        ({"depth": 18, "se_position": "3x3"}, "se_position='3x3' is invalid"),
        ({"out_features": ["res6"]}, "out_features=.*res6"),
        ({"freeze_at": 7}, "freeze_at=7 is invalid"),
        ({"se_stages": "res5"}, "se_stages='res5' is invalid"),
        ({"se_reduction": 1000}, "se_reduction=1000 is invalid: expected at most"),
        ({"num_groups": 0}, "num_groups and width_per_group must be positive"),
    ],
)
def test_make_se_resnet_errors_name_the_argument(kwargs, message):
    with pytest.raises(SEConfigError, match=message):
        make_se_resnet(**kwargs)


def test_make_se_resnet_rejects_unknown_arguments():
    with pytest.raises(TypeError, match="se_gat"):
        make_se_resnet(se_gat="tanh")


# ----------------------------------------------------------------------- every python config
def test_python_configs_are_listed():
    assert {
        "COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.py",
        "new_baselines/mask_rcnn_SE_R_50_FPN_100ep_LSJ.py",
        SYNTHETIC,
    } <= set(PY_CONFIGS)
    assert not any(name.startswith("common/") for name in PY_CONFIGS)
    assert set(list_configs()) == set(PY_CONFIGS) | set(list_configs(".yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("name", PY_CONFIGS)
def test_python_config_instantiates_and_trains_a_step(name, tiny, tmp_path):
    cfg = get_config(name)
    trunk = cfg.model.backbone.bottom_up
    assert trunk._target_ is make_se_resnet
    if name.startswith(("COCO-", "new_baselines/")):
        assert trunk.depth == 50 and cfg.model.roi_heads.num_classes == 80
        assert cfg.dataloader.train.dataset.names == "coco_2017_train"
        assert cfg.model.input_format == "RGB" and cfg.model.pixel_std == [58.395, 57.12, 57.375]
    if name.startswith("new_baselines/"):  # Detectron2's LSJ recipe, SE trunk from scratch
        assert trunk.norm == "SyncBN" and trunk.freeze_at == 0 and cfg.train.max_iter == 184375
        assert cfg.dataloader.train.total_batch_size == 64 and cfg.train.amp.enabled
    extra = [
        'train.init_checkpoint=""',  # nothing is downloaded or read
        "model.backbone.bottom_up.freeze_at=0",
        "model.roi_heads.num_classes=5",
        "model.roi_heads.batch_size_per_image=32",
        "model.proposal_generator.post_nms_topk=[50,50]",
        "train.amp.enabled=False",
    ]
    apply_overrides(cfg, tiny_overrides(tmp_path, max_iter=1) + extra)
    seed_all_rng(0)
    trainer = SELazyTrainer(cfg)
    model = trainer.trainer.model
    assert type(model.backbone.bottom_up.res5[0]).__name__.startswith("SE")
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert (tmp_path / "model_final.pth").is_file()
    (record,) = [r for r in read_metrics(str(tmp_path / "metrics.json")) if "total_loss" in r]
    assert 0 < record["total_loss"] < 50
    if "mask_head" in cfg.model.roi_heads:
        assert "loss_mask" in record


# ------------------------------------------------------------------------------ exact resume
def _lazy_trainer(out):
    cfg = get_config(SYNTHETIC)
    # 6 iterations, a checkpoint after iteration 2: the crashed run resumes for the last 3
    apply_overrides(cfg, tiny_overrides(out, max_iter=6, period=3))
    seed_all_rng(cfg.train.seed)
    return SELazyTrainer(cfg)


@pytest.mark.slow
def test_resume_continues_exactly(tiny, tmp_path, run_trainer):
    run_trainer(_lazy_trainer(tmp_path / "straight"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_trainer(_lazy_trainer(tmp_path / "crashed"), crash_after=3)
    assert (tmp_path / "crashed/last_checkpoint").read_text().strip() == "model_0000002.pth"
    assert not (tmp_path / "crashed/model_final.pth").exists()
    resumed = run_trainer(_lazy_trainer(tmp_path / "crashed"), resume=True)
    assert resumed.start_iter == 3

    a = torch.load(tmp_path / "straight/model_final.pth", weights_only=False)
    b = torch.load(tmp_path / "crashed/model_final.pth", weights_only=False)
    assert a["iteration"] == b["iteration"] == 5
    data = [ckpt["process_states"]["ranks"][0]["data"] for ckpt in (a, b)]
    assert data[0] == data[1] and data[0]["seed"] == 42
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert not list((tmp_path / "crashed").glob("*.tmp*")), "temporary checkpoint files left"


def test_overrides_check_keys(tiny):
    cfg = get_config(SYNTHETIC)
    with pytest.raises(LazyConfigError, match=r"'train.max_itr'.*did you mean 'max_iter'"):
        apply_overrides(cfg, ["train.max_itr=3"])
    with pytest.raises(LazyConfigError, match="a call of make_se_resnet.*se_gat"):
        apply_overrides(cfg, ["model.backbone.bottom_up.se_gat=tanh"])
    with pytest.raises(LazyConfigError, match="not key=value"):
        apply_overrides(cfg, ["train.max_iter", "3"])
    # a make_se_resnet argument the config leaves at its default may be set
    apply_overrides(cfg, ["model.backbone.bottom_up.se_gate=tanh", "train.max_iter=3"])
    assert cfg.model.backbone.bottom_up.se_gate == "tanh" and cfg.train.max_iter == 3


# ------------------------------------------------------------------- tools/lazy_train_net.py
def run_lazy(*args, timeout=600, threads="1"):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=threads)
    if threads is None:
        env.pop("OMP_NUM_THREADS")
    return subprocess.run(
        [sys.executable, str(ROOT / "tools/lazy_train_net.py"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def cli_args(tiny, out, max_iter=2):
    return [
        "--config-file", SYNTHETIC,
        "--register-coco", f"lazy_tiny_train:{tiny['train_json']}:{tiny['train_images']}",
        "--register-coco", f"lazy_tiny_val:{tiny['val_json']}:{tiny['val_images']}",
        *tiny_overrides(out, max_iter=max_iter, period=2),
        "dataloader.test.mapper.augmentations=[]",
    ]  # fmt: skip


@pytest.mark.slow
def test_cli_trains_resumes_and_evaluates(tiny, tmp_path):
    out = tmp_path / "run"
    args = [a for a in cli_args(tiny, out) if a != "dataloader.evaluator=None"]
    proc = run_lazy(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("model_final.pth", "metrics.json", "config.yaml", "final_results.json"):
        assert (out / name).is_file(), name
    final = json.loads((out / "final_results.json").read_text())["lazy_tiny_val"]
    assert set(final) == {"bbox", "segm"} and "AP" in final["bbox"]

    proc = run_lazy("--resume", *args, "train.max_iter=3")  # the last override wins
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming from iteration 2" in proc.stderr + proc.stdout

    ev = tmp_path / "eval"
    proc = run_lazy(
        "--eval-only", *[a.replace(str(out), str(ev)) for a in args],
        f"train.init_checkpoint={out / 'model_final.pth'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((ev / "final_results.json").read_text())["lazy_tiny_val"]
    assert set(again) == {"bbox", "segm"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra,message",
    [
        (["train.max_itr=3"], r"unknown config key 'train.max_itr'.*'max_iter'"),
        (["model.backbone.bottom_up.se_gate=foo"], "se_gate='foo' is invalid"),
        (["dataloader.train.dataset.names=nope_train"], "nope_train.*dataloader.train.dataset"),
        (["train.init_checkpoint=/nonexistent/w.pkl"], "train.init_checkpoint='/nonexistent/w"),
        (["model.backbone.bottom_up.freeze_at=2"], r"freeze_at=0"),
        (["MODEL.WEIGHTS", "x.pkl"], "not key=value"),
    ],
    ids=["unknown-key", "bad-value", "dataset", "weights", "frozen-random", "yacs-style"],
)
def test_user_errors_are_one_clear_message(tiny, tmp_path, run_cli_in_process, extra, message):
    from se_detectron.engine.lazy_train_net import cli

    status, stderr = run_cli_in_process(cli, [*cli_args(tiny, tmp_path / "e"), *extra])
    assert status == 2, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(message, last), last


@pytest.mark.slow
@pytest.mark.parametrize(
    "config_file,message",
    [
        ("missing.py", r"'missing.py'.*Synthetic/mask_rcnn_SE_R_18_FPN_synthetic.py"),
        ("COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml", "is a yacs config"),
    ],
)
def test_bad_config_file(run_cli_in_process, config_file, message):
    from se_detectron.engine.lazy_train_net import cli

    status, stderr = run_cli_in_process(cli, ["--config-file", config_file])
    assert status == 2
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(message, last), last


@pytest.mark.slow
def test_the_tools_process_reports_a_user_error_in_one_line(tmp_path):
    proc = run_lazy("--config-file", str(tmp_path / "missing.py"))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "missing.py" in last, last


@pytest.mark.slow
def test_two_process_cpu_training(tiny, tmp_path):
    """`--num-gpus 2` on a CPU-only machine: two gloo processes train one model together."""
    if torch.cuda.is_available():
        pytest.skip("this test exercises the CPU (gloo) path")
    out = tmp_path / "ddp"
    proc = run_lazy("--num-gpus", "2", *cli_args(tiny, out, max_iter=2), threads=None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    threads = max(1, os.cpu_count() // 2)
    assert f"2 CPU training processes on {os.cpu_count()} cores: {threads} torch" in proc.stdout
    assert (out / "model_final.pth").is_file()
    assert "World size: 2" in (out / "log.txt").read_text()


# ------------------------------------------------------------------ converted weights' config
@pytest.mark.slow
def test_converted_weights_are_checked_against_the_python_config(tiny, tmp_path):
    """As the yacs path: weights converted for another trunk setting are an error naming the
    python-config argument, not a detector that loads every tensor and computes other features."""
    from se_detectron.checkpoint import ConvertedConfigMismatchError
    from se_detectron.convert import convert_checkpoint
    from se_detectron.engine.lazy_config import converted_config_view
    from se_detectron.modeling import build_se_resnet_classifier
    from se_detectron.modeling.archs import apply_arch

    trunk_cfg = apply_arch(get_se_cfg(), "se_resnet18")
    trunk_cfg.MODEL.SE.STEM_CEIL_POOL = True  # the synthetic python config pools without ceil
    classifier = build_se_resnet_classifier(trunk_cfg, num_classes=3)
    src = tmp_path / "pretrain.pth"
    recorded = {"MODEL.SE.STEM_CEIL_POOL": True, "MODEL.RESNETS.STRIDE_IN_1X1": True}
    torch.save({"model": classifier.state_dict(), "se_detectron_config": recorded}, src)
    convert_checkpoint(str(src), str(tmp_path / "r18.pkl"))

    cfg = get_config(SYNTHETIC)
    view, names = converted_config_view(cfg)
    assert view.MODEL.RESNETS.DEPTH == 18 and view.MODEL.SE.STEM_CEIL_POOL is False
    assert names["MODEL.SE.STEM_CEIL_POOL"] == "model.backbone.bottom_up.stem_ceil_pool"
    assert names["INPUT.FORMAT"] == "model.input_format"
    overrides = tiny_overrides(tmp_path / "run") + [f"train.init_checkpoint={tmp_path}/r18.pkl"]
    apply_overrides(cfg, overrides)
    with pytest.raises(ConvertedConfigMismatchError) as e:
        SELazyTrainer(cfg).resume_or_load(resume=False)
    message = str(e.value)
    assert "weights in train.init_checkpoint were made for another config" in message
    assert "model.backbone.bottom_up.stem_ceil_pool is False but the weights need True" in message
    assert message.endswith("e.g. add: model.backbone.bottom_up.stem_ceil_pool=True")

    apply_overrides(cfg, ["model.backbone.bottom_up.stem_ceil_pool=True"])
    trainer = SELazyTrainer(cfg)
    trainer.resume_or_load(resume=False)
    assert not trainer.checkpointer.last_incompatible_keys.unexpected_keys
