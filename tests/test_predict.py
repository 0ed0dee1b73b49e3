"""se-predict (tools/predict.py): pictures and detections.json, with and without masks."""

import json
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances
from PIL import Image
from pycocotools import mask as mask_util

from se_detectron import get_se_cfg
from se_detectron.engine import predict

MASK = np.zeros((48, 64), dtype=bool)
MASK[10:30, 20:44] = True


class FakePredictor:
    """Stands in for DefaultPredictor: one 'circle' detection, with a mask if ``masks``."""

    masks = False

    def __init__(self, cfg):
        pass

    def __call__(self, image):
        instances = Instances(image.shape[:2])
        instances.pred_boxes = Boxes(torch.tensor([[18.0, 8.0, 46.0, 32.0], [0.0, 0.0, 4.0, 4.0]]))
        instances.scores = torch.tensor([0.9, 0.1])
        instances.pred_classes = torch.tensor([0, 1])
        if self.masks:
            instances.pred_masks = torch.from_numpy(np.stack([MASK, MASK]))
        return {"instances": instances}


@pytest.mark.parametrize("masks", [False, True])
def test_pictures_and_json(tmp_path, monkeypatch, masks):
    monkeypatch.setattr(predict, "DefaultPredictor", FakePredictor)
    monkeypatch.setattr(FakePredictor, "masks", masks)
    image = tmp_path / "in.png"
    Image.fromarray(np.full((48, 64, 3), 128, dtype=np.uint8)).save(image)
    cfg = get_se_cfg("Synthetic/faster_rcnn_SE_R_18_FPN_synthetic.yaml")
    out = tmp_path / "out"
    name = f"se_predict_test_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(thing_classes=["circle", "star"])
    try:
        results = predict.predict_images(cfg, [str(image)], str(out), 0.5, metadata_name=name)
    finally:
        MetadataCatalog.pop(name)
    written = json.loads((out / "detections.json").read_text())
    assert written == results and len(written[0]["detections"]) == 1  # 0.1 is below 0.5
    det = written[0]["detections"][0]
    assert det["bbox"] == [18.0, 8.0, 46.0, 32.0] and det["category"] == "circle"
    assert ("segmentation" in det) == masks
    picture = np.asarray(Image.open(out / "in.png").convert("RGB")).astype(int)
    scale = picture.shape[1] // 64  # the Visualizer draws at >= 512 px wide
    inside = picture[15 * scale : 25 * scale, 25 * scale : 40 * scale]  # inside box and mask
    if masks:
        assert (mask_util.decode(det["segmentation"]).astype(bool) == MASK).all()
        assert np.abs(inside - 128).max() > 20  # the mask is painted over the object
    else:
        assert np.abs(inside - 128).max() <= 2  # only the box outline is drawn
