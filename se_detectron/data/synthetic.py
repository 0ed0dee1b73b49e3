"""A deterministic synthetic object-detection dataset, drawn by code (numpy + PIL only).

The images show a few filled shapes (:data:`SYNTHETIC_CLASSES`) of varied size, aspect ratio,
rotation and colour on textured backgrounds (gradients, low-frequency noise, stripes,
checkerboards) with clutter that is *not* annotated (thin lines, arcs, soft blobs, speckles).
Later shapes may occlude earlier ones; every box is the tight box of the *visible* pixels of its
shape and every instance mask (``segmentation``, COCO RLE: train Mask R-CNN on it with
``INPUT.MASK_FORMAT bitmask``) is exactly those pixels; a placement that would leave an earlier
shape less than ``MIN_VISIBLE_FRACTION`` (60%) visible is rejected, so annotations always match
what is visible.

The dataset is written in COCO format under ``root``::

    root/train/train_00000.jpg ...        root/val/val_00000.jpg ...
    root/annotations/instances_train.json  root/annotations/instances_val.json
    root/manifest.json                     (generation parameters, written last)

:func:`register_synthetic_datasets` registers it as ``se_synthetic_train`` /
``se_synthetic_val``; the files are generated lazily, the first time a split is loaded.
"""

import json
import math
import os
import shutil
import tempfile

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from iopath.common.file_io import file_lock
from PIL import Image, ImageDraw
from pycocotools import mask as mask_util

from .register import check_datasets_registered, register_once

__all__ = [
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_TRAIN",
    "SYNTHETIC_VAL",
    "default_synthetic_root",
    "generate_synthetic_dataset",
    "prepare_dataset",
    "register_synthetic_datasets",
]

#: The five shape classes of the synthetic dataset, in category-id order.
SYNTHETIC_CLASSES = ("circle", "rectangle", "triangle", "cross", "star")
SYNTHETIC_TRAIN = "se_synthetic_train"
SYNTHETIC_VAL = "se_synthetic_val"
DEFAULT_NUM_TRAIN = 600
DEFAULT_NUM_VAL = 100
#: A shape whose visible part would drop below this fraction of its drawn area is not placed.
MIN_VISIBLE_FRACTION = 0.6
# Bump whenever the drawing code or the annotation format changes: existing datasets are then
# regenerated (2: instance masks added as RLE ``segmentation``; images and boxes unchanged).
GENERATOR_VERSION = 2
_JPEG_QUALITY = 92
_SPLIT_STREAM = {"train": 0, "val": 1}
_MANIFEST = "manifest.json"


def default_synthetic_root():
    """Return ``$DETECTRON2_DATASETS/se_synthetic`` (``DETECTRON2_DATASETS`` defaults to
    ``datasets``, as in Detectron2), as an absolute path."""
    base = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    return os.path.abspath(os.path.join(base, "se_synthetic"))


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------
def _rotate(points, angle):
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _regular(n, radii, phase=0.0):
    angles = phase + np.arange(n) * 2 * math.pi / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.asarray(radii)[:, None]


def _shape_polygon(rng, class_name, size):
    """Vertices (N, 2), centred on 0, of a shape whose larger box side is ``size`` pixels."""
    angle = rng.uniform(0, 2 * math.pi)
    stretch = rng.uniform(0.8, 1.25)
    if class_name == "circle":
        pts = _regular(48, np.ones(48))
    elif class_name == "rectangle":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
        stretch = rng.uniform(0.4, 1.0)
        stretch = stretch if rng.random() < 0.5 else 1 / stretch
        angle = 0.0 if rng.random() < 0.5 else rng.uniform(-0.45, 0.45)
    elif class_name == "triangle":
        jitter = rng.uniform(-0.25, 0.25, size=3)
        angles = math.pi / 2 + np.arange(3) * 2 * math.pi / 3 + jitter
        pts = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    elif class_name == "cross":
        t = rng.uniform(0.28, 0.4)  # arm half-width relative to the arm half-length
        pts = np.array(
            [[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t],
             [t, 1], [-t, 1], [-t, t], [-1, t], [-1, -t], [-t, -t]]
        )  # fmt: skip
        angle = rng.uniform(-math.pi / 4, math.pi / 4)
    elif class_name == "star":
        radii = np.tile([1.0, rng.uniform(0.38, 0.5)], 5)
        pts = _regular(10, radii, phase=-math.pi / 2)
    else:
        raise ValueError(f"Unknown synthetic class {class_name!r}")
    pts = _rotate(pts * np.array([stretch, 1.0]), angle)
    extent = (pts.max(0) - pts.min(0)).max()
    return (pts - (pts.max(0) + pts.min(0)) / 2) * (size / extent)


