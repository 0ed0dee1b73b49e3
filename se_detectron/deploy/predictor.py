"""``load(path, backend)``: an exported detector as a Detectron2-style predictor.

    from se_detectron.deploy import load
    predictor = load("export/model.onnx", backend="openvino")
    instances = predictor(cv2.imread("image.jpg"))   # Instances in the image's own pixels

The predictor does what Detectron2's ``DefaultPredictor`` does around the model: channel order
from ``INPUT.FORMAT`` (it takes BGR images, as ``DefaultPredictor`` does), the test-time
``ResizeShortestEdge``, then Detectron2's ``detector_postprocess`` (boxes rescaled to the
original image, clipped; Mask R-CNN masks pasted into it with ``ROIMasks.to_bitmasks``). Only the
network between the two runs in the chosen runtime.
"""

import os
import tempfile
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from ..config import get_se_cfg
from ..export.core import build_eval_model
from ..export.graph import model_config_keys
from .runtimes import (
    BACKENDS,
    DeployError,
    OnnxRuntimeRuntime,
    OpenVINORuntime,
    Runtime,
    read_file_config,
)

__all__ = ["DeployedPredictor", "TorchRuntime", "check_same_config", "load", "load_file_config"]


def load_file_config(path: str) -> CfgNode:
    """The config an exported file was made from (stored in the file by se-export-model).

    Raises:
        DeployError: the file does not exist, cannot be read or carries no config.
    """

    text = read_file_config(path)
    if text is None:
        raise DeployError(
            f"{path}: carries no se_detectron config (not written by se-export-model --format "
            "onnx); export the model with it"
        )
    with tempfile.TemporaryDirectory() as tmp:
        config_file = os.path.join(tmp, "config.yaml")
        with open(config_file, "w", encoding="utf-8") as f:
            f.write(text)
        return get_se_cfg(config_file)


def check_same_config(path: str, file_cfg: CfgNode, cfg: CfgNode) -> None:
    """Refuse a file exported for another model config than ``cfg``.

    Raises:
        DeployError: naming the first key (``MODEL.*``, test input sizes/format) whose value
            differs, with both values.
    """
    mine, theirs = model_config_keys(cfg), model_config_keys(file_cfg)
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            raise DeployError(
                f"{path} was exported for another config: {key} is {theirs.get(key)} in the "
                f"file, {mine.get(key)} in the given config"
            )


class TorchRuntime(Runtime):
    """The PyTorch model itself (eager, fp32): Detectron2's own inference and postprocessing.

    Args:
        cfg: the config; ``MODEL.WEIGHTS`` is loaded.
        precision: ``"fp32"`` only (PyTorch CPU bf16 autocast changes the model's numerics in
            ways no exported route reproduces).
    """

    backend = "torch"

    def __init__(self, cfg: CfgNode, precision: str = "fp32"):

        if precision != "fp32":
            raise DeployError(f"--precision {precision!r}: the torch backend runs fp32 only")
        if cfg.MODEL.WEIGHTS and not os.path.isfile(cfg.MODEL.WEIGHTS):
            raise DeployError(
                f"backend 'torch' needs the PyTorch weights MODEL.WEIGHTS={cfg.MODEL.WEIGHTS!r}, "
                "which do not exist: pass --config-file and MODEL.WEIGHTS"
            )
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.DEVICE = "cpu"
        self.model = build_eval_model(cfg)

    def predict(self, image: torch.Tensor, height: int, width: int) -> Instances:
        """Detectron2's own pipeline: ``model([{"image", "height", "width"}])``."""
        with torch.no_grad():
            return self.model([{"image": image, "height": height, "width": width}])[0]["instances"]


