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
from se_detectron.modeling import make_se_resnet

_base = get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
dataloader = _base.dataloader
lr_multiplier = _base.lr_multiplier
model = _base.model
optimizer = _base.optimizer
train = _base.train

# the SE trunk, trained from scratch with SyncBN (as the base's ResNet): freeze_at=0
model.backbone.bottom_up = L(make_se_resnet)(
    depth=50,
    stride_in_1x1=True,
    norm="SyncBN",
    freeze_at=0,
    out_features=["res2", "res3", "res4", "res5"],
    se_reduction=16,
    se_stages=["res2", "res3", "res4", "res5"],
)
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"
dataloader.train.mapper.image_format = "RGB"

# se_detectron's mapper (errors naming the file / mask format) and evaluator (pycocotools)
dataloader.train.mapper._target_ = SafeDatasetMapper
dataloader.test.mapper._target_ = SafeDatasetMapper
dataloader.evaluator = L(SECOCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    backend="pycocotools",
)
