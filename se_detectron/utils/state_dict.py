"""Comparing a state dict with the one a model expects (the one check every loader shares)."""

from typing import Any, List, Mapping, NamedTuple, Tuple

__all__ = ["StateDictDiff", "diff_state_dicts"]


class StateDictDiff(NamedTuple):
    """How ``found`` differs from ``expected``; every list keeps ``expected``'s key order.

    Attributes:
        missing: keys of ``expected`` that ``found`` lacks.
        unexpected: keys of ``found`` that ``expected`` lacks (in ``found``'s order).
        wrong_shapes: ``(key, shape in found, shape in expected)`` for keys in both.
    """

    missing: List[str]
    unexpected: List[str]
    wrong_shapes: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shapes)


def diff_state_dicts(expected: Mapping[str, Any], found: Mapping[str, Any]) -> StateDictDiff:
    """Compare names and shapes of two state dicts (tensors or numpy arrays).

    Args:
        expected: e.g. the model's ``state_dict()``.
        found: e.g. a checkpoint's weights.

    Returns:
        StateDictDiff: falsy when both have the same names and shapes.
    """
    return StateDictDiff(
        missing=[k for k in expected if k not in found],
        unexpected=[k for k in found if k not in expected],
        wrong_shapes=[
            (k, tuple(found[k].shape), tuple(v.shape))
            for k, v in expected.items()
            if k in found and tuple(found[k].shape) != tuple(v.shape)
        ],
    )