class DeployedPredictor:
    """``predictor(image) -> Instances``: an exported detector with Detectron2's pre/postprocessing.

    Args:
        runtime: a :class:`~se_detectron.deploy.runtimes.Runtime` (or :class:`TorchRuntime`).
        cfg: the model's config (``INPUT.FORMAT``, ``INPUT.MIN_SIZE_TEST``/``MAX_SIZE_TEST``).

    Attributes:
        backend: the runtime's name.
        precision: what the network's arithmetic runs in (``fp32``, ``bf16``, ``int8+fp32``).
        cfg: the config.
    """

    def __init__(self, runtime, cfg: CfgNode):
        self.runtime = runtime
        self.cfg = cfg
        self.backend = runtime.backend
        self.precision = runtime.precision
        self.input_format = cfg.INPUT.FORMAT
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )

    def __call__(self, original_image: np.ndarray) -> Instances:
        """Detect objects in one image.

        Args:
            original_image: an ``(H, W, 3)`` uint8 image in BGR order (as ``DefaultPredictor``
                and ``cv2.imread``), or RGB when the config's ``INPUT.FORMAT`` is ``RGB``.

        Returns:
            Instances of the original image's size: ``pred_boxes``, ``scores``,
            ``pred_classes`` and, for Mask R-CNN, ``pred_masks`` (H, W) booleans.

        Raises:
            DeployError: an image that is not (H, W, 3) uint8, or that the runtime fails on.
        """
        image = np.asarray(original_image)
        if (
            image.ndim != 3
            or image.shape[2] != 3
            or image.dtype != np.uint8
            or min(image.shape[:2]) < 1
        ):
            raise DeployError(
                f"image of shape {tuple(image.shape)} and dtype {image.dtype}: the predictor "
                "takes (H, W, 3) uint8 images (BGR, as cv2.imread gives)"
            )
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
        return self.predict_tensor(tensor, height, width)

    def predict_tensor(self, image: torch.Tensor, height: int, width: int) -> Instances:
        """Run the network on a preprocessed ``(3, h, w)`` float image (``INPUT.FORMAT`` order,
        test-size resized, as Detectron2's test data loader gives it) and return Instances
        rescaled to the original ``height x width``."""
        if isinstance(self.runtime, TorchRuntime):
            return self.runtime.predict(image, height, width)
        try:
            outputs = self.runtime(np.ascontiguousarray(image.numpy(), dtype=np.float32))
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DeployError(
                f"{self.backend} failed on an image of network input size "
                f"{tuple(image.shape[1:])}: {first}"
            ) from None
        instances = Instances(tuple(image.shape[1:]))
        instances.pred_boxes = Boxes(torch.from_numpy(outputs["boxes"]))
        instances.scores = torch.from_numpy(outputs["scores"])
        instances.pred_classes = torch.from_numpy(outputs["classes"]).long()
        if "masks" in outputs:
            instances.pred_masks = torch.from_numpy(outputs["masks"])
        return detector_postprocess(instances, height, width)

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        """Detectron2's model interface (for ``inference_on_dataset``): inputs from the test
        data loader (``"image"`` (3, h, w), ``"height"``, ``"width"``) -> ``[{"instances"}]``."""
        return [
            {
                "instances": self.predict_tensor(
                    x["image"].float(),
                    x.get("height", x["image"].shape[1]),
                    x.get("width", x["image"].shape[2]),
                )
            }
            for x in batched_inputs
        ]


def load(
    path: str,
    backend: str = "onnxruntime",
    precision: str = "fp32",
    cfg: Optional[CfgNode] = None,
    threads: int = 0,
) -> DeployedPredictor:
    """Load an exported detector for inference.

    Args:
        path: a ``.onnx`` file written by ``se-export-model --format onnx`` (any image size,
            carries its config) or by ``se-deploy quantize`` (int8), or, for
            ``backend="torch"``, also a config ``.yaml`` (with ``MODEL.WEIGHTS``).
        backend: ``"onnxruntime"``, ``"openvino"`` or ``"torch"`` (the PyTorch model the file
            was exported from: the file's config and its ``MODEL.WEIGHTS``, or ``cfg``'s).
        precision: ``"fp32"`` (default, every backend) or ``"bf16"`` (OpenVINO, on CPUs with
            bf16 units).
        cfg: the config the caller expects; a file exported for another model config is
            refused (:func:`check_same_config`). With ``backend="torch"``, its
            ``MODEL.WEIGHTS`` are the ones loaded.
        threads: intra-op threads of the runtime (0: its default).

    Returns:
        A :class:`DeployedPredictor`: ``predictor(bgr_uint8_image) -> Instances``.

    Raises:
        DeployError: unknown backend, missing runtime package, file that is missing, unreadable,
            exported for another config or not by se_detectron, unsupported precision.
    """
    if backend not in BACKENDS:
        raise DeployError(f"--backend {backend!r}: choose one of {sorted(BACKENDS)}")
    if backend == "torch" and path.endswith((".yaml", ".yml")):
        file_cfg = get_se_cfg(path)
    else:
        file_cfg = load_file_config(path)
    if cfg is not None:
        check_same_config(path, file_cfg, cfg)
    if backend == "torch":
        return DeployedPredictor(
            TorchRuntime(cfg if cfg is not None else file_cfg, precision), file_cfg
        )
    if backend == "onnxruntime":
        if precision != "fp32":
            raise DeployError(f"--precision {precision!r}: the onnxruntime backend runs fp32 only")
        return DeployedPredictor(OnnxRuntimeRuntime(path, threads), file_cfg)
    return DeployedPredictor(OpenVINORuntime(path, precision, threads), file_cfg)
