"""Every shipped config loads, builds its model, and runs a training step and an inference."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances, Keypoints
from detectron2.utils.events import EventStorage

from se_detectron import add_se_config
from se_detectron.model_zoo import CONFIG_ROOT, get_se_cfg

CONFIG_FILES = sorted(str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.rglob("*.yaml"))


# The training datasets of the COCO configs, per model family (Detectron2's names).
COCO_TRAIN_SETS = {
    "keypoint": ("keypoints_coco_2017_train",),
    "panoptic": ("coco_2017_train_panoptic_separated",),
}


def _tiny_batch(num_classes, masks=False, keypoints=0, sem_seg_classes=0):
    torch.manual_seed(0)
    batch = []
    boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 90.0, 60.0]])
    for _ in range(2):
        inst = Instances((64, 96))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.tensor([0, num_classes - 1])
        if keypoints:  # visible keypoints spread inside each box
            xy = boxes[:, None, :2] + torch.rand(2, keypoints, 2) * (
                boxes[:, None, 2:] - boxes[:, None, :2]
            )
            inst.gt_keypoints = Keypoints(torch.cat([xy, torch.full((2, keypoints, 1), 2.0)], 2))
        if masks:  # each object fills the middle of its box
            bitmasks = torch.zeros(2, 64, 96, dtype=torch.bool)
            for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                bitmasks[k, y0 + 4 : y1 - 4, x0 + 4 : x1 - 4] = True
            inst.gt_masks = BitMasks(bitmasks)
        item = {"image": torch.rand(3, 64, 96) * 255, "instances": inst}
        if sem_seg_classes:
            item["sem_seg"] = torch.randint(0, sem_seg_classes, (64, 96))
        batch.append(item)
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
        "Misc/faster_rcnn_SE_R_50_FPN_1x_dconv_c3-c5.yaml",
        "Misc/mask_rcnn_SE_R_50_FPN_1x_dconv_c3-c5.yaml",
        "Misc/faster_rcnn_SE_X_101_32x4d_FPN_3x_dconv_c3-c5.yaml",
        "Misc/mask_rcnn_SE_X_101_32x4d_FPN_3x_dconv_c3-c5.yaml",
        "COCO-Keypoints/keypoint_rcnn_SE_R_50_FPN_1x.yaml",
        "COCO-Keypoints/keypoint_rcnn_SE_R_50_FPN_3x.yaml",
        "COCO-PanopticSegmentation/panoptic_fpn_SE_R_50_1x.yaml",
        "COCO-PanopticSegmentation/panoptic_fpn_SE_R_50_3x.yaml",
        "COCO-Detection/faster_rcnn_ECA_R_50_D_FPN_1x.yaml",
        "COCO-Detection/retinanet_ECA_R_50_D_FPN_1x.yaml",
        "COCO-InstanceSegmentation/mask_rcnn_ECA_R_50_D_FPN_1x.yaml",
        "Misc/cascade_mask_rcnn_ECA_R_50_D_FPN_1x.yaml",
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


def _same_model_groups():
    """Configs grouped by their model (``MODEL`` without ``WEIGHTS``): a 1x and a 3x schedule
    build the same network, so one training step and inference cover both."""
    groups = {}
    for config_file in CONFIG_FILES:
        model = get_se_cfg(config_file).MODEL.clone()
        model.WEIGHTS = ""
        groups.setdefault(model.dump(), []).append(config_file)
    return list(groups.values())


MODEL_GROUPS = _same_model_groups()


def test_every_config_is_in_one_model_group():
    assert sorted(f for group in MODEL_GROUPS for f in group) == CONFIG_FILES
    # the schedule variants share a model, the other configs do not
    assert [
        "COCO-Keypoints/keypoint_rcnn_SE_R_50_FPN_1x.yaml",
        "COCO-Keypoints/keypoint_rcnn_SE_R_50_FPN_3x.yaml",
    ] in MODEL_GROUPS


def _check_datasets(config_file, cfg):
    family = next((f for f in COCO_TRAIN_SETS if f in config_file), None)
    if config_file.startswith(("COCO-", "Misc/")):
        assert COCO_TRAIN_SETS.get(family, ("coco_2017_train",)) == cfg.DATASETS.TRAIN
        num_classes = 1 if family == "keypoint" else 80  # people
        assert num_classes == cfg.MODEL.ROI_HEADS.NUM_CLASSES
        assert cfg.MODEL.RETINANET.NUM_CLASSES == 80


@pytest.mark.slow
@pytest.mark.parametrize("config_files", MODEL_GROUPS, ids=["+".join(g) for g in MODEL_GROUPS])
def test_config_builds_trains_and_infers(config_files):
    for config_file in config_files:
        _check_datasets(config_file, get_se_cfg(config_file))
    cfg = get_se_cfg(config_files[0])
    cfg.MODEL.DEVICE = "cpu"
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
    panoptic = cfg.MODEL.META_ARCHITECTURE == "PanopticFPN"
    batch = _tiny_batch(
        num_classes,
        masks=cfg.MODEL.MASK_ON,
        keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS if cfg.MODEL.KEYPOINT_ON else 0,
        sem_seg_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES if panoptic else 0,
    )
    model.train()
    with EventStorage(0):
        losses = model(batch)
    assert ("loss_mask" in losses) == cfg.MODEL.MASK_ON
    assert ("loss_keypoint" in losses) == cfg.MODEL.KEYPOINT_ON
    assert ("loss_sem_seg" in losses) == panoptic
    if any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE):
        assert type(model.backbone.bottom_up.res3[0].conv2).__name__ == "DeformConv"
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
    assert out[0]["instances"].has("pred_keypoints") == cfg.MODEL.KEYPOINT_ON
    if panoptic:
        assert out[0]["sem_seg"].shape[-2:] == (64, 96) and "panoptic_seg" in out[0]
