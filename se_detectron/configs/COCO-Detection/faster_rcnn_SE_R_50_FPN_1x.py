# LazyConfig of COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml: Faster R-CNN, SE-ResNet-50-FPN,
# 1x schedule (90k iterations at 16 images), in the style of Detectron2's
# COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py. train.init_checkpoint is the ImageNet trunk
# converted by tools/convert_pretrained.py (see docs/tutorials/weights.md); nothing is downloaded.
from detectron2.model_zoo import get_config

from ..common.data.coco_rgb import dataloader
from ..common.models.mask_rcnn_se_fpn import model

optimizer = get_config("common/optim.py").SGD
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x
train = get_config("common/train.py").train

# box detection only: no mask head, no masks loaded
for key in ("mask_in_features", "mask_pooler", "mask_head"):
    model.roi_heads.pop(key)
dataloader.train.mapper.use_instance_mask = False

model.backbone.bottom_up.freeze_at = 2
optimizer.lr = 0.02
train.init_checkpoint = "pretrained/SE-R-50.pkl"
