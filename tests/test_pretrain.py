"""Tests of the ImageNet pretraining path (se_detectron.pretrain, tools/pretrain_imagenet.py).

They train on tiny ImageNet-layout folders (a few 32 px images per class) for one or two epochs,
mostly with a narrow trunk (``SMALL_TRUNK`` overrides) so that each test takes seconds on a CPU.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from se_detectron import get_se_cfg
from se_detectron.modeling import check_se_config
from se_detectron.pretrain import (
    ARCH_NAMES,
    CheckpointMismatchError,
    apply_arch,
    arch_overrides,
    find_arch,
    get_args_parser,
    load_data,
    main,
    write_digits_dataset,
)
from se_detectron.pretrain.digits import MANIFEST

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "pretrain_imagenet.py"
STAGE_PREFIXES = ("stem.", "res2.", "res3.", "res4.", "res5.", "linear.")
# A narrow SE-ResNet-50 (same depth and names, ~1/16 of the width) for fast CPU tests.
SMALL_TRUNK = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "16",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "32",
    "MODEL.RESNETS.WIDTH_PER_GROUP", "8",
]  # fmt: skip
SIZES = ["--train-crop-size", "32", "--val-resize-size", "32", "--val-crop-size", "32"]


def make_image_folder(root: Path, classes=("cat", "dog", "fox"), n_train=6, n_val=2, seed=0):
    """An ImageNet-layout folder of small random images (png and jpg, not square)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 80, size=(36, 40, 3), dtype=np.uint8)
                pixels[..., c % 3] += 150  # a class-dependent colour
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(pixels).save(d / f"{i}.{ext}")
    return root


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and oversubscribed shared cores slow them a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"))


def run(data_path, out_dir, *extra, small=True):
    argv = ["--data-path", str(data_path), "--output-dir", str(out_dir), "--workers", "0"]
    argv += ["--device", "cpu", "--batch-size", "4", *SIZES, *extra]
    if small:
        argv += SMALL_TRUNK
    return main(get_args_parser().parse_args(argv))


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained(image_root, tmp_path_factory):
    """One epoch of the real SE-ResNet-50 on the tiny folder."""
    out = tmp_path_factory.mktemp("run")
    result = run(image_root, out, "--epochs", "1", "--arch", "se_resnet50", small=False)
    return out, result


@pytest.mark.slow
def test_train_writes_checkpoint_metrics_and_curves(trained):
    out, result = trained
    assert result["epochs_run"] == 1
    for name in ("checkpoint.pth", "best.pth", "metrics.jsonl", "curves.png", "args.json"):
        assert (out / name).is_file(), name
    assert not [p for p in os.listdir(out) if ".tmp" in p]  # atomic writes left no temp file

    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["arch"] == "se_resnet50"
    assert ckpt["classes"] == ["cat", "dog", "fox"]
    names = list(ckpt["model"])
    assert names[0].startswith("stem.") and names[-1].startswith("linear.")
    assert all(n.startswith(STAGE_PREFIXES) for n in names), [
        n for n in names if not n.startswith(STAGE_PREFIXES)
    ]
    assert {n.split(".")[0] for n in names} == {p[:-1] for p in STAGE_PREFIXES}
    assert ckpt["model"]["linear.weight"].shape == (3, 2048)
    for key in ("optimizer", "lr_scheduler", "rng", "args", "cfg", "best_top1"):
        assert key in ckpt
    assert all(torch.isfinite(v.float()).all() for v in ckpt["model"].values())

    (record,) = read_jsonl(out / "metrics.jsonl")
    assert record["epoch"] == 1
    assert np.isfinite(record["train_loss"]) and np.isfinite(record["val_loss"])
    for key in ("train_top1", "val_top1", "val_top5"):
        assert 0.0 <= record[key] <= 100.0
    assert record["val_top5"] == 100.0  # 3 classes: the top-5 always contains the target
    assert record["epoch_time"] > 0 and record["images_per_sec"] > 0
    # Default learning rate: 0.1 x global batch / 256.
    assert record["lr"] == pytest.approx(0.1 * 4 / 256)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    resolved = json.loads((out / "args.json").read_text())["resolved"]
    assert resolved["world_size"] == 1 and resolved["hflip"] is True


