# Detectron2's common/data/coco.py for SE trunks: RGB images (the trunks' pretraining format),
# se_detectron's SafeDatasetMapper (image-read and mask-format errors that name the file and key)
# and SECOCOEvaluator (pycocotools' COCOeval; Detectron2's C++ COCOeval does not load on
# Python 3.11). Dataset names, augmentations and batch size are Detectron2's.
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config

from se_detectron.data import SafeDatasetMapper
from se_detectron.evaluation import SECOCOEvaluator

dataloader = get_config("common/data/coco.py").dataloader

dataloader.train.mapper._target_ = SafeDatasetMapper
dataloader.train.mapper.image_format = "RGB"
dataloader.test.mapper._target_ = SafeDatasetMapper
dataloader.evaluator = L(SECOCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    backend="pycocotools",
)
