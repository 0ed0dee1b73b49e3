# Detectron2's new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py with an SE-ResNet-50 trunk: Mask
# R-CNN trained from scratch with large-scale jitter (1024x1024 crops of images rescaled 0.1-2.0x),
# SyncBN, a 4conv1fc box head, 2 RPN convs, batch 64, 100 epochs (184375 iterations). It imports
# that very file and changes only the trunk (and, for the SE trunk's pretraining format, RGB
# input), so every other setting stays Detectron2's. On a machine without CUDA, se-lazy-train-net
# trains it in float32 (train.amp.enabled is for CUDA) and without fp16 gradient compression.
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from se_detectron.data import SafeDatasetMapper
from se_detectron.evaluation import SECOCOEvaluator

from ..common.models.mask_rcnn_se_fpn import model as _se_fpn

_base = get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
dataloader = _base.dataloader
lr_multiplier = _base.lr_multiplier
model = _base.model
optimizer = _base.optimizer
train = _base.train

# the SE trunk of common/models/mask_rcnn_se_fpn.py (and its RGB input), trained from scratch
# with SyncBN as the base's ResNet: freeze_at=0
model.backbone.bottom_up = _se_fpn.backbone.bottom_up
model.backbone.bottom_up.update(norm="SyncBN", freeze_at=0)
model.update({k: _se_fpn[k] for k in ("pixel_mean", "pixel_std", "input_format")})
dataloader.train.mapper.image_format = "RGB"

# se_detectron's mapper (errors naming the file / mask format) and evaluator (pycocotools)
dataloader.train.mapper._target_ = SafeDatasetMapper
dataloader.test.mapper._target_ = SafeDatasetMapper
dataloader.evaluator = L(SECOCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    backend="pycocotools",
)