@pytest.mark.slow
def test_train_options_ema_mixup_amp_accum(image_root, tmp_path):
    out = tmp_path / "opts"
    result = run(
        image_root, out, "--epochs", "2", "--model-ema", "--model-ema-decay", "0.9",
        "--mixup-alpha", "0.2", "--cutmix-alpha", "1.0", "--label-smoothing", "0.1",
        "--lr-scheduler", "cosine", "--lr-warmup-epochs", "1", "--grad-accum-steps", "2",
        "--amp", "--channels-last", "--lr", "0.05", "--workers", "1",
    )  # fmt: skip
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0]["lr"] == pytest.approx(0.05 * 0.01)  # warmup starts at lr x 0.01
    assert records[1]["lr"] == pytest.approx(0.05)
    assert all(0 <= r["ema_top1"] <= 100 and np.isfinite(r["ema_loss"]) for r in records)
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert set(ckpt["model_ema"]) == set(ckpt["model"])
    assert ckpt["model_ema_n_averaged"] >= 1
    assert result["last"]["epoch"] == 2


def test_warmup_longer_than_the_run_is_an_error(image_root, tmp_path, capsys):
    with pytest.raises(ValueError, match="--lr-warmup-epochs 3 must be smaller than --epochs 2"):
        run(image_root, tmp_path / "w", "--epochs", "2", "--lr-warmup-epochs", "3")
    assert not (tmp_path / "w" / "checkpoint.pth").exists()
    # the command line reports it as one error line, no traceback
    from se_detectron.pretrain.train import cli

    argv = ["--data-path", str(image_root), "--output-dir", str(tmp_path / "w"), "--device", "cpu"]
    assert cli([*argv, "--epochs", "2", "--lr-warmup-epochs", "3"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --lr-warmup-epochs 3")


@pytest.mark.slow
def test_resume_continues_exactly(image_root, tmp_path):
    common = ["--lr", "0.05", "--lr-step-size", "1", "--seed", "3"]
    full, split = tmp_path / "full", tmp_path / "split"
    run(image_root, full, "--epochs", "2", *common)
    run(image_root, split, "--epochs", "1", *common)
    result = run(image_root, split, "--epochs", "2", "--resume", "auto", *common)
    assert result["epochs_run"] == 1

    a = torch.load(full / "checkpoint.pth", map_location="cpu", weights_only=True)
    b = torch.load(split / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert a["lr_scheduler"]["last_epoch"] == b["lr_scheduler"]["last_epoch"] == 2
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    ra, rb = read_jsonl(full / "metrics.jsonl"), read_jsonl(split / "metrics.jsonl")
    assert [r["epoch"] for r in rb] == [1, 2]
    assert [r["lr"] for r in ra] == [r["lr"] for r in rb] == pytest.approx([0.05, 0.005])
    assert rb[1]["train_loss"] == pytest.approx(ra[1]["train_loss"], rel=1e-5)


@pytest.mark.slow
def test_resume_errors(trained, image_root, tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        run(image_root, tmp_path / "o1", "--epochs", "1", "--resume", str(missing))
    # The trained checkpoint is a full-width SE-ResNet-50; a ResNeXt trunk does not fit it.
    ckpt = str(trained[0] / "checkpoint.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        args = ["--test-only", "--resume", ckpt, "--arch", "se_resnext50_32x4d"]
        run(image_root, tmp_path / "o2", *args, small=False)
    msg = str(err.value)
    assert "'res2.0.conv1.weight' has shape (64, 64, 1, 1) in the checkpoint" in msg
    assert "(128, 64, 1, 1) in the model" in msg and "checkpoint.pth" in msg


@pytest.mark.slow
def test_test_only_evaluates_a_checkpoint(trained, image_root, tmp_path):
    out, _ = trained
    result = run(
        image_root, tmp_path / "eval", "--test-only", "--resume", str(out / "best.pth"),
        small=False,
    )  # fmt: skip
    assert result["last"]["count"] == 6
    first = read_jsonl(out / "metrics.jsonl")[0]
    assert result["last"]["top1"] == pytest.approx(first["val_top1"])


def test_data_errors(tmp_path):
    root = make_image_folder(tmp_path / "ok", classes=("a", "b"), n_train=1, n_val=1)
    train, val = load_data(str(root), 32, 32, 32)
    assert train.classes == val.classes == ["a", "b"] and len(train) == len(val) == 2

    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent" / "train"))):
        load_data(str(tmp_path / "absent"))
    (tmp_path / "noval" / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "noval" / "train" / "a" / "x.png")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "noval" / "val"))):
        load_data(str(tmp_path / "noval"))
    (tmp_path / "noval" / "val" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no image .*|but no image"):
        load_data(str(tmp_path / "noval"))
    other = make_image_folder(tmp_path / "mismatch", classes=("a", "b"), n_train=1, n_val=1)
    (other / "val" / "b").rename(other / "val" / "c")
    with pytest.raises(ValueError, match=r"only in train: \['b'\], only in val: \['c'\]"):
        load_data(str(other))


def test_digits_writer(tmp_path):
    root = write_digits_dataset(str(tmp_path / "d1"), image_size=16)
    manifest = json.loads((Path(root) / MANIFEST).read_text())
    counts = manifest["counts"]
    for split in ("train", "val"):
        assert sorted(os.listdir(Path(root) / split)) == [str(c) for c in range(10)]
        for c in range(10):
            files = os.listdir(Path(root) / split / str(c))
            assert len(files) == counts[split][str(c)] > 0
    n_train, n_val = sum(counts["train"].values()), sum(counts["val"].values())
    assert n_train + n_val == 1797 and n_val == 360
    for c in range(10):  # stratified: every class is split 80/20
        total = counts["train"][str(c)] + counts["val"][str(c)]
        assert abs(counts["val"][str(c)] - 0.2 * total) <= 1
    img = Image.open(Path(root) / "val" / "0" / sorted(os.listdir(Path(root) / "val" / "0"))[0])
    assert img.size == (16, 16) and img.mode == "RGB"

    # Deterministic: another folder gets the same files, byte for byte.
    root2 = write_digits_dataset(str(tmp_path / "d2"), image_size=16)
    files1 = sorted(p.relative_to(root) for p in Path(root).rglob("*.png"))
    files2 = sorted(p.relative_to(root2) for p in Path(root2).rglob("*.png"))
    assert files1 == files2
    for rel in files1[::97]:
        assert (Path(root) / rel).read_bytes() == (Path(root2) / rel).read_bytes()

    # Idempotent: same parameters reuse the folder; new ones replace it.
    stamp = (Path(root) / MANIFEST).stat().st_mtime_ns
    assert write_digits_dataset(root, image_size=16) == root
    assert (Path(root) / MANIFEST).stat().st_mtime_ns == stamp
    write_digits_dataset(root, image_size=8)
    one = Path(root) / "train" / "1"
    assert Image.open(one / os.listdir(one)[0]).size == (8, 8)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp folder left
    (tmp_path / "foreign").mkdir()
    with pytest.raises(FileExistsError, match="foreign"):
        write_digits_dataset(str(tmp_path / "foreign"))


def test_arch_table():
    assert set(ARCH_NAMES) == {
        "se_resnet18", "se_resnet34", "se_resnet50", "se_resnet101", "se_resnet152",
        "se_resnext50_32x4d", "se_resnext101_32x4d", "se_resnext101_32x8d",
        "se_resnext101_64x4d", "senet154",
        # timm's SE-ResNet-D models
        "se_resnet50t", "se_resnetaa50d", "se_resnet152d", "se_resnet200d", "se_resnet269d",
        "se_resnext26d_32x4d", "se_resnext26t_32x4d", "se_resnext101d_32x8d",
        "se_resnextaa101d_32x8d",
        # timm's ECA-ResNet-D models (the same SE layer with MODEL.SE.EXCITATION "eca")
        "eca_resnet26t", "eca_resnet50d", "eca_resnet50t", "eca_resnet101d",
    }  # fmt: skip
    for name in ARCH_NAMES:
        cfg = apply_arch(get_se_cfg(), name)
        check_se_config(cfg)
        assert find_arch(cfg) == name
    s154 = arch_overrides("senet154")
    assert s154["MODEL.RESNETS.DEPTH"] == 152 and s154["MODEL.RESNETS.NUM_GROUPS"] == 64
    assert s154["MODEL.SE.STEM"] == "deep" and s154["MODEL.SE.SHORTCUT_KERNEL"] == 3
    assert s154["MODEL.RESNETS.STEM_OUT_CHANNELS"] == 128
    assert s154["MODEL.SE.CONV1_WIDTH_RATIO"] == 0.5 and s154["MODEL.SE.STEM_CEIL_POOL"] is True
    assert arch_overrides("se_resnet101")["MODEL.RESNETS.STRIDE_IN_1X1"] is True
    r18 = arch_overrides("se_resnet18")
    assert r18["MODEL.RESNETS.DEPTH"] == 18 and r18["MODEL.RESNETS.RES2_OUT_CHANNELS"] == 64
    assert arch_overrides("se_resnext101_32x4d")["MODEL.RESNETS.STRIDE_IN_1X1"] is False
    # An arch applied on top of a detection config overrides its trunk.
    cfg = apply_arch(get_se_cfg("COCO-Detection/faster_rcnn_SENet_154_FPN_3x.yaml"), "se_resnet50")
    assert find_arch(cfg) == "se_resnet50"
    with pytest.raises(KeyError, match="se_resnet50"):
        arch_overrides("resnet50")


@pytest.mark.slow
def test_resnet_d_pretraining_converts_with_its_layout(image_root, tmp_path):
    """An anti-aliased ResNet-D pretraining run: the converter reads AVG_DOWN / ANTI_ALIAS (which
    have no weights) from the checkpoint, and the weights load into the detector's trunk."""
    from detectron2.layers import ShapeSpec

    from se_detectron.config import config_opts
    from se_detectron.convert import convert_checkpoint
    from se_detectron.modeling import build_se_resnet

    out = tmp_path / "aa"
    run(image_root, out, "--epochs", "1", "--arch", "se_resnetaa50d", small=False)
    result = convert_checkpoint(str(out / "checkpoint.pth"), str(tmp_path / "aa.pkl"))
    assert result.arch_name == "se_resnetaa50d"
    assert result.config["MODEL.SE.ANTI_ALIAS"] is True and result.config["MODEL.SE.AVG_DOWN"]
    cfg = get_se_cfg()
    cfg.merge_from_list(config_opts(result.config))
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    trunk = build_se_resnet(cfg, ShapeSpec(channels=3))
    trunk.load_state_dict({k: torch.as_tensor(v) for k, v in result.state_dict.items()})
    assert trunk.res3[0].aa_stride == 2 and trunk.res3[0].avg_down_stride == 2


def test_help_documents_the_demo():
    text = get_args_parser().format_help()
    assert "--data-path digits" in text and "se_resnet50" in text


@pytest.mark.slow
def test_ddp_two_processes_with_torchrun(image_root, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
        str(TOOL), "--data-path", str(image_root), "--output-dir", str(out), "--epochs", "1",
        "--workers", "0", "--device", "cpu", "--batch-size", "3", *SIZES, *SMALL_TRUNK,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and all(n.startswith(STAGE_PREFIXES) for n in ckpt["model"])
    assert not any(n.startswith("module.") for n in ckpt["model"])
    resolved = json.loads((out / "args.json").read_text())["resolved"]
    assert resolved["world_size"] == 2 and resolved["global_batch"] == 6
    (record,) = read_jsonl(out / "metrics.jsonl")
    assert 0 <= record["val_top1"] <= 100
    # Only rank 0 prints the per-epoch summary.
    assert proc.stdout.count("Epoch 1/1:") == 1, proc.stdout


def test_metrics_reader_skips_a_line_cut_by_a_kill(tmp_path):
    from se_detectron.pretrain.epoch_metrics import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "val_top1": 50.0}\n\n{"epoch": 2, "val_to')
    assert read_metrics(str(path)) == [{"epoch": 1, "val_top1": 50.0}]
