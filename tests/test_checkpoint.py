"""Tests of se_detectron.checkpoint and tools/convert_pretrained.py.

Equivalence with timm is checked on randomly initialized timm models (``pretrained=False``, no
download) whose BatchNorm statistics/affine parameters and conv biases are randomized, so that a
wrong stride placement, stem pooling, SE mapping or BN mapping changes the outputs. timm's
``legacy_*`` models are its port of Cadene's ``pretrainedmodels`` SENets with the same key names
(``layer0.*``, ``se_module.*``, ``last_linear``); they stand in for the Cadene format since
``pretrainedmodels`` is not installed.
"""

import argparse
import logging
import os
import pathlib
import pickle
import shlex
import sys

import numpy as np
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model

from se_detectron import get_se_cfg
from se_detectron.checkpoint import (
    BackboneShapeMismatchError,
    ConvertedConfigMismatchError,
    FrozenRandomInitError,
    SEDetectionCheckpointer,
    check_no_frozen_random_init,
    frozen_state_keys,
)
from se_detectron.config import config_opts
from se_detectron.convert import (
    IMAGENET_RGB_PIXEL_MEAN,
    IMAGENET_RGB_PIXEL_STD,
    ConversionError,
    convert_checkpoint,
    convert_state_dict,
    infer_architecture,
    read_converted,
    source_settings,
)
from se_detectron.modeling import build_se_resnet, build_se_resnet_classifier
from se_detectron.modeling.archs import apply_arch

timm = pytest.importorskip("timm")
from random_models import random_timm_model, randomize  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import convert_pretrained  # noqa: E402

STAGES = ["res2", "res3", "res4", "res5"]
# Odd sizes: ceil-mode and padded stem pooling give different feature sizes (17 vs 18 rows).
INPUT_HW = (70, 86)


def _trunk(config, **overrides) -> torch.nn.Module:
    cfg = get_se_cfg()
    cfg.merge_from_list(config_opts({**config, **overrides}))
    cfg.MODEL.RESNETS.OUT_FEATURES = STAGES
    return build_se_resnet(cfg, ShapeSpec(channels=3)).eval()


def _features(trunk, timm_model, x):
    with torch.no_grad():
        ref = timm_model.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)
        out = trunk(x)
    return [out[s] for s in STAGES], ref


def _assert_close(outs, refs, rel=1e-4):
    for stage, o, r in zip(STAGES, outs, refs):
        assert o.shape == r.shape, (stage, o.shape, r.shape)
        err = (o - r).abs().max().item() / r.abs().max().item()
        assert err < rel, f"{stage}: relative error {err:.2e}"


# (timm name, create kwargs, expected source, STRIDE_IN_1X1, STEM_CEIL_POOL, extra expectations)
TIMM_CASES = [
    ("seresnet50", {}, "timm", False, False, {"MODEL.RESNETS.NUM_GROUPS": 1}),
    ("legacy_seresnet50", {}, "cadene", True, True, {"MODEL.RESNETS.NUM_GROUPS": 1}),
    (
        "seresnext50_32x4d",
        {},
        "timm",
        False,
        False,
        {"MODEL.RESNETS.NUM_GROUPS": 32, "MODEL.RESNETS.WIDTH_PER_GROUP": 4},
    ),
    (
        "legacy_seresnext50_32x4d",
        {},
        "cadene",
        False,
        True,
        {"MODEL.RESNETS.NUM_GROUPS": 32, "MODEL.RESNETS.WIDTH_PER_GROUP": 4},
    ),
    (
        "legacy_senet154",
        {},
        "cadene",
        False,
        True,
        {
            "MODEL.RESNETS.DEPTH": 152,
            "MODEL.RESNETS.NUM_GROUPS": 64,
            "MODEL.RESNETS.STEM_OUT_CHANNELS": 128,
            "MODEL.SE.STEM": "deep",
            "MODEL.SE.CONV1_WIDTH_RATIO": 0.5,
            "MODEL.SE.SHORTCUT_KERNEL": 3,
        },
    ),
    # Cadene's SE-ResNeXt-26 (2-2-2-2 bottleneck blocks: MODEL.RESNETS.DEPTH 26)
    (
        "legacy_seresnext26_32x4d",
        {},
        "cadene",
        False,
        True,
        {"MODEL.RESNETS.DEPTH": 26, "MODEL.SE.AVG_DOWN": False},
    ),
    # timm's ResNet-D SE models: 32-32-64 deep stem (tiered: 24-32-64), avg-pool shortcuts
    (
        "seresnext26d_32x4d",
        {},
        "timm",
        False,
        False,
        {
            "MODEL.RESNETS.DEPTH": 26,
            "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
            "MODEL.SE.STEM": "deep",
            "MODEL.SE.STEM_WIDTHS": [],
            "MODEL.SE.AVG_DOWN": True,
            "MODEL.SE.ANTI_ALIAS": False,
        },
    ),
    (
        "seresnext26t_32x4d",
        {},
        "timm",
        False,
        False,
        {"MODEL.SE.STEM_WIDTHS": [24, 32], "MODEL.SE.AVG_DOWN": True},
    ),
    # seresnet152d shortened to 3-4-6-3 blocks (test_full_depth_resnet_d converts the real one)
    (
        "seresnet152d",
        {"layers": (3, 4, 6, 3)},
        "timm",
        False,
        False,
        {"MODEL.RESNETS.DEPTH": 50, "MODEL.SE.STEM": "deep", "MODEL.SE.AVG_DOWN": True},
    ),
    # timm's resnet.py SENet-154 (deep stem, padded pooling), shortened to 3-4-6-3 blocks to
    # keep the test fast: every SENet-154 specific layer is still there.
    (
        "senet154",
        {"layers": (3, 4, 6, 3)},
        "timm",
        False,
        False,
        {"MODEL.SE.STEM": "deep", "MODEL.SE.CONV1_WIDTH_RATIO": 0.5, "MODEL.SE.SHORTCUT_KERNEL": 3},
    ),
]