def _random_colour(rng, low=0, high=255):
    return rng.integers(low, high + 1, size=3).astype(np.float32)


def _background(rng, h, w):
    """A textured float32 (h, w, 3) background in [0, 255]."""
    yy, xx = np.ogrid[0:h, 0:w]
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    kind = rng.integers(4)
    base = _random_colour(rng, 40, 215)[:, None, None]
    if kind == 0:  # linear gradient between two colours
        theta = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(theta) + yy * math.sin(theta)
        pattern = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        amplitude = rng.uniform(-90, 90, size=3)
    elif kind == 1:  # smooth low-frequency noise, independent per channel
        cells = int(rng.integers(3, 9))
        grid = rng.uniform(-1, 1, size=(3, cells, cells)).astype(np.float32)
        pattern = np.stack(
            [np.asarray(Image.fromarray(g).resize((w, h), Image.BICUBIC)) for g in grid]
        )
        amplitude = rng.uniform(20, 55, size=3)
    elif kind == 2:  # stripes
        theta = rng.uniform(0, math.pi)
        period = rng.uniform(8, 40)
        pattern = np.sign(
            np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * (2 * math.pi / period))
        )
        amplitude = rng.uniform(12, 35, size=3)
    else:  # checkerboard
        cell = int(rng.integers(8, 41))
        pattern = ((np.arange(h) // cell)[:, None] + (np.arange(w) // cell)[None, :]) % 2 * 2.0 - 1
        amplitude = rng.uniform(12, 35, size=3)
    img = base + pattern.astype(np.float32) * amplitude.astype(np.float32)[:, None, None]
    return np.ascontiguousarray(np.clip(img, 0, 255).transpose(1, 2, 0))


def _add_clutter(rng, img):
    """Draw unannotated distractors on the background (before any object is drawn)."""
    h, w = img.shape[:2]
    for _ in range(rng.integers(0, 4)):  # soft blobs: no sharp edges, unlike the objects
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        sigma = rng.uniform(4, 20) * w / 256
        x0, x1 = max(int(cx - 3 * sigma), 0), min(int(cx + 3 * sigma) + 1, w)
        y0, y1 = max(int(cy - 3 * sigma), 0), min(int(cy + 3 * sigma) + 1, h)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        bump = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)).astype(np.float32)
        img[y0:y1, x0:x1] += bump[..., None] * rng.uniform(-80, 80, size=3).astype(np.float32)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(rng.integers(2, 8)):  # thin lines
        x0, x1 = rng.uniform(0, w, size=2)
        y0, y1 = rng.uniform(0, h, size=2)
        colour = tuple(int(v) for v in _random_colour(rng))
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 4)))
    for _ in range(rng.integers(0, 3)):  # open arcs
        r = rng.uniform(10, 60) * w / 256
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        start = rng.uniform(0, 360)
        colour = tuple(int(v) for v in _random_colour(rng))
        draw.arc([cx - r, cy - r, cx + r, cy + r], start, start + rng.uniform(40, 200), colour, 2)
    img = np.asarray(pil).astype(np.float32)
    n = int(rng.integers(0, h * w // 100))  # salt-and-pepper speckles
    img[rng.integers(0, h, size=n), rng.integers(0, w, size=n)] = rng.choice([0.0, 255.0], (n, 1))
    return img


def _pick_colour(rng, local_bg, others):
    """An object colour far from the local background and from overlapping objects."""
    best, best_score = None, -1.0
    for _ in range(12):
        colour = _random_colour(rng)
        dists = [np.linalg.norm(colour - local_bg)] + [
            np.linalg.norm(colour - o) / 0.8 for o in others
        ]
        if min(dists) > best_score:
            best, best_score = colour, min(dists)
        if best_score > 120:
            break
    return best


class _Object:
    """A placed shape: class index, full-frame visible mask, drawn area, colour."""

    def __init__(self, cls, visible, colour):
        self.cls, self.visible, self.colour = cls, visible, colour
        self.area = int(visible.sum())
        self.visible_area = self.area


def _draw_image(rng, size):
    """Draw one image. Returns (uint8 HxWx3 array, list of (class index, visible mask))."""
    img = _add_clutter(rng, _background(rng, size, size))
    objects = []
    for _ in range(rng.integers(2, 7)):
        cls = int(rng.integers(len(SYNTHETIC_CLASSES)))
        extent = math.exp(rng.uniform(math.log(16), math.log(112))) * size / 256
        pts = _shape_polygon(rng, SYNTHETIC_CLASSES[cls], extent)
        pts -= pts.min(0)
        bw, bh = (int(math.ceil(v)) + 1 for v in pts.max(0))
        canvas = Image.new("L", (bw, bh), 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in pts], fill=1)
        local = np.asarray(canvas).astype(bool)
        if local.sum() < 16:
            continue
        for _attempt in range(30):  # a position that keeps the other objects visible enough
            x0, y0 = int(rng.integers(1, size - bw)), int(rng.integers(1, size - bh))
            window = (slice(y0, y0 + bh), slice(x0, x0 + bw))
            hidden = [int((o.visible[window] & local).sum()) for o in objects]
            if all(
                o.visible_area - k >= MIN_VISIBLE_FRACTION * o.area for o, k in zip(objects, hidden)
            ):
                break
        else:
            continue  # skip this object
        overlapping = [o.colour for o in objects if o.visible[window].any()]
        colour = _pick_colour(rng, img[window][local].mean(0), overlapping)
        for o, k in zip(objects, hidden):
            o.visible[window] &= ~local
            o.visible_area -= k
        # flat colour with a mild linear shading across the object
        theta = rng.uniform(0, 2 * math.pi)
        ys, xs = np.nonzero(local)
        t = (xs * math.cos(theta) + ys * math.sin(theta)) / size
        shade = ((t - t.mean()) * rng.uniform(0, 60)).astype(np.float32)[:, None]
        img[ys + y0, xs + x0] = colour + shade
        visible = np.zeros((size, size), dtype=bool)
        visible[window] = local
        objects.append(_Object(cls, visible, colour))
    noise = rng.standard_normal((size, size, 1), dtype=np.float32) * rng.uniform(2, 8)
    img += np.repeat(noise, 3, axis=2)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), [(o.cls, o.visible) for o in objects]


