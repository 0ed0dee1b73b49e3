"""Run an SE classifier or detector backbone over a data set under an :class:`ExcitationRecorder`.

* classifier: a checkpoint of ``tools/pretrain_imagenet.py`` (its trunk config and class names
  are in the file) over an ImageNet-layout folder (``root/<class>/*.png``), labels = folder
  classes;
* detector: a detection config and ``MODEL.WEIGHTS`` over a registered detection data set, the
  backbone only (no heads), label = the dominant ground-truth class (largest total box area).
"""

import logging
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..config import get_se_cfg, rename_deprecated_keys
from ..modeling import build_se_resnet_classifier
from ..pretrain.train_state import load_checkpoint
from .recorder import ExcitationRecorder

__all__ = [
    "dominant_class",
    "iter_detection_batches",
    "iter_folder_batches",
    "load_classifier",
    "record_classifier",
    "record_detector",
]

logger = logging.getLogger(__name__)


def load_classifier(path: str) -> Tuple[nn.Module, List[str], dict]:
    """Build the classifier of a pretraining checkpoint and load its weights.

    Returns:
        (model in eval mode, class names, checkpoint metadata without the weights).
    """
    from detectron2.config import CfgNode

    ckpt = load_checkpoint(path)
    if "cfg" not in ckpt or "classes" not in ckpt:
        raise ValueError(f"{path} has no 'cfg'/'classes': not a tools/pretrain_imagenet.py file")
    cfg = get_se_cfg(None)
    # a checkpoint written before a config key was renamed keeps its old name
    cfg.merge_from_other_cfg(rename_deprecated_keys(CfgNode.load_cfg(ckpt["cfg"]), str(path)))
    classes = list(ckpt["classes"])
    model = build_se_resnet_classifier(cfg, len(classes))
    model.load_state_dict(ckpt["model"])
    meta = {k: v for k, v in ckpt.items() if k in ("arch", "epoch", "best_acc1")}
    return model.eval(), classes, meta


def iter_folder_batches(
    root: str, transform, batch_size: int = 64, max_images: Optional[int] = None
) -> Tuple[List[str], Iterator[Tuple[torch.Tensor, torch.Tensor]]]:
    """(class names, iterator over (images, labels)) of an ImageNet-layout folder."""
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(root, transform=transform)
    if max_images is not None and max_images < len(dataset):
        # an evenly spaced subset keeps every class represented
        idx = np.linspace(0, len(dataset) - 1, max_images).round().astype(int).tolist()
        dataset = torch.utils.data.Subset(dataset, idx)
        classes = dataset.dataset.classes
    else:
        classes = dataset.classes
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    return classes, iter(loader)


def record_classifier(
    model: nn.Module, classes: Sequence[str], batches, max_batches: Optional[int] = None
) -> Tuple[ExcitationRecorder, float]:
    """Record the excitations of ``model`` over ``batches``; returns (recorder, top-1 accuracy)."""
    correct = total = 0
    with ExcitationRecorder(model, len(classes)) as rec, torch.no_grad():
        for i, (images, labels) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            rec.set_labels(labels)
            logits = model(images)["linear"]
            correct += int((logits.argmax(1) == labels).sum())
            total += int(labels.numel())
    return rec, correct / max(total, 1)


def dominant_class(annotations: Sequence[dict]) -> int:
    """The class with the largest total box area in Detectron2 annotations (-1 if none)."""
    from detectron2.structures import BoxMode

    area = {}
    for ann in annotations:
        x0, y0, x1, y1 = BoxMode.convert(ann["bbox"], ann["bbox_mode"], BoxMode.XYXY_ABS)
        area[ann["category_id"]] = area.get(ann["category_id"], 0.0) + (x1 - x0) * (y1 - y0)
    return max(area, key=area.get) if area else -1


def iter_detection_batches(
    cfg, dataset: str, max_images: Optional[int] = None
) -> Tuple[List[str], Iterator[Tuple[torch.Tensor, int]]]:
    """(class names, iterator over (C,H,W image as the model's test input, dominant class))."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data import detection_utils as utils
    from detectron2.data import transforms as T

    dicts = DatasetCatalog.get(dataset)[:max_images]
    classes = list(MetadataCatalog.get(dataset).thing_classes)
    resize = T.ResizeShortestEdge(
        [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
    )

    def gen():
        for d in dicts:
            image = utils.read_image(d["file_name"], format=cfg.INPUT.FORMAT)
            image = resize.get_transform(image).apply_image(image)
            tensor = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
            yield tensor, dominant_class(d.get("annotations", []))

    return classes, gen()


def record_detector(model: nn.Module, classes: Sequence[str], items) -> ExcitationRecorder:
    """Record the excitations of a detector's backbone over (image, dominant class) items."""
    with ExcitationRecorder(model.backbone, len(classes)) as rec, torch.no_grad():
        for image, label in items:
            rec.set_labels([label])
            images = model.preprocess_image([{"image": image}])
            model.backbone(images.tensor)
    return rec