# the largest models: make test-fast leaves them out (make test runs every case)
SLOW_TIMM_CASES = {"legacy_senet154", "senet154", "seresnet152d", "seresnext50_32x4d"}


@pytest.mark.parametrize(
    "name, kwargs, source, stride_in_1x1, ceil_pool, expected",
    [
        pytest.param(*c, id=c[0], marks=[pytest.mark.slow] if c[0] in SLOW_TIMM_CASES else [])
        for c in TIMM_CASES
    ],
)
def test_timm_equivalence(name, kwargs, source, stride_in_1x1, ceil_pool, expected):
    model = random_timm_model(name, **kwargs)
    result = convert_state_dict(model.state_dict())
    assert result.source == source and result.detected
    cfg = result.config
    assert cfg["MODEL.RESNETS.STRIDE_IN_1X1"] is stride_in_1x1
    assert cfg["MODEL.SE.STEM_CEIL_POOL"] is ceil_pool
    assert cfg["MODEL.PIXEL_MEAN"] == IMAGENET_RGB_PIXEL_MEAN
    assert cfg["INPUT.FORMAT"] == "RGB"
    assert cfg["MODEL.SE.REDUCTION"] == 16 and cfg["MODEL.SE.STAGES"] == STAGES
    for key, value in expected.items():
        assert cfg[key] == value, key
    assert sorted(k for k in result.dropped if "num_batches" not in k) == sorted(
        ["fc.weight", "fc.bias"] if source == "timm" else ["last_linear.weight", "last_linear.bias"]
    )

    trunk = _trunk(cfg)
    incompatible = trunk.load_state_dict(result.state_dict, strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    x = torch.randn(1, 3, *INPUT_HW, generator=torch.Generator().manual_seed(1))
    _assert_close(*_features(trunk, model, x))


@pytest.mark.slow
def test_full_depth_resnet_d():
    """timm's seresnet152d itself: named se_resnet152d, loads strictly, same features."""
    model = random_timm_model("seresnet152d")
    # small last-BN gains (timm zero-inits them): with ~1 ones, 36 random res4 blocks grow the
    # activations to ~1e6, where float32 rounding alone moves res4 by tens of percent
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("bn3"):
                module.weight.mul_(0.2)
    result = convert_state_dict(model.state_dict())
    assert result.arch_name == "se_resnet152d"
    assert result.arch.describe().startswith("SE-ResNet-152-D: blocks 3-8-36-3, deep stem 64 ch")
    trunk = _trunk(result.config)
    trunk.load_state_dict(result.state_dict, strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    _assert_close(*_features(trunk, model, x))


@pytest.mark.slow
def test_anti_aliased_weights_need_arch():
    """Anti-aliasing has no weights: --arch (or a hub config.json) says the model has it."""
    model = random_timm_model("seresnetaa50d")
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))  # multiples of 32

    guessed = convert_state_dict(model.state_dict())
    assert guessed.config["MODEL.SE.ANTI_ALIAS"] is False
    assert any("--arch" in note for note in guessed.notes)
    trunk = _trunk(guessed.config)
    trunk.load_state_dict(guessed.state_dict)
    outs, refs = _features(trunk, model, x)
    assert (outs[0] - refs[0]).abs().max() > 1e-2 * refs[0].abs().max()  # not the same network

    for name in ("seresnetaa50d", "se_resnetaa50d"):  # timm's name or ours
        result = convert_state_dict(model.state_dict(), arch=name)
        assert result.config["MODEL.SE.ANTI_ALIAS"] is True
        assert result.arch_name == "se_resnetaa50d"
        trunk = _trunk(result.config)
        trunk.load_state_dict(result.state_dict, strict=True)
        _assert_close(*_features(trunk, model, x))


