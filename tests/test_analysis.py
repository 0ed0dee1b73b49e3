"""Excitation analysis: recorder, class specificity, channel importance, CLI end to end."""

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from se_detectron.analysis import (
    BlockStats,
    ExcitationRecorder,
    channel_importance,
    class_specificity,
    se_layers,
)
from se_detectron.analysis.run import dominant_class
from se_detectron.layers import SqueezeExcitation


class _Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.se = SqueezeExcitation(c, reduction=2)

    def forward(self, x):
        return self.se.scale_add(self.conv(x), x)


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), _Block(8), _Block(8)).eval()


def test_recorder_matches_direct_computation():
    model = _tiny()
    images = torch.randn(12, 3, 6, 6)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1, -1, 2, 0])
    with ExcitationRecorder(model, num_classes=3) as rec, torch.no_grad():
        for start in (0, 5):  # two batches of different sizes
            stop = 5 if start == 0 else 12
            rec.set_labels(labels[start:stop])
            model(images[start:stop])
    assert rec.blocks == ["1", "2"]
    # direct computation, without the recorder
    with torch.no_grad():
        x1 = model[0](images)
        s1 = model[1].se.excitation(model[1].conv(x1)).flatten(1).double().numpy()
        x2 = model[1](x1)
        s2 = model[2].se.excitation(model[2].conv(x2)).flatten(1).double().numpy()
    for block, s in (("1", s1), ("2", s2)):
        st = rec.stats[block]
        for k in range(3):
            np.testing.assert_allclose(st.mean(k), s[labels == k].mean(0), atol=1e-7)
            np.testing.assert_allclose(st.std(k), s[labels == k].std(0), atol=1e-7)
            # float32 GEMMs round differently for batches of 5/7 and of 12 images.
            np.testing.assert_allclose(st.maximum(k), s[labels == k].max(0), rtol=1e-6)
        np.testing.assert_allclose(st.mean(), s.mean(0), atol=1e-7)
        assert st.count.tolist() == [5, 3, 3, 1]  # the -1 label is "unlabelled"


def test_recorder_restores_the_model():
    model = _tiny()
    x = torch.randn(2, 3, 6, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(x)
    with pytest.raises(RuntimeError, match="boom"), ExcitationRecorder(model, 2) as rec:
        assert "excite" in vars(model[1].se)
        with torch.no_grad():
            assert torch.equal(model(x), expected)  # recording does not change the outputs
        raise RuntimeError("boom")
    assert rec.stats["1"].count[-1] == 2  # unlabelled images
    for layer in se_layers(model).values():
        assert "excite" not in vars(layer)
        assert layer.excitation.__func__ is SqueezeExcitation.excitation
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="no SqueezeExcitation"):
        ExcitationRecorder(nn.Linear(2, 2), 2)


def test_class_specificity():
    profile = np.random.default_rng(0).random(16)
    same = class_specificity(np.stack([profile] * 3), np.full((3, 16), 0.1))
    assert same == {"distance": 0.0, "normalized": 0.0}
    means = np.stack([np.zeros(4), np.ones(4)])
    spec = class_specificity(means, np.full((2, 4), 0.5))
    assert spec["distance"] == pytest.approx(1.0) and spec["normalized"] == pytest.approx(2.0)
    assert np.isnan(class_specificity(means[:1])["distance"])


def test_channel_importance():
    st = BlockStats.empty(num_classes=2, channels=4)
    values = np.array([[0.01, 0.5, 0.02, 0.9], [0.03, 0.6, 0.2, 0.8], [0.02, 0.4, 0.01, 0.7]])
    st.update(values, np.array([0, 1, 1]))
    report = channel_importance({"res2.0": st}, mean_threshold=0.05, max_threshold=0.1)["res2.0"]
    # channel 0: mean 0.02, max 0.03 -> near zero; channel 2: mean 0.077 but max 0.2 -> kept
    assert report["near_zero"] == [0] and report["num_near_zero"] == 1
    assert report["fraction"] == 0.25 and report["max"] == [0.03]
    loose = channel_importance({"b": st}, mean_threshold=0.1, max_threshold=0.25)["b"]
    assert loose["near_zero"] == [0, 2]


def test_dominant_class():
    from detectron2.structures import BoxMode

    anns = [
        {"bbox": [0, 0, 10, 10], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1},
        {"bbox": [0, 0, 6, 6], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2},
        {"bbox": [0, 0, 6, 6], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2},
        {"bbox": [0, 0, 6, 6], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2},
    ]
    assert dominant_class(anns) == 2  # 108 > 100 pixels
    assert dominant_class(anns[:2]) == 1
    assert dominant_class([]) == -1


@pytest.mark.slow
def test_cli_on_a_classifier_checkpoint(tmp_path):
    from PIL import Image

    from se_detectron import get_se_cfg
    from se_detectron.analysis.cli import get_parser, main
    from se_detectron.modeling import build_se_resnet_classifier
    from se_detectron.modeling.archs import apply_arch

    cfg = get_se_cfg(None)
    apply_arch(cfg, "se_resnet50")
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 16
    torch.manual_seed(0)
    model = build_se_resnet_classifier(cfg, 2)
    ckpt = {"model": model.state_dict(), "cfg": cfg.dump(), "arch": "x", "classes": ["a", "b"]}
    torch.save(ckpt, tmp_path / "best.pth")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        os.makedirs(tmp_path / "data" / "val" / cls)
        for i in range(3):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / "val" / cls / f"{i}.png")
    out = tmp_path / "out"
    args = get_parser().parse_args(
        ["--checkpoint", str(tmp_path / "best.pth"), "--data-path", str(tmp_path / "data")]
        + ["--output", str(out), "--batch-size", "4", "--max-channels", "16"]
        + ["--val-resize-size", "32", "--val-crop-size", "32"]
    )
    result = main(args)
    assert len(result["summary"]) == 16 and result["summary"][0]["block"] == "res2.0"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_per_class"] == [3, 3]
    importance = json.loads((out / "channel_importance.json").read_text())
    assert importance["mean_threshold"] == 0.05 and "res5.2" in importance
    for name in ("class_profiles.png", "spread.png", "class_specificity.png"):
        assert (out / name).stat().st_size > 10_000
    stats = np.load(out / "excitation_stats.npz")
    assert stats["res2.0/count"].tolist() == [3, 3, 0]


def test_recorder_sees_the_fused_training_path():
    """With autograd, scale_add takes the fused path; its excitations are recorded too."""
    model = _tiny().train()
    with ExcitationRecorder(model, num_classes=2) as rec:
        rec.set_labels([0, 1, 1])
        out = model(torch.randn(3, 3, 6, 6))
        assert type(out.grad_fn).__name__ == "_SqueezeScaleAddBackward"
        out.sum().backward()
    assert rec.stats["2"].count.tolist() == [1, 2, 0]
