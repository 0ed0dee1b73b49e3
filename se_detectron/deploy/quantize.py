"""int8 post-training static quantization of an exported detector (ONNX Runtime's quantizer).

:func:`onnxruntime.quantization.quantize_static` writes a QDQ ONNX file: ``QuantizeLinear`` /
``DequantizeLinear`` pairs around the convolutions and fully connected layers (``Conv``,
``Gemm``, ``MatMul``), weights per output channel (int8), activations per tensor (uint8) with
ranges calibrated (min/max) on training images preprocessed as the exported graph expects
(its own ``ResizeShortestEdge``). Anchors, box decoding, NMS, RoIAlign and the mask pasting stay
fp32. The file keeps the fp32 file's metadata (config) and says ``se_detectron.precision=int8``.
Both runtimes execute it in int8: ONNX Runtime fuses the QDQ pairs into ``QLinearConv`` /
``QGemm`` kernels, OpenVINO into its int8 convolutions. The file is meant for ONNX Runtime, where
it kept the demo detector's box AP within 0.3 of fp32; OpenVINO's own int8 arithmetic lost
2.1-2.5 AP on it whatever the calibration (docs/tutorials/deployment.md, "int8"), so
``se-deploy compare`` is the check before deploying it there.

OpenVINO's NNCF (``nncf.quantize``) is not used: NNCF 3.4.0 cannot build its graph of the
exported detector (the ``If`` subgraphs of torchvision's batched NMS: "Could not find a node
... in NNCFGraph").

Without VNNI (``AVX512_VNNI`` / ``AVX_VNNI``), x86 int8 kernels multiply uint8 x int8 with
``vpmaddubsw``, whose int16 intermediate sums can saturate; weights are then quantized to 7 bits
(``reduce_range``), as ONNX Runtime's documentation advises. With VNNI, full 8-bit weights.
"""

import logging
import os
import tempfile
from typing import Iterator, Optional

import numpy as np

from ..data import register_datasets_from_cfg
from ..utils.machine import cpu_flags
from .predictor import load_file_config
from .runtimes import METADATA_PRECISION, DeployError, require_backend

__all__ = ["calibration_images", "has_vnni", "quantize_int8"]

logger = logging.getLogger(__name__)

#: the layers quantized; everything else (NMS, box decoding, RoIAlign, ...) stays fp32
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


def has_vnni() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX512_VNNI or AVX_VNNI)."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


def calibration_images(cfg, dataset_name: str, count: int) -> Iterator[np.ndarray]:
    """The first ``count`` images of ``dataset_name`` preprocessed as the exported graph's input.

    Args:
        cfg: the exported file's config (``INPUT.*`` test-time resize and format).
        dataset_name: a registered dataset (a training split).
        count: how many images.

    Yields:
        float32 ``(3, H, W)`` arrays.

    Raises:
        DeployError: the dataset is not registered or empty.
    """
    from detectron2.data import DatasetCatalog, DatasetMapper

    register_datasets_from_cfg(cfg)
    if dataset_name not in DatasetCatalog.list():
        raise DeployError(f"--calibration-dataset {dataset_name!r} is not registered")
    dicts = DatasetCatalog.get(dataset_name)
    if not dicts:
        raise DeployError(f"--calibration-dataset {dataset_name!r} has no images")
    mapper = DatasetMapper(cfg, is_train=False)
    for record in dicts[:count]:
        yield mapper(dict(record))["image"].numpy().astype(np.float32)


def quantize_int8(
    onnx_path: str,
    output_path: str,
    dataset_name: Optional[str] = None,
    count: int = 300,
    reduce_range: Optional[bool] = None,
) -> str:
    """Quantize an exported ONNX detector to int8 (static, QDQ, calibrated on ``count`` images).

    Args:
        onnx_path: a file from ``se-export-model --format onnx``.
        output_path: the int8 ``.onnx`` to write (atomically: nothing is left on failure).
        dataset_name: calibration images (default: the file config's ``DATASETS.TRAIN[0]``).
        count: number of calibration images (a few hundred suffice for activation ranges).
        reduce_range: 7-bit weights (default: when the CPU has no VNNI, see the module doc).

    Returns:
        ``output_path``.

    Raises:
        DeployError: onnxruntime missing, no calibration data, a bad output name.
    """
    if not output_path.endswith(".onnx"):
        raise DeployError(f"--output {output_path!r}: the int8 model is an ONNX file (.onnx)")
    if count < 1:
        raise DeployError(f"--calibration-images {count}: must be >= 1")
    require_backend("onnxruntime")
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    cfg = load_file_config(onnx_path)
    name = dataset_name or (cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else "")
    if not name:
        raise DeployError("no calibration dataset: pass --calibration-dataset NAME")
    images = calibration_images(cfg, name, count)
    used = []

    class Reader(CalibrationDataReader):
        def get_next(self):
            image = next(images, None)
            if image is None:
                return None
            used.append(image.shape)
            return {"image": image}

    if reduce_range is None:
        reduce_range = not has_vnni()
    folder = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        staged = os.path.join(tmp, "int8.onnx")
        quantize_static(
            onnx_path,
            staged,
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        proto = onnx.load(staged)
        props = {p.key: p.value for p in proto.metadata_props}
        props.update(
            {
                METADATA_PRECISION: "int8",
                "se_detectron.calibration": f"{len(used)} images of {name}, min/max, "
                f"per-channel int8 weights{' (7-bit, reduce_range)' if reduce_range else ''}, "
                "uint8 activations",
            }
        )
        onnx.helper.set_model_props(proto, props)
        onnx.save(proto, staged)
        os.replace(staged, output_path)
    logger.info(f"int8 model calibrated on {len(used)} images of {name} -> {output_path}")
    return output_path