def test_arch_must_agree_with_the_weights():
    weights = random_timm_model("seresnext26t_32x4d").state_dict()
    with pytest.raises(ConversionError, match=r"--arch seresnet152d: .*DEPTH=152 but the weights"):
        convert_state_dict(weights, arch="seresnet152d")
    with pytest.raises(ConversionError, match=r"STEM_WIDTHS=\[\] but the weights have \[24, 32\]"):
        convert_state_dict(weights, arch="seresnext26d_32x4d")
    with pytest.raises(ConversionError, match="--arch: unknown SE architecture 'resnet50'"):
        convert_state_dict(weights, arch="resnet50")


def test_hub_config_json_names_the_architecture(tmp_path, capsys):
    """timm files from the Hugging Face hub come with a config.json holding "architecture"."""
    import json

    model = random_timm_model("seresnetaa50d")
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "seresnetaa50d"}))
    result = convert_checkpoint(str(tmp_path / "pytorch_model.bin"), str(tmp_path / "out.pkl"))
    assert result.config["MODEL.SE.ANTI_ALIAS"] is True
    assert "read from" in result.notes[0] and "seresnetaa50d" in result.notes[0]
    assert read_converted(str(tmp_path / "out.pkl"))["se_detectron_config"]["MODEL.SE.ANTI_ALIAS"]

    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet50"}))
    result = convert_checkpoint(str(tmp_path / "pytorch_model.bin"), str(tmp_path / "out.pkl"))
    assert result.config["MODEL.SE.ANTI_ALIAS"] is False
    assert "'resnet50'" in result.notes[0] and "ignored" in result.notes[0]

    # the command line: --arch wins over config.json; a wrong one is a one-line error
    argv = [str(tmp_path / "pytorch_model.bin"), str(tmp_path / "cli.pkl")]
    assert convert_pretrained.cli([*argv, "--arch", "seresnetaa50d"]) == 0
    out = capsys.readouterr().out
    assert "architecture   : se_resnetaa50d: SE-ResNet-50-D anti-aliased" in out
    assert "MODEL.SE.ANTI_ALIAS: True" in out
    assert convert_pretrained.cli([*argv, "--arch", "seresnext26d_32x4d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --arch seresnext26d_32x4d: the architecture has MODEL.RESNETS.")


def test_settings_matter_for_cadene_layout():
    """The stride placement and stem pooling inferred for Cadene weights are not no-ops."""
    model = random_timm_model("legacy_seresnet50")
    result = convert_state_dict(model.state_dict())
    x = torch.randn(1, 3, *INPUT_HW, generator=torch.Generator().manual_seed(1))
    for key in ("MODEL.RESNETS.STRIDE_IN_1X1", "MODEL.SE.STEM_CEIL_POOL"):
        trunk = _trunk(result.config, **{key: not result.config[key]})
        trunk.load_state_dict(result.state_dict)
        outs, refs = _features(trunk, model, x)
        res5, ref5 = outs[-1], refs[-1]
        differs = res5.shape != ref5.shape or (res5 - ref5).abs().max() > 1e-2 * ref5.abs().max()
        assert differs, key


def test_imagenet_constants_match_timm():
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    np.testing.assert_allclose(IMAGENET_RGB_PIXEL_MEAN, np.array(IMAGENET_DEFAULT_MEAN) * 255)
    np.testing.assert_allclose(IMAGENET_RGB_PIXEL_STD, np.array(IMAGENET_DEFAULT_STD) * 255)
    for name in ("legacy_seresnet50", "seresnet50", "legacy_senet154", "seresnext50_32x4d"):
        pretrained_cfg = timm.models.get_pretrained_cfg(name)
        assert tuple(pretrained_cfg.mean) == IMAGENET_DEFAULT_MEAN, name
        assert tuple(pretrained_cfg.std) == IMAGENET_DEFAULT_STD, name


@pytest.mark.parametrize(
    "name, message",
    [
        ("seresnextaa201d_32x8d", "3-24-36-4"),
        # a plain ResNet (timm's blur-pool resnetblur50): no SE units to convert
        ("resnetblur50", "has no SE units"),
    ],
)
def test_unsupported_architectures(name, message):
    with torch.device("meta"):  # names and shapes are enough
        model = timm.create_model(name, pretrained=False)
    with pytest.raises(ConversionError, match=message):
        convert_state_dict(model.state_dict())


def test_unknown_format_lists_the_formats():
    with pytest.raises(ConversionError) as e:
        convert_state_dict({"foo.weight": torch.zeros(1), "bar.bias": torch.zeros(1)})
    for fmt in ("se_detectron", "timm", "cadene", "--source"):
        assert fmt in str(e.value)


# --------------------------------------------------------------------------- files and CLI
@pytest.fixture(scope="module")
def pretrain_files(tmp_path_factory):
    """A fake se_detectron pretraining checkpoint (SE-R50 classifier), converted twice.

    It has the layout of se_detectron.pretrain.train_state: args as a dict, the trunk config as
    YAML under "cfg" (here with STEM_CEIL_POOL True, unlike ARCHS["se_resnet50"], to show that
    "cfg" wins), "arch", and the EMA weights under "model_ema".
    """
    tmp = tmp_path_factory.mktemp("pretrain")
    torch.manual_seed(0)
    cfg = apply_arch(get_se_cfg(), "se_resnet50")
    cfg.merge_from_list(["MODEL.RESNETS.NORM", "BN", "MODEL.SE.STEM_CEIL_POOL", True])
    clf = randomize(build_se_resnet_classifier(cfg, num_classes=10))
    model_sd = clf.state_dict()
    ema_sd = {k: v + 0.01 if v.is_floating_point() else v for k, v in model_sd.items()}
    path = tmp / "checkpoint.pth"
    torch.save(
        {
            "model": model_sd,
            "model_ema": ema_sd,
            "model_ema_n_averaged": torch.tensor(7),
            "optimizer": {"state": {}, "param_groups": []},
            "epoch": 3,
            "args": {"arch": "se_resnet50", "lr": 0.1, "model_ema": True},
            "cfg": cfg.dump(),
            "arch": "se_resnet50",
        },
        path,
    )
    pkl = tmp / "SE-R-50.pkl"
    ema_pkl = tmp / "SE-R-50-ema.pkl"
    assert convert_pretrained.cli([str(path), str(pkl)]) == 0
    assert convert_pretrained.cli([str(path), str(ema_pkl), "--ema"]) == 0

    def trunk_of(sd):
        return {
            k: v
            for k, v in sd.items()
            if not k.startswith("linear.") and not k.endswith("num_batches_tracked")
        }

    trunk, ema_trunk = trunk_of(model_sd), trunk_of(ema_sd)
    assert len(trunk) == 329
    return {"pth": path, "pkl": pkl, "ema_pkl": ema_pkl, "trunk": trunk, "ema_trunk": ema_trunk}


def test_converted_file_format(pretrain_files):
    data = read_converted(str(pretrain_files["pkl"]))
    assert data["__author__"] == "se_detectron" and data["matching_heuristics"] is True
    assert all(isinstance(v, np.ndarray) for v in data["model"].values())
    assert set(data["model"]) == set(pretrain_files["trunk"])
    assert not any(k.startswith("linear.") for k in data["model"])
    cfg = data["se_detectron_config"]
    assert cfg["MODEL.RESNETS.DEPTH"] == 50 and cfg["MODEL.RESNETS.STRIDE_IN_1X1"] is True
    assert cfg["MODEL.SE.STEM_CEIL_POOL"] is True  # from the checkpoint's "cfg"
    assert cfg["MODEL.PIXEL_MEAN"] == IMAGENET_RGB_PIXEL_MEAN and cfg["INPUT.FORMAT"] == "RGB"
    assert data["se_detectron_conversion"]["arch"] == "se_resnet50"
    assert data["se_detectron_conversion"]["source"] == "se_detectron"


def test_se_detectron_settings_precedence(pretrain_files):
    arch = infer_architecture(pretrain_files["trunk"])
    explicit = {"MODEL.SE.POSITION": "post", "MODEL.RESNETS.STRIDE_IN_1X1": False}
    settings, _ = source_settings("se_detectron", arch, {"se_detectron_config": explicit})
    assert settings["MODEL.SE.POSITION"] == "post"
    assert settings["MODEL.RESNETS.STRIDE_IN_1X1"] is False
    settings, _ = source_settings("se_detectron", arch, {"args": {"arch": "se_resnext50_32x4d"}})
    assert settings["MODEL.RESNETS.STRIDE_IN_1X1"] is False  # ARCHS["se_resnext50_32x4d"]
    settings, notes = source_settings("se_detectron", arch, {})
    assert settings["MODEL.RESNETS.STRIDE_IN_1X1"] is True  # get_se_cfg() default
    assert any("assumed" in n for n in notes)


def _detector(config_file=None, opts=(), plain_backbone=False):
    cfg = get_se_cfg(config_file or "COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml")
    if plain_backbone:
        cfg.merge_from_list(
            [
                "MODEL.BACKBONE.NAME", "build_se_resnet_backbone",
                "MODEL.RESNETS.OUT_FEATURES", ["res5"],
                "MODEL.RPN.IN_FEATURES", ["res5"],
                "MODEL.ROI_HEADS.IN_FEATURES", ["res5"],
                "MODEL.ANCHOR_GENERATOR.SIZES", [[32, 64, 128, 256, 512]],
            ]
        )  # fmt: skip
    cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg), cfg


