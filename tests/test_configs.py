"""Every shipped config loads, builds its model, and runs a training step and an inference."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from se_detectron import add_se_config
from se_detectron.model_zoo import CONFIG_ROOT, get_se_cfg

CONFIG_FILES = sorted(str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.rglob("*.yaml"))


def _tiny_batch(num_classes, masks=False):
    torch.manual_seed(0)
    batch = []
    boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 90.0, 60.0]])
    for _ in range(2):
        inst = Instances((64, 96))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.tensor([0, num_classes - 1])
        if masks:  # each object fills the middle of its box
            bitmasks = torch.zeros(2, 64, 96, dtype=torch.bool)
            for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                bitmasks[k, y0 + 4 : y1 - 4, x0 + 4 : x1 - 4] = True
            inst.gt_masks = BitMasks(bitmasks)
        batch.append({"image": torch.rand(3, 64, 96) * 255, "instances": inst})
    return batch


def test_configs_found():
    names = set(CONFIG_FILES)
    for required in [
        "Base-SE-RCNN-FPN.yaml",
        "COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml",
        "COCO-Detection/faster_rcnn_SE_R_50_C4_1x.yaml",
        "COCO-Detection/faster_rcnn_SE_R_50_FPN_3x.yaml",
        "COCO-Detection/faster_rcnn_SE_R_101_FPN_3x.yaml",
        "COCO-Detection/faster_rcnn_SE_X_101_32x4d_FPN_3x.yaml",
        "COCO-Detection/retinanet_SE_R_50_FPN_1x.yaml",
        "COCO-InstanceSegmentation/mask_rcnn_SE_R_50_FPN_1x.yaml",
        "COCO-InstanceSegmentation/mask_rcnn_SE_R_50_FPN_3x.yaml",
        "COCO-InstanceSegmentation/mask_rcnn_SE_R_101_FPN_3x.yaml",
        "COCO-InstanceSegmentation/mask_rcnn_SE_X_101_32x4d_FPN_3x.yaml",
        "COCO-InstanceSegmentation/mask_rcnn_SE_R_50_C4_1x.yaml",
        "Misc/cascade_mask_rcnn_SE_R_50_FPN_1x.yaml",
        "Misc/cascade_mask_rcnn_SE_R_50_FPN_3x.yaml",
        "Synthetic/mask_rcnn_SE_R_18_FPN_synthetic.yaml",
        "quick_schedules/faster_rcnn_SE_R_50_FPN_instant_test.yaml",
        "quick_schedules/mask_rcnn_SE_R_50_FPN_instant_test.yaml",
    ]:
        assert required in names


def test_documented_config_path_loads_every_config():
    """Detectron2's path: get_cfg(); add_se_config(cfg); cfg.merge_from_file(f) == get_se_cfg(f)."""
    for config_file in CONFIG_FILES:
        cfg = get_cfg()
        add_se_config(cfg)
        cfg.merge_from_file(str(CONFIG_ROOT / config_file))
        assert cfg == get_se_cfg(config_file), config_file


@pytest.mark.slow
@pytest.mark.parametrize("config_file", CONFIG_FILES)
def test_config_builds_trains_and_infers(config_file):
    cfg = get_se_cfg(config_file)
    cfg.MODEL.DEVICE = "cpu"
    if config_file.startswith(("COCO-", "Misc/")):
        assert cfg.DATASETS.TRAIN == ("coco_2017_train",)
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80 and cfg.MODEL.RETINANET.NUM_CLASSES == 80
    # Small proposal counts keep the step fast; the architecture is the config's.
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    model = build_model(cfg)
    if cfg.MODEL.ROI_HEADS.NAME == "SERes5ROIHeads":  # C4: res5 runs per RoI in the box head
        assert "SE" in type(model.roi_heads.res5[0]).__name__
        assert "SE" in type(model.backbone.res4[0]).__name__ and "res5" not in model.backbone.stages
    else:
        assert "SE" in type(model.backbone.bottom_up.res5[0]).__name__
    num_classes = (
        cfg.MODEL.RETINANET.NUM_CLASSES
        if cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
        else cfg.MODEL.ROI_HEADS.NUM_CLASSES
    )
    batch = _tiny_batch(num_classes, masks=cfg.MODEL.MASK_ON)
    model.train()
    with EventStorage(0):
        losses = model(batch)
    assert ("loss_mask" in losses) == cfg.MODEL.MASK_ON
    if cfg.MODEL.ROI_HEADS.NAME == "CascadeROIHeads":
        assert {f"loss_box_reg_stage{k}" for k in range(3)} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.grad is not None for p in trainable) > 0.9 * len(trainable)
    model.eval()
    with torch.no_grad():
        out = model([{"image": b["image"], "height": 64, "width": 96} for b in batch])
    assert len(out) == 2 and out[0]["instances"].image_size == (64, 96)
    assert out[0]["instances"].has("pred_masks") == cfg.MODEL.MASK_ON
