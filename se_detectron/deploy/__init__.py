"""Run exported SE detectors: ONNX Runtime, OpenVINO (fp32, bf16, int8) or PyTorch.

    from se_detectron.deploy import load
    predictor = load("export/model.onnx", backend="openvino")  # or "onnxruntime", "torch"
    instances = predictor(bgr_image)  # Detectron2 Instances in the image's own pixels

See docs/tutorials/deployment.md.
"""

from .predictor import DeployedPredictor, check_same_config, load, load_file_config
from .runtimes import BACKENDS, PRECISIONS, DeployError

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "DeployError",
    "DeployedPredictor",
    "check_same_config",
    "load",
    "load_file_config",
]