@pytest.mark.parametrize(
    "kind, prefix",
    [
        ("faster_rcnn_fpn", "backbone.bottom_up."),
        ("retinanet", "backbone.bottom_up."),
        ("plain_backbone", "backbone."),
    ],
)
def test_pretrain_round_trip(pretrain_files, kind, prefix):
    config = {"retinanet": "COCO-Detection/retinanet_SE_R_50_FPN_1x.yaml"}.get(kind)
    model, _ = _detector(config, plain_backbone=kind == "plain_backbone")
    checkpointer = SEDetectionCheckpointer(model)
    extra = checkpointer.load(str(pretrain_files["pkl"]))
    assert extra["se_detectron_config"]["MODEL.RESNETS.DEPTH"] == 50
    incompatible = checkpointer.last_incompatible_keys
    assert incompatible.unexpected_keys == []
    assert [k for k in incompatible.missing_keys if k.startswith(prefix + "res")] == []
    assert [k for k in incompatible.missing_keys if k.startswith(prefix + "stem")] == []
    assert incompatible.incorrect_shapes == []
    state = model.state_dict()
    for key, value in pretrain_files["trunk"].items():
        assert torch.equal(state[prefix + key], value), key


def test_pretrain_round_trip_c4(pretrain_files):
    """C4: stem/res2-res4 go to the backbone, res5 (with its SE units) into SERes5ROIHeads."""
    model, _ = _detector("COCO-Detection/faster_rcnn_SE_R_50_C4_1x.yaml")
    checkpointer = SEDetectionCheckpointer(model)
    checkpointer.load(str(pretrain_files["pkl"]))
    incompatible = checkpointer.last_incompatible_keys
    assert incompatible.unexpected_keys == [] and incompatible.incorrect_shapes == []
    trunk = ("backbone.", "roi_heads.res5.")  # a C4 backbone is the bare trunk (stem, res2-res4)
    assert [k for k in incompatible.missing_keys if k.startswith(trunk)] == []
    state = model.state_dict()
    for key, value in pretrain_files["trunk"].items():
        target = ("roi_heads." if key.startswith("res5.") else "backbone.") + key
        assert torch.equal(state[target], value), key
    assert "roi_heads.res5.2.se.fc2.weight" in state


