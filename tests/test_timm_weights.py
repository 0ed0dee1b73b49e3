"""timm weights in one command: SE-ResNet-18/34 (timm and Cadene layouts), ECA-ResNet-D, and
``se-convert-pretrained --timm NAME OUT.pkl`` from a Hugging Face / torch hub cache.

Everything runs offline (``HF_HUB_OFFLINE=1``): each test lays out the hub cache itself from a
randomly initialised timm model, as the hub stores it (``models--timm--NAME/refs/main`` and
``snapshots/<commit>/model.safetensors`` + ``config.json``; URL-only ``legacy_*`` weights in
``$TORCH_HOME/hub/checkpoints``), and the converted trunk computes timm's features.
"""

import json
import os
import pathlib
import sys

import pytest
import torch
from detectron2.layers import ShapeSpec

from se_detectron import get_se_cfg
from se_detectron.config import config_opts
from se_detectron.convert import ConversionError, convert_state_dict, read_converted
from se_detectron.modeling import build_se_resnet

timm = pytest.importorskip("timm")
pytest.importorskip("huggingface_hub")
from random_models import random_timm_model  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import convert_pretrained  # noqa: E402

STAGES = ["res2", "res3", "res4", "res5"]


def _trunk(config) -> torch.nn.Module:
    cfg = get_se_cfg()
    cfg.merge_from_list(config_opts(config))
    cfg.MODEL.RESNETS.OUT_FEATURES = STAGES
    return build_se_resnet(cfg, ShapeSpec(channels=3)).eval()


def _assert_same_features(trunk, model, hw=(64, 64)):
    x = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        refs = model.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)
        outs = trunk(x)
    for stage, ref in zip(STAGES, refs):
        out = outs[stage]
        assert out.shape == ref.shape, stage
        err = (out - ref).abs().max().item() / ref.abs().max().item()
        assert err < 1e-4, f"{stage}: relative error {err:.2e}"


@pytest.mark.parametrize(
    "name, source, divisor, relu_before_se",
    [
        # timm's resnet.py rounds the SE widths to multiples of 8: 64 / 16 -> 8, not 4
        ("seresnet18", "timm", 8, False),
        # the Caffe / Cadene basic block: relu(bn2(conv2(x))) is recalibrated
        ("legacy_seresnet18", "cadene", 1, True),
    ],
)
def test_se_resnet_18_34_convert_exactly(name, source, divisor, relu_before_se):
    model = random_timm_model(name)
    result = convert_state_dict(model.state_dict())
    cfg = result.config
    assert result.source == source
    assert cfg["MODEL.RESNETS.DEPTH"] == int(name[-2:])
    assert cfg["MODEL.SE.REDUCTION"] == 16
    assert cfg["MODEL.SE.HIDDEN_DIVISOR"] == divisor
    assert cfg["MODEL.SE.RELU_BEFORE_SE"] is relu_before_se
    trunk = _trunk(cfg)
    trunk.load_state_dict(result.state_dict, strict=True)
    _assert_same_features(trunk, model)
    # the option is not a no-op: without it the features differ
    other = {"MODEL.SE.RELU_BEFORE_SE": not relu_before_se} if source == "cadene" else {}
    if other:
        wrong = _trunk({**cfg, **other})
        wrong.load_state_dict(result.state_dict)
        with pytest.raises(AssertionError, match="relative error"):
            _assert_same_features(wrong, model)


def test_eca_resnet_d_converts_exactly():
    """ecaresnet26t: the ECA trunks' blocks, tiered deep stem and average-pooled shortcuts (the
    other ECA-ResNet-D differ in depth and stem widths, checked against timm's parameter shapes
    in test_resnet_d.py)."""
    model = random_timm_model("ecaresnet26t")
    result = convert_state_dict(model.state_dict())
    cfg = result.config
    assert cfg["MODEL.SE.EXCITATION"] == "eca" and cfg["MODEL.SE.AVG_DOWN"] is True
    assert cfg["MODEL.SE.STEM_WIDTHS"] == [24, 32]
    assert result.arch_name == "eca_resnet26t"
    assert "ECA-ResNet-26-D" in result.arch.describe()
    trunk = _trunk(cfg)
    trunk.load_state_dict(result.state_dict, strict=True)
    assert trunk.res5[0].se.conv.kernel_size == (7,)  # 2048 channels: k = 7
    _assert_same_features(trunk, model)


