"""Comparison of an exported model's outputs with the PyTorch model's."""

from typing import Callable, Dict, List, Mapping, Sequence

import numpy as np
import torch

from ..errors import SEDetectronError

__all__ = [
    "ExportVerificationError",
    "compare_detections",
    "compare_outputs",
    "to_numpy_dict",
    "verify_on_images",
]


class ExportVerificationError(SEDetectronError, AssertionError):
    """The exported model's outputs differ from the PyTorch model's beyond the tolerance."""


def to_numpy_dict(outputs: Mapping[str, object]) -> Dict[str, np.ndarray]:
    """Convert a mapping of tensors (or ``Boxes``) to float64/int64 numpy arrays."""
    result = {}
    for name, value in outputs.items():
        if hasattr(value, "tensor"):  # detectron2 Boxes
            value = value.tensor
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        result[name] = np.asarray(value)
    return result


def compare_outputs(
    expected: Mapping[str, object],
    actual: Mapping[str, object],
    atol: float = 1e-3,
    rtol: float = 1e-3,
) -> Dict[str, float]:
    """Check that ``actual`` equals ``expected`` output by output, within tolerance.

    Integer outputs (e.g. ``pred_classes``) must be equal; floating-point outputs must satisfy
    ``|actual - expected| <= atol + rtol * |expected|`` element-wise.

    Args:
        expected: the PyTorch model's outputs, name -> tensor/array/Boxes.
        actual: the exported model's outputs, same names.
        atol: absolute tolerance.
        rtol: relative tolerance.

    Returns:
        The maximum absolute difference per output name.

    Raises:
        ExportVerificationError: naming the first output that is missing, has another shape,
            or differs, with its maximum difference.
    """
    exp, act = to_numpy_dict(expected), to_numpy_dict(actual)
    diffs = {}
    for name, e in exp.items():
        if name not in act:
            raise ExportVerificationError(
                f"exported model has no output {name!r} (it has {sorted(act)})"
            )
        a = act[name]
        if a.shape != e.shape:
            raise ExportVerificationError(
                f"output {name!r}: exported shape {tuple(a.shape)} != PyTorch shape "
                f"{tuple(e.shape)}"
            )
        if e.size == 0:
            diffs[name] = 0.0
            continue
        diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
        max_diff = float(diff.max())
        diffs[name] = max_diff
        exact = np.issubdtype(e.dtype, np.integer) or e.dtype == bool
        try:  # torch's criterion: |actual - expected| <= atol + rtol * |expected|, NaN != NaN
            torch.testing.assert_close(
                torch.from_numpy(a.astype(np.float64)),
                torch.from_numpy(e.astype(np.float64)),
                atol=0.0 if exact else atol,
                rtol=0.0 if exact else rtol,
            )
        except AssertionError:
            if exact:
                n = int((diff != 0).sum())
                raise ExportVerificationError(
                    f"output {name!r}: {n} of {e.size} values differ (max difference {max_diff})"
                ) from None
            raise ExportVerificationError(
                f"output {name!r}: max difference {max_diff:.3g} exceeds the tolerance "
                f"(atol={atol}, rtol={rtol})"
            ) from None
    return diffs


def compare_detections(
    expected: Mapping[str, object],
    actual: Mapping[str, object],
    atol: float = 1e-3,
    rtol: float = 1e-3,
) -> Dict[str, float]:
    """Compare detections (``pred_boxes``, ``scores``, ``pred_classes`` and, for Mask R-CNN,
    ``pred_masks``), tolerating reordering.

    Detections are first compared in order (:func:`compare_outputs`). Detections with (nearly)
    tied scores may come out in another order from another backend (e.g. a randomly initialised
    RetinaNet scores every anchor ~0.01), so if that fails each expected detection is matched to
    the closest unused exported detection of the same class (by box and score); every output of
    a match, masks included, must be within tolerance.

    Returns:
        The maximum absolute difference per output name (over matched pairs).

    Raises:
        ExportVerificationError: a different number of detections, or a detection with no match
            within tolerance (naming the output and the max difference).
    """
    try:
        return compare_outputs(expected, actual, atol, rtol)
    except ExportVerificationError as in_order:
        exp, act = to_numpy_dict(expected), to_numpy_dict(actual)
        if act["scores"].shape != exp["scores"].shape:
            raise ExportVerificationError(
                f"output 'scores': {act['scores'].shape[0]} exported detections, "
                f"{exp['scores'].shape[0]} PyTorch detections"
            ) from in_order
        e_vals = np.concatenate([exp["pred_boxes"], exp["scores"][:, None]], 1).astype(np.float64)
        a_vals = np.concatenate([act["pred_boxes"], act["scores"][:, None]], 1).astype(np.float64)
        cost = np.abs(e_vals[:, None, :] - a_vals[None, :, :]).max(-1)
        cost[exp["pred_classes"][:, None] != act["pred_classes"][None, :]] = np.inf
        order, used = [], np.zeros(len(a_vals), dtype=bool)
        for i in range(len(e_vals)):
            j = int(np.argmin(np.where(used, np.inf, cost[i])))
            if used[j] or not np.isfinite(cost[i, j]):
                raise ExportVerificationError(
                    f"{in_order}; and detection {i} has no exported detection of the same class "
                    "left to match"
                ) from in_order
            used[j] = True
            order.append(j)
        matched = {name: value[order] for name, value in act.items()}
        try:
            return compare_outputs(exp, matched, atol, rtol)
        except ExportVerificationError as e:
            raise ExportVerificationError(f"{e} (after matching reordered detections)") from e


def verify_on_images(
    reference: Callable[[torch.Tensor], Mapping[str, object]],
    exported: Callable[[torch.Tensor], Mapping[str, object]],
    images: Sequence[torch.Tensor],
    atol: float = 1e-3,
    rtol: float = 1e-3,
) -> List[Dict[str, object]]:
    """Compare an exported detector with PyTorch on every image (e.g. several sizes).

    Args:
        reference: ``image -> outputs`` of the PyTorch model
            (:func:`se_detectron.export.reference_outputs`).
        exported: ``image -> outputs`` of the exported file.
        images: preprocessed ``(3, H, W)`` images; give several sizes and aspect ratios to
            check a file exported for any size.
        atol: absolute tolerance.
        rtol: relative tolerance.

    Returns:
        One ``{"input_shape", "num_detections", "max_abs_diff"}`` per image.

    Raises:
        ExportVerificationError: naming the input shape and the output that differs, or the
            runtime's error if the exported file cannot run on that input.
    """
    reports = []
    for image in images:
        shape = tuple(image.shape)
        expected = reference(image)
        try:
            actual = exported(image)
        except Exception as e:  # the runtime's own error type (onnxruntime, OpenVINO, torch)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportVerificationError(
                f"input {shape}: the exported model failed to run: {first}"
            ) from e
        try:
            diffs = compare_detections(expected, actual, atol=atol, rtol=rtol)
        except ExportVerificationError as e:
            raise ExportVerificationError(f"input {shape}: {e}") from e
        reports.append(
            {
                "input_shape": list(shape),
                "num_detections": int(len(to_numpy_dict(expected)["scores"])),
                "max_abs_diff": diffs,
            }
        )
    return reports