def test_ema_weights_are_loaded(pretrain_files):
    model, _ = _detector()
    SEDetectionCheckpointer(model).load(str(pretrain_files["ema_pkl"]))
    state = model.state_dict()
    for key, value in pretrain_files["ema_trunk"].items():
        assert torch.equal(state["backbone.bottom_up." + key], value), key


def test_cli_safetensors_and_written_config(tmp_path, capsys):
    from safetensors.torch import save_file

    model = random_timm_model("seresnet50")
    src = tmp_path / "seresnet50.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(src))
    out, yaml_path = tmp_path / "w.pkl", tmp_path / "cfgs" / "faster_rcnn.yaml"
    base = REPO / "configs" / "Base-SE-RCNN-FPN.yaml"
    argv = [str(src), str(out), "--write-config", str(yaml_path), "--base-config", str(base)]
    assert convert_pretrained.cli(argv) == 0
    printed = capsys.readouterr().out
    for text in (
        "source format  : timm (auto-detected)",
        "se_resnet50",
        "2 classifier keys (fc.bias, fc.weight)",
        "MODEL.RESNETS.STRIDE_IN_1X1: True -> False",  # the base config has Detectron2's True
        "MODEL.SE.STEM_CEIL_POOL: False",
    ):
        assert text in printed, text

    cfg = get_se_cfg(str(yaml_path))
    assert str(out) == cfg.MODEL.WEIGHTS
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False and cfg.INPUT.FORMAT == "RGB"
    assert cfg.MODEL.BACKBONE.NAME == "build_se_resnet_fpn_backbone"  # from the _BASE_
    cfg.MODEL.DEVICE = "cpu"
    detector = build_model(cfg)
    checkpointer = SEDetectionCheckpointer(detector)
    checkpointer.load(cfg.MODEL.WEIGHTS)
    assert checkpointer.last_incompatible_keys.unexpected_keys == []
    assert not [k for k in checkpointer.last_incompatible_keys.missing_keys if "bottom_up" in k]
    # The trunk inside the detector computes what timm computes.
    x = torch.randn(1, 3, *INPUT_HW)
    with torch.no_grad():
        feats = detector.backbone.bottom_up(x)
        refs = model.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)
    _assert_close([feats[s] for s in STAGES], refs)


