"""Runtimes of an exported detector graph: ONNX Runtime, OpenVINO, and PyTorch itself.

Every runtime runs the graph of :mod:`se_detectron.export.graph` on one preprocessed image and
returns its named outputs (``boxes``, ``scores``, ``classes``, ``masks``) as numpy arrays. Each
states and controls its numeric precision (``Runtime.precision``): OpenVINO's CPU plugin
runs bf16 by default on CPUs that have bf16 units, so its precision hint is always set.
"""

import os
from typing import Dict, Optional

import numpy as np

from ..errors import SEDetectronError
from ..export.graph import GRAPH_OUTPUTS, METADATA_CONFIG

#: ONNX metadata key saying ``int8`` in a quantized file
METADATA_PRECISION = "se_detectron.precision"

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "DeployError",
    "OnnxRuntimeRuntime",
    "OpenVINORuntime",
    "Runtime",
    "read_file_config",
    "read_file_metadata",
]

#: backend name -> (Python package, what to install)
BACKENDS = {
    "onnxruntime": ("onnxruntime", "pip install 'se_detectron[deploy]' (or onnxruntime)"),
    "openvino": ("openvino", "pip install 'se_detectron[deploy]' (or openvino)"),
    "torch": ("torch", "PyTorch"),
}
#: precisions a backend can be asked for (``int8`` is a property of a quantized file)
PRECISIONS = ("fp32", "bf16")


class DeployError(SEDetectronError, ValueError):
    """A deployment input the user can fix: missing runtime, wrong file, unsupported image."""


def require_backend(backend: str):
    """Import ``backend``'s package, or raise a :class:`DeployError` naming what to install."""
    if backend not in BACKENDS:
        raise DeployError(f"--backend {backend!r}: choose one of {sorted(BACKENDS)}")
    package, install = BACKENDS[backend]
    try:
        return __import__(package)
    except ImportError as e:
        raise DeployError(
            f"backend {backend!r} needs the {package!r} package, which is not importable "
            f"({e}): {install}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_file_metadata(path: str) -> Dict[str, str]:
    """The ONNX metadata of an exported file (``se_detectron.config``, ``se_detectron.precision``).

    Args:
        path: a ``.onnx`` file.

    Raises:
        DeployError: the file does not exist or is not an ONNX file.
    """
    if not os.path.isfile(path):
        raise DeployError(f"exported model {path!r}: no such file")
    import onnx

    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as e:
        raise DeployError(f"{path}: not an ONNX file ({_first_line(e)})") from None
    return {p.key: p.value for p in proto.metadata_props}


def read_file_config(path: str) -> Optional[str]:
    """The config YAML an exported ONNX file carries, or None."""
    return read_file_metadata(path).get(METADATA_CONFIG)


class Runtime:
    """``runtime(image) -> {output name: ndarray}`` for one ``(3, H, W)`` float32 image.

    Attributes:
        backend: ``"onnxruntime"``, ``"openvino"`` or ``"torch"``.
        precision: what the arithmetic runs in (``"fp32"``, ``"bf16"``, ``"int8"``).
    """

    backend = ""
    precision = "fp32"

    def __call__(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        raise NotImplementedError


class OnnxRuntimeRuntime(Runtime):
    """An ONNX file in an ``onnxruntime.InferenceSession`` (CPU execution provider, fp32).

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (0: onnxruntime's default, one per physical core).
        profile_prefix: record ONNX Runtime's profile of every run into
            ``<profile_prefix>_<date>.json`` (``session.end_profiling()`` ends it and returns
            the path); None: no profiling.
    """

    backend = "onnxruntime"

    def __init__(self, path: str, threads: int = 0, profile_prefix: Optional[str] = None):
        ort = require_backend("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        try:
            self.session = ort.InferenceSession(
                path, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # unsupported opset/operator, corrupt file
            raise DeployError(f"{path}: onnxruntime cannot load it: {_first_line(e)}") from None
        self.names = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.precision = "int8+fp32" if meta.get(METADATA_PRECISION) == "int8" else "fp32"

    def __call__(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        return dict(zip(self.names, self.session.run(None, {"image": image})))


def _output_name(names) -> str:
    ours = sorted(set(names) & set(GRAPH_OUTPUTS))
    return ours[0] if ours else sorted(names)[0]


class OpenVINORuntime(Runtime):
    """An ONNX file compiled for OpenVINO's CPU plugin.

    Args:
        path: the ``.onnx`` file (fp32, or the int8 QDQ file of
            :mod:`se_detectron.deploy.quantize`).
        precision: ``"fp32"`` (``INFERENCE_PRECISION_HINT`` f32, set explicitly: the plugin
            otherwise runs bf16 on CPUs with bf16 units) or ``"bf16"`` (refused on a CPU
            without bf16 support: OpenVINO would silently run f32). An int8 file runs its
            quantized layers in int8 and the others in this precision.
        threads: ``INFERENCE_NUM_THREADS`` (0: OpenVINO's default).
        perf_count: OpenVINO's ``PERF_COUNT``: ``request.get_profiling_info()`` then gives
            each node's time and kernel for the last inference.
    """

    backend = "openvino"

    def __init__(
        self, path: str, precision: str = "fp32", threads: int = 0, perf_count: bool = False
    ):
        ov = require_backend("openvino")
        if precision not in PRECISIONS:
            raise DeployError(f"--precision {precision!r}: choose one of {PRECISIONS}")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property(
            "CPU", "OPTIMIZATION_CAPABILITIES"
        ):
            raise DeployError(
                "--precision bf16: this CPU has no bf16 support (OpenVINO CPU capabilities "
                f"{core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')})"
            )
        try:
            model = core.read_model(path)
        except Exception as e:
            raise DeployError(f"{path}: OpenVINO cannot read it: {_first_line(e)}") from None
        quantized = read_file_metadata(path).get(METADATA_PRECISION) == "int8"
        config = {"INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if perf_count:
            config["PERF_COUNT"] = True
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as e:
            raise DeployError(f"{path}: OpenVINO cannot compile it: {_first_line(e)}") from None
        self.request = self.compiled.create_infer_request()
        # a port has several tensor names after OpenVINO's graph fusion: take the graph's own
        self.names = [_output_name(o.get_names()) for o in self.compiled.outputs]
        self.precision = f"int8+{precision}" if quantized else precision

    def __call__(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        results = self.request.infer({"image": image})
        return {
            name: np.asarray(results[out]) for name, out in zip(self.names, self.compiled.outputs)
        }
