"""ImageNet-layout folders, the paper's augmentation, and distributed data loaders.

A data root holds ``train/<class>/*`` and ``val/<class>/*`` images (any extension torchvision's
``ImageFolder`` reads: jpg, png, ...), read as RGB. Training uses a random-resized crop and an
optional horizontal flip; evaluation resizes the shorter side and takes a center crop. Both
normalize with the ImageNet mean/std, the convention of the configs' ``PIXEL_MEAN``/``PIXEL_STD``.
"""

import os
from typing import List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.data.dataloader import default_collate
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, pil_loader
from torchvision.transforms import v2

from ..data.mapper import ImageReadError
from ..errors import PretrainError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_eval_transform",
    "build_train_transform",
    "check_image_folder",
    "load_data",
    "make_loaders",
    "read_rgb_image",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_train_transform(
    crop_size: int = 224,
    hflip: bool = True,
    min_scale: float = 0.08,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Training augmentation: RandomResizedCrop (+ horizontal flip), to tensor, normalize.

    Args:
        crop_size: side of the square crop.
        hflip: random horizontal flip with probability 0.5 (disable for digits, text, ...).
        min_scale: smallest crop area as a fraction of the image (0.08 in the paper's recipe).
        mean: per-channel RGB mean on the [0, 1] scale.
        std: per-channel RGB std on the [0, 1] scale.
    """
    steps = [v2.RandomResizedCrop(crop_size, scale=(min_scale, 1.0), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]
    return v2.Compose(steps)


def build_eval_transform(
    resize_size: int = 256,
    crop_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Evaluation transform: resize the shorter side, center crop, to tensor, normalize.

    Args:
        resize_size: target of the shorter side.
        crop_size: side of the square center crop.
        mean: per-channel RGB mean on the [0, 1] scale.
        std: per-channel RGB std on the [0, 1] scale.
    """
    return v2.Compose(
        [
            v2.Resize(resize_size, antialias=True),
            v2.CenterCrop(crop_size),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def check_image_folder(path: str) -> List[str]:
    """Check that ``path`` is a folder of class sub-folders that hold images.

    Args:
        path: e.g. ``ROOT/train``.

    Returns:
        list: the sorted class names (sub-folder names).

    Raises:
        FileNotFoundError: if ``path`` is not a folder.
        ValueError: if it has no class sub-folder or no image in any of them; names the path.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"image folder {path} does not exist: a data root must contain train/<class>/*.jpg "
            "and val/<class>/*.jpg (ImageNet layout), or use --data-path digits"
        )
    classes = sorted(e.name for e in os.scandir(path) if e.is_dir())
    if not classes:
        raise PretrainError(
            f"image folder {path} has no class sub-folders (expected {path}/<class>/*)"
        )
    for dirpath, _dirs, files in os.walk(path, followlinks=True):
        if dirpath != path and any(f.lower().endswith(IMG_EXTENSIONS) for f in files):
            return classes
    raise PretrainError(
        f"image folder {path} has {len(classes)} class sub-folders but no image in them "
        f"(extensions read: {', '.join(IMG_EXTENSIONS)})"
    )


def read_rgb_image(path: str):
    """torchvision's ``ImageFolder`` loader (PIL, RGB); an unreadable file is an error naming it.

    Raises:
        ImageReadError: naming ``path`` and the cause (truncated, not an image, unreadable).
    """
    try:
        return pil_loader(path)
    except (OSError, SyntaxError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise ImageReadError(
            f"cannot read image {path!r} ({type(e).__name__}: {e}): remove or replace the file"
        ) from None


def load_data(
    root: str,
    train_crop_size: int = 224,
    val_resize_size: int = 256,
    val_crop_size: int = 224,
    hflip: bool = True,
    min_scale: float = 0.08,
) -> Tuple[ImageFolder, ImageFolder]:
    """The train and val ``ImageFolder`` data sets of an ImageNet-layout root.

    Args:
        root: folder with ``train/`` and ``val/``.
        train_crop_size: RandomResizedCrop size.
        val_resize_size: shorter side before the center crop at evaluation.
        val_crop_size: evaluation center-crop size.
        hflip: random horizontal flips in training.
        min_scale: RandomResizedCrop's smallest area fraction.

    Returns:
        tuple: ``(dataset_train, dataset_val)``; both have the same ``classes``; an image that
        cannot be read raises :class:`~se_detectron.data.mapper.ImageReadError` naming it.

    Raises:
        FileNotFoundError: if ``root/train`` or ``root/val`` is missing.
        ValueError: if one of them has no image, or their class sets differ.
    """
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    train_classes = check_image_folder(train_dir)
    val_classes = check_image_folder(val_dir)
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise PretrainError(
            f"the class folders of {train_dir} ({len(train_classes)}) and {val_dir} "
            f"({len(val_classes)}) differ: only in train: {only_train[:10]}, only in val: "
            f"{only_val[:10]}"
        )
    dataset_train = ImageFolder(
        train_dir,
        build_train_transform(train_crop_size, hflip=hflip, min_scale=min_scale),
        loader=read_rgb_image,
    )
    dataset_val = ImageFolder(
        val_dir, build_eval_transform(val_resize_size, val_crop_size), loader=read_rgb_image
    )
    return dataset_train, dataset_val


class _ShardSampler(torch.utils.data.Sampler):
    """Every ``world_size``-th index from ``rank``: an exact evaluation split, no padding."""

    def __init__(self, length: int, rank: int, world_size: int):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def make_loaders(
    dataset_train,
    dataset_val,
    batch_size: int,
    workers: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    pin_memory: bool = False,
    batch_transform: Optional[torch.nn.Module] = None,
):
    """Train/val loaders: shuffled (distributed) training batches, sharded exact evaluation.

    Args:
        dataset_train: the training data set.
        dataset_val: the validation data set.
        batch_size: images per process per step.
        workers: loader worker processes (0 loads in the main process).
        rank: this process's rank.
        world_size: number of processes.
        seed: seed of the shuffling (together with the epoch, see ``set_epoch``).
        pin_memory: pin host memory (for CUDA).
        batch_transform: applied to each collated training batch ``(images, targets)``, e.g.
            ``v2.RandomChoice([v2.MixUp(...), v2.CutMix(...)])``.

    Returns:
        tuple: ``(train_loader, val_loader, train_sampler)``; call
        ``train_sampler.set_epoch(epoch)`` at the start of every epoch.
    """
    # torch's sampler, also for one process: its order depends only on (seed, epoch)
    train_sampler = DistributedSampler(
        dataset_train, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
    )
    per_rank = len(train_sampler)
    collate = default_collate if batch_transform is None else _CollateThen(batch_transform)
    train_loader = DataLoader(
        dataset_train,
        batch_size=batch_size,
        sampler=train_sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        # Drop a ragged last batch (a batch of one breaks BatchNorm), unless it is the only one.
        drop_last=per_rank > batch_size,
        collate_fn=collate,
    )
    val_loader = DataLoader(
        dataset_val,
        batch_size=batch_size,
        sampler=_ShardSampler(len(dataset_val), rank, world_size),
        num_workers=workers,
        pin_memory=pin_memory,
    )
    return train_loader, val_loader, train_sampler


class _CollateThen:
    """Collate, then apply a batch transform (a class, so that worker processes can pickle it)."""

    def __init__(self, batch_transform):
        self.batch_transform = batch_transform

    def __call__(self, batch):
        return self.batch_transform(*default_collate(batch))