@pytest.mark.slow
def test_resnet_d_weights_in_the_detector(tmp_path):
    """timm's tiered SE-ResNeXt-26-D through --write-config into a Faster R-CNN FPN."""
    model = random_timm_model("seresnext26t_32x4d")
    src, out, yaml_path = tmp_path / "w.pth", tmp_path / "w.pkl", tmp_path / "frcnn.yaml"
    torch.save(model.state_dict(), src)
    base = REPO / "configs" / "Base-SE-RCNN-FPN.yaml"
    argv = [str(src), str(out), "--write-config", str(yaml_path), "--base-config", str(base)]
    assert convert_pretrained.cli(argv) == 0
    cfg = get_se_cfg(str(yaml_path))
    assert cfg.MODEL.SE.AVG_DOWN is True and list(cfg.MODEL.SE.STEM_WIDTHS) == [24, 32]
    assert cfg.MODEL.RESNETS.DEPTH == 26
    cfg.MODEL.DEVICE = "cpu"
    detector = build_model(cfg).eval()
    checkpointer = SEDetectionCheckpointer(detector, cfg=cfg)  # also checks the stored config
    checkpointer.load(cfg.MODEL.WEIGHTS)
    assert checkpointer.last_incompatible_keys.unexpected_keys == []
    x = torch.randn(1, 3, *INPUT_HW)
    with torch.no_grad():
        feats = detector.backbone.bottom_up(x)
        refs = model.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)
    _assert_close([feats[s] for s in STAGES], refs)
    # the same weights under a config without the ResNet-D shortcuts: every shape fits
    cfg.MODEL.SE.AVG_DOWN = False
    with pytest.raises(ConvertedConfigMismatchError, match="MODEL.SE.AVG_DOWN is False"):
        SEDetectionCheckpointer(build_model(cfg), cfg=cfg).load(cfg.MODEL.WEIGHTS)


def test_cli_errors(tmp_path, capsys):
    bare = tmp_path / "bare.pth"
    torch.save({"foo.weight": torch.zeros(2)}, bare)
    assert convert_pretrained.cli([str(bare), str(tmp_path / "o.pkl")]) == 2
    assert "--source" in capsys.readouterr().err
    assert convert_pretrained.cli([str(bare), str(tmp_path / "o.pkl"), "--ema"]) == 2
    assert "EMA" in capsys.readouterr().err
    assert convert_pretrained.cli([str(tmp_path / "nope.pth"), str(tmp_path / "o.pkl")]) == 2
    assert "nope.pth" in capsys.readouterr().err
    assert not (tmp_path / "o.pkl").exists()