def _hub_cache(root: pathlib.Path, hub_id: str, model: torch.nn.Module, architecture: str):
    """Lay out ``hub_id`` in a Hugging Face hub cache under ``root`` as the hub stores it."""
    from safetensors.torch import save_file

    repo = root / ("models--" + hub_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps({"architecture": architecture}))


@pytest.fixture
def offline_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.slow
def test_convert_by_timm_name_from_the_hub_cache(offline_caches, capsys):
    tmp = offline_caches
    out = tmp / "out" / "eca26t.pkl"
    out.parent.mkdir()
    # not in the cache: one error line naming the model and the cache folder
    assert convert_pretrained.cli(["--timm", "ecaresnet26t", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --timm ecaresnet26t:") and "\n" not in err
    assert "timm/ecaresnet26t.ra2_in1k" in err and str(tmp / "hf" / "hub") in err

    model = random_timm_model("ecaresnet26t")
    _hub_cache(tmp / "hf" / "hub", "timm/ecaresnet26t.ra2_in1k", model, "ecaresnet26t")
    assert convert_pretrained.cli(["--timm", "ecaresnet26t", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "architecture   : eca_resnet26t: ECA-ResNet-26-D" in printed
    converted = read_converted(str(out))
    config = converted["se_detectron_config"]
    assert config["MODEL.SE.EXCITATION"] == "eca"
    # the config written beside the weights builds the detector those weights need
    cfg = get_se_cfg(str(out.with_suffix(".yaml")))
    assert str(out) == cfg.MODEL.WEIGHTS and cfg.MODEL.SE.EXCITATION == "eca"
    trunk = _trunk(config)
    trunk.load_state_dict({k: torch.as_tensor(v) for k, v in converted["model"].items()})
    _assert_same_features(trunk, model)


@pytest.mark.slow
def test_convert_legacy_weights_by_name_from_the_torch_hub_cache(offline_caches, capsys):
    tmp = offline_caches
    out = tmp / "legacy18.pkl"
    assert convert_pretrained.cli(["--timm", "legacy_seresnet18", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --timm legacy_seresnet18:") and "\n" not in err
    assert str(tmp / "torch" / "hub" / "checkpoints") in err

    model = random_timm_model("legacy_seresnet18")
    folder = tmp / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    url = timm.models.get_pretrained_cfg("legacy_seresnet18").url
    torch.save(model.state_dict(), folder / os.path.basename(url))
    assert convert_pretrained.cli(["--timm", "legacy_seresnet18", str(out)]) == 0
    config = read_converted(str(out))["se_detectron_config"]
    assert config["MODEL.SE.RELU_BEFORE_SE"] is True and config["MODEL.SE.STEM_CEIL_POOL"]


def test_timm_name_errors(offline_caches, capsys):
    out = str(offline_caches / "x.pkl")
    cases = [
        (["--timm", "not_a_model", out], "error: --timm not_a_model: timm"),
        # timm's resnet.py SE-ResNet-18/34 have no published weights
        (["--timm", "seresnet18", out], "error: --timm seresnet18: timm has no pretrained"),
        (["--timm", "ecaresnet26t", out, out], "error: --timm ecaresnet26t takes one path"),
        ([out], "error: give the output .pkl"),
    ]
    for argv, message in cases:
        assert convert_pretrained.cli(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and "\n" not in err, err


def test_unreadable_se_widths_still_refused():
    """Widths no reduction explains, even rounded, stay one error naming the widths."""
    model = random_timm_model("seresnet18")
    sd = dict(model.state_dict())
    sd["layer1.0.se.fc1.weight"] = torch.zeros(5, 64, 1, 1)
    sd["layer1.0.se.fc1.bias"] = torch.zeros(5)
    sd["layer1.0.se.fc2.weight"] = torch.zeros(64, 5, 1, 1)
    with pytest.raises(ConversionError, match="no single MODEL.SE.REDUCTION explains"):
        convert_state_dict(sd)
