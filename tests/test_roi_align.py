"""The separable RoIAlign (se_detectron/layers/roi_align.py) against torchvision's kernel."""

import pytest
import torch
from detectron2.config import CfgNode
from detectron2.layers import ROIAlign
from torchvision.ops import roi_align

from se_detectron.layers import roi_align as separable
from se_detectron.layers.roi_align import (
    SeparableROIAlign,
    separable_roi_align,
    use_separable_roi_align,
)
from se_detectron.modeling.config_check import SEConfigError
from se_detectron.modeling.roi_align_choice import apply_cpu_roi_align


def _rois(num, batch, height, width, scale, seed=0, dtype=torch.float64):
    """Boxes over and beyond the image (in image coordinates), some tiny, one degenerate."""
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([width, height], dtype=dtype) / scale
    xy = torch.rand(num, 2, generator=g, dtype=dtype) * size * 1.4 - size * 0.2
    wh = torch.rand(num, 2, generator=g, dtype=dtype) * size * 0.8 - 3
    index = torch.randint(0, batch, (num, 1), generator=g).to(dtype)
    rois = torch.cat([index, xy, xy + wh], 1)
    rois[0, 1:] = 5.0  # zero-size box
    return rois


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
@pytest.mark.parametrize("size", [(32, 32), (17, 23), (1, 5)])
def test_matches_torchvision_forward_and_backward(aligned, sampling_ratio, size):
    height, width = size
    x = torch.randn(3, 4, height, width, dtype=torch.float64, requires_grad=True)
    rois = _rois(40, 3, height, width, scale=0.25)
    args = ((7, 7), 0.25, sampling_ratio, aligned)
    ref, out = roi_align(x, rois, *args), separable_roi_align(x, rois, *args)
    assert out.shape == ref.shape == (40, 4, 7, 7)
    assert ref.abs().sum() > 0
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    (grad_ref,) = torch.autograd.grad((ref * g).sum(), x)
    (grad_out,) = torch.autograd.grad((out * g).sum(), x)
    torch.testing.assert_close(grad_out, grad_ref, rtol=0, atol=1e-12)