def test_untrusted_pickle_needs_flag(tmp_path):
    model = random_timm_model("legacy_seresnet50")
    ok = tmp_path / "namespace.pth"  # argparse.Namespace args are allowed without the flag
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, ok)
    assert convert_checkpoint(str(ok), str(tmp_path / "ok.pkl")).source == "cadene"
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": model.state_dict(), "where": pathlib.PurePosixPath("x")}, path)
    with pytest.raises(ConversionError, match="--trust-pickle"):
        convert_checkpoint(str(path), str(tmp_path / "o.pkl"))
    result = convert_checkpoint(str(path), str(tmp_path / "o.pkl"), trust_pickle=True)
    assert result.source == "cadene" and result.weights_key == "state_dict"


# --------------------------------------------------------------------------- checkpointer guards
def test_frozen_random_se_is_an_error(pretrain_files, tmp_path):
    data = read_converted(str(pretrain_files["pkl"]))
    data["model"] = {k: v for k, v in data["model"].items() if ".se." not in k}
    no_se = tmp_path / "no_se.pkl"
    with open(no_se, "wb") as f:
        pickle.dump(data, f)

    model, _ = _detector()  # FREEZE_AT 2: stem and res2 frozen
    with pytest.raises(FrozenRandomInitError) as e:
        SEDetectionCheckpointer(model).load(str(no_se))
    message = str(e.value)
    assert "backbone.bottom_up.res2.0.se.fc1.weight" in message
    assert "(12 in total)" in message  # 3 res2 blocks x fc1/fc2 x weight/bias
    assert "res3" not in message  # trainable stages may start random
    assert "tools/convert_pretrained.py" in message and "FREEZE_AT 0" in message

    model, _ = _detector(opts=["MODEL.BACKBONE.FREEZE_AT", 0])
    SEDetectionCheckpointer(model).load(str(no_se))  # nothing frozen: fine


def test_check_no_frozen_random_init():
    model, cfg = _detector(opts=["MODEL.WEIGHTS", ""])
    frozen = frozen_state_keys(model)
    assert "backbone.bottom_up.res2.2.se.fc2.bias" in frozen
    assert "backbone.bottom_up.res2.0.conv1.norm.running_var" in frozen  # FrozenBN buffer
    assert not any(k.startswith("backbone.bottom_up.res3") for k in frozen)
    with pytest.raises(FrozenRandomInitError, match="FREEZE_AT=2") as e:
        check_no_frozen_random_init(model, cfg)
    assert "backbone.bottom_up.stem.conv1.weight" in str(e.value)
    cfg.MODEL.WEIGHTS = "some.pkl"
    check_no_frozen_random_init(model, cfg)  # the checkpointer checks loaded files
    model, cfg = _detector(opts=["MODEL.WEIGHTS", "", "MODEL.BACKBONE.FREEZE_AT", 0])
    assert frozen_state_keys(model) == []
    check_no_frozen_random_init(model, cfg)


def test_contradicting_config_is_an_error(pretrain_files):
    """Weights whose stored config the detector's config contradicts: error naming each key."""
    required = read_converted(str(pretrain_files["pkl"]))["se_detectron_config"]
    # the weights need STRIDE_IN_1X1 True and STEM_CEIL_POOL True: shapes fit either way
    model, cfg = _detector(opts=["MODEL.RESNETS.STRIDE_IN_1X1", False])
    SEDetectionCheckpointer(model).load(str(pretrain_files["pkl"]))  # no cfg: no check
    with pytest.raises(ConvertedConfigMismatchError) as e:
        SEDetectionCheckpointer(model, cfg=cfg).load(str(pretrain_files["pkl"]))
    message = str(e.value)
    assert "MODEL.SE.STEM_CEIL_POOL is False but the weights need True" in message
    assert "MODEL.RESNETS.STRIDE_IN_1X1 is False but the weights need True" in message
    assert "MODEL.PIXEL_MEAN" not in message and "INPUT.FORMAT" not in message  # these agree
    assert "MODEL.RESNETS.DEPTH" not in message  # agreeing keys are not listed
    # the suggested command-line overrides make it load
    suggested = shlex.split(message.split("e.g. add: ")[1])
    model, cfg = _detector(opts=["MODEL.RESNETS.STRIDE_IN_1X1", False, *suggested])
    SEDetectionCheckpointer(model, cfg=cfg).load(str(pretrain_files["pkl"]))
    model, cfg = _detector(opts=config_opts(required))
    SEDetectionCheckpointer(model, cfg=cfg).load(str(pretrain_files["pkl"]))


