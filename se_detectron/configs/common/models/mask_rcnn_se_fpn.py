# Detectron2's common/models/mask_rcnn_fpn.py with the trunk swapped for an SE-ResNet-50
# (se_detectron.modeling.make_se_resnet), as configs/Base-SE-RCNN-FPN.yaml does for yacs. Everything
# else (FPN, RPN, box and mask heads) is Detectron2's. SE trunks are pretrained on RGB images
# normalized with the ImageNet mean/std (as timm and the released SENet models), so the model reads
# RGB; set the data loaders' image_format to "RGB" too (see common/data/coco_rgb.py).
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from se_detectron.modeling import make_se_resnet

model = get_config("common/models/mask_rcnn_fpn.py").model

model.backbone.bottom_up = L(make_se_resnet)(
    depth=50,
    stride_in_1x1=True,
    norm="FrozenBN",
    freeze_at=2,
    out_features=["res2", "res3", "res4", "res5"],
    se_reduction=16,
    se_stages=["res2", "res3", "res4", "res5"],
)
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"