def _rle(mask):
    """COCO compressed RLE of a boolean mask, JSON-ready (``counts`` as str).

    RLE, not polygons: a visible region can have holes (a later shape on top of an earlier one)
    that COCO polygons cannot express, so this is the only exact encoding.
    """
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _tight_box(mask):
    """COCO XYWH box covering exactly the True pixels of ``mask``."""
    cols, rows = np.nonzero(mask.any(0))[0], np.nonzero(mask.any(1))[0]
    x0, y0 = int(cols[0]), int(rows[0])
    return [x0, y0, int(cols[-1]) + 1 - x0, int(rows[-1]) + 1 - y0]


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def _write_split(out_dir, split, num_images, image_size, seed):
    image_dir = os.path.join(out_dir, split)
    os.makedirs(image_dir)
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, _SPLIT_STREAM[split], index])
        pixels, objects = _draw_image(rng, image_size)
        file_name = f"{split}_{index:05d}.jpg"
        Image.fromarray(pixels).save(os.path.join(image_dir, file_name), quality=_JPEG_QUALITY)
        image_id = index + 1
        images.append(
            {"id": image_id, "file_name": file_name, "width": image_size, "height": image_size}
        )
        for cls, visible in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "bbox": _tight_box(visible),
                    "segmentation": _rle(visible),
                    "area": int(visible.sum()),
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {
            "description": f"se_detectron synthetic shapes ({split})",
            "version": str(GENERATOR_VERSION),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "shape"}
            for i, name in enumerate(SYNTHETIC_CLASSES)
        ],
    }
    with open(os.path.join(out_dir, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump(coco, f)


def _paths(root):
    return {
        "root": root,
        "train_json": os.path.join(root, "annotations", "instances_train.json"),
        "val_json": os.path.join(root, "annotations", "instances_val.json"),
        "train_images": os.path.join(root, "train"),
        "val_images": os.path.join(root, "val"),
    }


def _is_complete(root, manifest):
    """True if ``root`` holds a finished dataset generated with exactly ``manifest``."""
    try:
        with open(os.path.join(root, _MANIFEST)) as f:
            if json.load(f) != manifest:
                return False
    except (OSError, ValueError):
        return False
    paths = _paths(root)
    return all(os.path.isfile(paths[k]) for k in ("train_json", "val_json")) and all(
        os.path.isdir(paths[f"{s}_images"])
        and len(os.listdir(paths[f"{s}_images"])) == manifest[f"num_{s}"]
        for s in ("train", "val")
    )


def generate_synthetic_dataset(
    root, num_train=DEFAULT_NUM_TRAIN, num_val=DEFAULT_NUM_VAL, image_size=256, seed=0, force=False
):
    """Generate (if needed) the synthetic dataset in COCO format under ``root``.

    Deterministic: the same parameters give byte-identical files. Idempotent: when
    ``root/manifest.json`` records the same parameters and the files exist, nothing is done;
    otherwise the dataset is regenerated. Generation writes into a temporary sibling
    directory that is renamed to ``root`` only once complete (under a file lock), so an
    interrupted run never leaves a half-written dataset.

    Args:
        root (str): output directory. An existing non-empty directory is only replaced if it
            holds a previous synthetic dataset (a ``manifest.json``).
        num_train (int): number of training images.
        num_val (int): number of validation images.
        image_size (int): side of the square images, in pixels (shape sizes scale with it).
        seed (int): random seed; each image uses its own stream derived from
            ``(seed, split, index)``.
        force (bool): regenerate even if a matching dataset exists.

    Returns:
        dict: ``root``, ``train_json``, ``val_json``, ``train_images``, ``val_images`` (paths),
        ``num_train``, ``num_val``, and ``generated`` (False when the existing files were
        kept).
    """
    if min(num_train, num_val) < 1 or image_size < 64:
        raise ValueError(
            "generate_synthetic_dataset needs num_train >= 1, num_val >= 1 and "
            f"image_size >= 64 (got {num_train}, {num_val}, {image_size})"
        )
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "classes": list(SYNTHETIC_CLASSES),
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "seed": int(seed),
    }
    info = dict(_paths(root), num_train=int(num_train), num_val=int(num_val), generated=False)
    if not force and _is_complete(root, manifest):
        return info
    parent, base = os.path.split(root)
    with file_lock(root):
        if not force and _is_complete(root, manifest):  # another process just generated it
            return info
        if os.path.lexists(root) and not (
            os.path.isdir(root)
            and (not os.listdir(root) or os.path.isfile(os.path.join(root, _MANIFEST)))
        ):
            raise FileExistsError(
                f"Refusing to generate the synthetic dataset into '{root}': it exists and is "
                f"neither an empty directory nor a previous synthetic dataset (no {_MANIFEST})."
            )
        for name in os.listdir(parent):  # leftovers of interrupted runs (we hold the lock)
            if name.startswith(f".{base}.tmp-") or name.startswith(f".{base}.old-"):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private
        try:
            os.makedirs(os.path.join(tmp, "annotations"))
            for split, n in (("train", num_train), ("val", num_val)):
                _write_split(tmp, split, int(n), int(image_size), int(seed))
            with open(os.path.join(tmp, _MANIFEST), "w") as f:
                json.dump(manifest, f, indent=2)
            old = None
            if os.path.lexists(root):
                old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
                os.replace(root, os.path.join(old, base))
            os.replace(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    info["generated"] = True
    return info


# ----------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------
def register_synthetic_datasets(
    root=None,
    *,
    num_train=DEFAULT_NUM_TRAIN,
    num_val=DEFAULT_NUM_VAL,
    image_size=256,
    seed=0,
    builtin=False,
):
    """Register ``se_synthetic_train`` and ``se_synthetic_val`` in Detectron2's catalogs.

    ``import se_detectron`` already calls this once with the default root (``builtin=True``), the
    way ``import detectron2`` registers its builtin datasets (``detectron2.data.datasets.builtin``,
    root resolved from ``$DETECTRON2_DATASETS`` at import), so Detectron2's own tools and any
    script that loads a shipped config can use the two names. An explicit call replaces that
    builtin registration (e.g. another root or ``$DETECTRON2_DATASETS`` set after the import).

    Nothing is generated here: each split's loader calls :func:`generate_synthetic_dataset`
    (a no-op once the files exist) before reading the COCO json. The metadata holds
    ``thing_classes``, ``thing_dataset_id_to_contiguous_id``, ``evaluator_type="coco"``,
    ``json_file``, ``image_root`` and ``se_synthetic`` (the generation parameters).
    Detectron2's ``COCOEvaluator`` reads ``json_file`` when it is constructed without calling
    the loader; ``DefaultTrainer.test`` builds the test loader first, otherwise call
    :func:`se_detectron.data.prepare_dataset` before building the evaluator.

    Idempotent: registering again with the same root and parameters is a no-op; a different
    root or different parameters raise :class:`~se_detectron.data.DatasetConfigError`.

    Args:
        root (str or None): dataset directory; default :func:`default_synthetic_root`
            (``$DETECTRON2_DATASETS/se_synthetic``), resolved when this function is called.
        num_train (int): number of training images to generate.
        num_val (int): number of validation images to generate.
        image_size (int): image side in pixels.
        seed (int): generation seed.
        builtin (bool): the registration made at import; it does nothing if the names are
            already registered, and yields to any later explicit registration.

    Returns:
        list[str]: the two registered dataset names.
    """
    from detectron2.data.datasets import load_coco_json

    root = default_synthetic_root() if root is None else os.path.abspath(os.fspath(root))
    params = {
        "root": root,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "seed": int(seed),
    }
    paths = _paths(root)
    for split, name in (("train", SYNTHETIC_TRAIN), ("val", SYNTHETIC_VAL)):
        json_file, image_root = paths[f"{split}_json"], paths[f"{split}_images"]
        if name in DatasetCatalog.list():
            if builtin:
                continue
            if MetadataCatalog.get(name).get("se_synthetic_builtin", False):
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)

        def load(name=name, json_file=json_file, image_root=image_root):
            generate_synthetic_dataset(**params)
            return load_coco_json(json_file, image_root, name)

        register_once(
            name,
            load,
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
            thing_classes=list(SYNTHETIC_CLASSES),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SYNTHETIC_CLASSES))},
            se_synthetic=params,
            **({"se_synthetic_builtin": True} if builtin else {}),
        )
    return [SYNTHETIC_TRAIN, SYNTHETIC_VAL]


def prepare_dataset(name):
    """Make sure the files behind a registered dataset exist before they are read directly.

    Detectron2's ``COCOEvaluator`` opens ``MetadataCatalog.get(name).json_file`` without
    calling the dataset loader; for the lazily generated synthetic datasets call this first
    (a no-op for other datasets and once the files exist).

    Args:
        name (str): a registered dataset name.
    """
    check_datasets_registered([name])
    params = MetadataCatalog.get(name).get("se_synthetic")
    if params is not None:
        generate_synthetic_dataset(**params)