def test_trunk_shape_mismatch_is_an_error(pretrain_files):
    model, _ = _detector(
        opts=["MODEL.RESNETS.NUM_GROUPS", 32, "MODEL.RESNETS.WIDTH_PER_GROUP", 4]
    )  # SE-X50 32x4d
    with pytest.raises(BackboneShapeMismatchError) as e:
        SEDetectionCheckpointer(model).load(str(pretrain_files["pkl"]))
    message = str(e.value)
    assert "res2.0.conv1.weight" in message
    assert "(64, 64, 1, 1) in the checkpoint vs (128, 64, 1, 1) in the model" in message


def test_head_mismatch_warns_backbone_mismatch_raises(tmp_path, caplog):
    source, _ = _detector(opts=["MODEL.ROI_HEADS.NUM_CLASSES", 80])
    SEDetectionCheckpointer(source, str(tmp_path)).save("coco")
    path = str(tmp_path / "coco.pth")

    target, _ = _detector(opts=["MODEL.ROI_HEADS.NUM_CLASSES", 5])
    checkpointer = SEDetectionCheckpointer(target)
    with caplog.at_level(logging.WARNING):
        checkpointer.load(path)  # Detectron2's behaviour: skip the classifier, keep the rest
    skipped = {k for k, _, _ in checkpointer.last_incompatible_keys.incorrect_shapes}
    assert skipped == {
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.cls_score.bias",
        "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.box_predictor.bbox_pred.bias",
    }

    data = torch.load(path, weights_only=True)
    data["model"]["backbone.fpn_lateral2.weight"] = torch.zeros(256, 128, 1, 1)
    bad = str(tmp_path / "bad.pth")
    torch.save(data, bad)
    with pytest.raises(BackboneShapeMismatchError, match=r"backbone\.fpn_lateral2\.weight"):
        SEDetectionCheckpointer(target).load(bad)


def test_missing_weights_file():
    model, _ = _detector(opts=["MODEL.BACKBONE.FREEZE_AT", 0])
    checkpointer = SEDetectionCheckpointer(model)
    with pytest.raises(FileNotFoundError) as e:
        checkpointer.load("pretrained/does-not-exist.pkl")
    assert "MODEL.WEIGHTS" in str(e.value) and "pretrained/does-not-exist.pkl" in str(e.value)
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS"):
        checkpointer.load("pretrained/does-not-exist.pth?matching_heuristics=True")
    assert checkpointer.load("") == {}  # "" still means "no weights"


def test_atomic_save(tmp_path, monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpointer = SEDetectionCheckpointer(model, str(tmp_path), optimizer=optimizer)
    checkpointer.save("model_0000009", iteration=9)
    checkpointer.save("model_final", iteration=19)
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000009.pth",
        "model_final.pth",
    ]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert checkpointer.has_checkpoint()
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_final.pth")
    assert checkpointer.resume_or_load("", resume=True)["iteration"] == 19

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpointer.save("model_0000029", iteration=29)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000009.pth",
        "model_final.pth",
    ]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["iteration"] == 19


def test_save_is_interrupted_cleanly_and_needs_no_fvcore_internals(tmp_path, monkeypatch):
    """An interrupt while the checkpoint is written (half a file on disk) leaves the previous
    checkpoint and marker as they were; the save writes the same data as fvcore's without
    calling fvcore's save (whose call order it does not rely on)."""
    from fvcore.common.checkpoint import Checkpointer

    model = torch.nn.Linear(2, 2)
    checkpointer = SEDetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000009", iteration=9)
    real_save = torch.save

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000019", iteration=19)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000009.pth")

    monkeypatch.setattr(Checkpointer, "save", lambda *a, **k: pytest.fail("fvcore save called"))
    checkpointer.save("model_0000029", iteration=29)
    saved = torch.load(tmp_path / "model_0000029.pth", weights_only=True)
    assert saved["iteration"] == 29 and saved["model"].keys() == model.state_dict().keys()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000029.pth"
