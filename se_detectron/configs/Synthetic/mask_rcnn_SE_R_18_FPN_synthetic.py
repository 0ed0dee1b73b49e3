# Mask R-CNN with an SE-ResNet-18-FPN trained from scratch on the bundled synthetic shapes dataset
# (se_synthetic_train / se_synthetic_val: 256x256 images, 5 classes, exact instance masks stored as
# COCO RLE, hence instance_mask_format="bitmask"); generated on first use, nothing is downloaded.
# Sized for a 2-core CPU: 128x128 inputs, a 128-channel FPN, light heads, AdamW with a cosine
# schedule. The LazyConfig counterpart of Synthetic/faster_rcnn_SE_R_18_FPN_synthetic.yaml, with
# masks. Train with:  python -m se_detectron lazy_train_net --config-file <this file>
import detectron2.data.transforms as T
import torch
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params
from fvcore.common.param_scheduler import CosineParamScheduler

from ..common.data.coco_rgb import dataloader
from ..common.models.mask_rcnn_se_fpn import model

train = get_config("common/train.py").train

# ---- model: SE-ResNet-18 (basic blocks, 64 channels out of res2) trained from scratch
model.backbone.bottom_up.update(depth=18, norm="BN", freeze_at=0)
model.backbone.out_channels = 128
model.proposal_generator.head.in_channels = 128
model.proposal_generator.anchor_generator.sizes = [[8], [16], [32], [64], [128]]
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (256, 300)
model.roi_heads.num_classes = 5
model.roi_heads.batch_size_per_image = 64
model.roi_heads.box_pooler.sampling_ratio = 1
model.roi_heads.box_head.input_shape = ShapeSpec(channels=128, height=7, width=7)
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=256)
model.roi_heads.box_predictor.test_topk_per_image = 50
model.roi_heads.mask_pooler.sampling_ratio = 1
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=128, width=14, height=14)
model.roi_heads.mask_head.conv_dims = [128, 128]

# ---- data: the synthetic dataset at 128x128, RLE masks read as bitmasks
image_size = 128
dataloader.train.dataset.names = "se_synthetic_train"
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.instance_mask_format = "bitmask"
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0  # 2 cores: loading in the training process beats a worker
dataloader.test.dataset.names = "se_synthetic_val"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size),
]
dataloader.test.num_workers = 0
dataloader.evaluator.tasks = ("bbox", "segm")

# ---- schedule: AdamW, 100 warm-up iterations, cosine decay
optimizer = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=1e-3,
    betas=(0.9, 0.999),
    weight_decay=0.05,
)
train.max_iter = 2200
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.0),
    warmup_length=100 / train.max_iter,
    warmup_method="linear",
    warmup_factor=0.001,
)
train.init_checkpoint = ""
train.output_dir = "./output/mask_rcnn_SE_R_18_FPN_synthetic"
train.checkpointer.period = 500
train.eval_period = 0  # evaluated once, at the end
train.log_period = 20
train.seed = 42
train.device = "cuda"  # se-lazy-train-net falls back to the CPU without CUDA