def test_float32_non_square_output_and_chunks(monkeypatch):
    x = torch.randn(2, 8, 20, 16, requires_grad=True)
    rois = _rois(30, 2, 20, 16, scale=0.5, seed=1, dtype=torch.float32)
    args = ((14, 5), 0.5, 0, True)
    ref = roi_align(x, rois, *args)
    torch.testing.assert_close(separable_roi_align(x, rois, *args), ref, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(separable, "_MAX_CHUNK_ELEMENTS", 1)  # one RoI per product
    out = separable_roi_align(x, rois, *args)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    (grad_ref,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(x.grad, grad_ref, rtol=1e-5, atol=1e-5)


def test_no_rois_gives_empty_output_and_zero_gradient():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = separable_roi_align(x, torch.zeros(0, 5), (7, 7), 1.0, 1, True)
    assert out.shape == (0, 3, 7, 7)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_module_is_a_drop_in_detectron2_roialign():
    reference = ROIAlign((7, 7), 0.125, 0, aligned=True)
    module = SeparableROIAlign((7, 7), 0.125, 0, aligned=True)
    assert isinstance(module, ROIAlign) and repr(module).endswith(repr(reference)[8:])
    x = torch.randn(2, 6, 16, 16)
    rois = _rois(12, 2, 16, 16, scale=0.125, dtype=torch.float32)
    torch.testing.assert_close(module(x, rois), reference(x, rois), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_use_torchvisions_kernel(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the separable path must not run on CUDA tensors")

    monkeypatch.setattr(separable, "separable_roi_align", fail)
    x = torch.randn(2, 6, 16, 16, device="cuda")
    rois = _rois(12, 2, 16, 16, scale=0.125, dtype=torch.float32).cuda()
    module = SeparableROIAlign((7, 7), 0.125, 0, aligned=True)
    torch.testing.assert_close(module(x, rois), roi_align(x, rois, (7, 7), 0.125, 0, True))


def _synthetic_cfg(choice, mask=False):
    from se_detectron import get_se_cfg

    name = "mask_rcnn" if mask else "faster_rcnn"
    cfg = get_se_cfg(f"Synthetic/{name}_SE_R_18_FPN_synthetic.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.CPU_ROI_ALIGN = choice
    return cfg


@pytest.mark.parametrize("mask", [False, True])
def test_trainer_model_pools_the_same_with_either_choice(mask):
    """SETrainer.build_model swaps every box (and mask) pooler level; the losses and the
    gradients of a training step agree with torchvision's pooling."""
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    from se_detectron.engine.trainer import SETrainer

    models = []
    for choice in ("torchvision", "separable"):
        torch.manual_seed(0)
        models.append(SETrainer.build_model(_synthetic_cfg(choice, mask)))
    reference, model = models
    model.load_state_dict(reference.state_dict())
    poolers = [m for m in model.modules() if isinstance(m, SeparableROIAlign)]
    assert len(poolers) == (8 if mask else 4)  # 4 FPN levels per pooler
    assert not any(isinstance(m, SeparableROIAlign) for m in reference.modules())

    g = torch.Generator().manual_seed(0)
    inputs = []
    for _ in range(2):
        gt = Instances((128, 128))
        gt.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 50.0], [70.0, 64.0, 100.0, 120.0]]))
        gt.gt_classes = torch.tensor([1, 3])
        if mask:
            masks = torch.zeros(2, 128, 128, dtype=torch.bool)
            masks[0, 12:50, 10:60] = masks[1, 64:120, 70:100] = True
            gt.gt_masks = BitMasks(masks)
        image = torch.randint(0, 255, (3, 128, 128), generator=g).float()
        inputs.append({"image": image, "height": 128, "width": 128, "instances": gt})
    grads = []
    for m in (reference, model):
        torch.manual_seed(1)  # the RoI sampling
        with EventStorage():
            losses = m(inputs)
        sum(losses.values()).backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
        losses_seen = {k: v.item() for k, v in losses.items()}
        grads[-1]["losses"] = torch.tensor(list(losses_seen.values()))
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        torch.testing.assert_close(grads[1][key], grads[0][key], rtol=1e-3, atol=1e-5)

    reference.eval(), model.eval()
    with torch.no_grad():
        want, got = reference(inputs)[0]["instances"], model(inputs)[0]["instances"]
    assert len(got) == len(want) > 0
    torch.testing.assert_close(got.pred_boxes.tensor, want.pred_boxes.tensor, rtol=1e-4, atol=1e-3)


def test_unknown_choice_names_the_key():
    model = torch.nn.Linear(1, 1)
    with pytest.raises(SEConfigError, match=r"MODEL\.CPU_ROI_ALIGN='fast' is invalid"):
        apply_cpu_roi_align(model, _synthetic_cfg("fast"))


def test_unknown_choice_fails_detectron2s_own_build_model():
    """A typo fails when the SE backbone is built, also through Detectron2's plain build_model
    (whose trainer would otherwise ignore the key)."""
    from detectron2.modeling import build_model

    with pytest.raises(SEConfigError, match=r"MODEL\.CPU_ROI_ALIGN='Separable' is invalid"):
        build_model(_synthetic_cfg("Separable"))


def test_former_key_is_accepted_with_a_warning_naming_the_new_one(tmp_path):
    """MODEL.SE.CPU_ROI_ALIGN (the former name) in a config file and on the command line sets
    MODEL.CPU_ROI_ALIGN with one FutureWarning; Detectron2's plain merge names the new key."""
    from se_detectron.config import (
        ConfigError,
        get_config_file,
        get_se_cfg,
        merge_config_file,
        merge_config_opts,
        rename_deprecated_keys,
    )

    old = tmp_path / "old.yaml"
    old.write_text(
        '_BASE_: "{}"\nMODEL:\n  SE:\n    CPU_ROI_ALIGN: "separable"\n'.format(
            get_config_file("Base-SE-RCNN-FPN.yaml")
        )
    )
    cfg = get_se_cfg()
    with pytest.warns(FutureWarning, match=r"MODEL\.SE\.CPU_ROI_ALIGN is now MODEL\.CPU_ROI_ALIGN"):
        merge_config_file(cfg, str(old))
    assert cfg.MODEL.CPU_ROI_ALIGN == "separable" and "CPU_ROI_ALIGN" not in cfg.MODEL.SE
    assert cfg.MODEL.RESNETS.DEPTH == get_se_cfg("Base-SE-RCNN-FPN.yaml").MODEL.RESNETS.DEPTH

    cfg = get_se_cfg()
    with pytest.warns(FutureWarning, match=r"command-line overrides: config key MODEL\.SE\."):
        merge_config_opts(cfg, ["MODEL.SE.CPU_ROI_ALIGN", "separable"])
    assert cfg.MODEL.CPU_ROI_ALIGN == "separable"

    both = tmp_path / "both.yaml"
    both.write_text(
        'MODEL:\n  CPU_ROI_ALIGN: "torchvision"\n  SE:\n    CPU_ROI_ALIGN: "separable"\n'
    )
    with pytest.warns(FutureWarning), pytest.raises(ConfigError, match="disagree"):
        merge_config_file(get_se_cfg(), str(both))
    with pytest.raises(KeyError, match="renamed to MODEL.CPU_ROI_ALIGN"):
        get_se_cfg().merge_from_file(str(old))

    # a config stored in a checkpoint before the rename (pretraining checkpoints' "cfg")
    stored = CfgNode.load_cfg('MODEL:\n  SE:\n    CPU_ROI_ALIGN: "separable"\n')
    cfg = get_se_cfg()
    with pytest.warns(FutureWarning, match="checkpoint.pth: config key MODEL.SE.CPU_ROI_ALIGN"):
        cfg.merge_from_other_cfg(rename_deprecated_keys(stored, "checkpoint.pth"))
    assert cfg.MODEL.CPU_ROI_ALIGN == "separable"


def test_use_separable_roi_align_counts_and_keeps_settings():
    from detectron2.modeling.poolers import ROIPooler

    pooler = ROIPooler((14, 14), (1 / 4, 1 / 8), sampling_ratio=2, pooler_type="ROIAlignV2")
    rotated = ROIPooler((7, 7), (1 / 4,), sampling_ratio=0, pooler_type="ROIAlignRotated")
    model = torch.nn.ModuleList([pooler, rotated])
    assert use_separable_roi_align(model) == 2
    assert [type(p) for p in pooler.level_poolers] == [SeparableROIAlign] * 2
    level = pooler.level_poolers[1]
    assert (level.output_size, level.spatial_scale, level.sampling_ratio, level.aligned) == (
        (14, 14),
        1 / 8,
        2,
        True,
    )
    assert type(rotated.level_poolers[0]).__name__ == "ROIAlignRotated"
    assert use_separable_roi_align(model) == 0  # already swapped


def test_scripted_module_falls_back_to_torchvision():
    module = torch.jit.script(SeparableROIAlign((7, 7), 0.25, 1, aligned=True))
    x = torch.randn(2, 6, 16, 16)
    rois = _rois(12, 2, 16, 16, scale=0.25, dtype=torch.float32)
    torch.testing.assert_close(module(x, rois), roi_align(x, rois, (7, 7), 0.25, 1, True))
