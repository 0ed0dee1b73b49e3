"""Summaries of recorded excitations: class specificity per block and channel importance."""

from itertools import combinations
from typing import Dict, List, Optional, Sequence

import numpy as np

from .recorder import BlockStats

__all__ = ["block_summary", "channel_importance", "class_specificity"]


def class_specificity(
    class_means: np.ndarray, within_std: Optional[np.ndarray] = None
) -> Dict[str, float]:
    """How much a block's mean excitation profile depends on the class.

    Args:
        class_means: (K, C) mean excitation per class and channel.
        within_std: optional (K, C) standard deviation across images within each class.

    Returns:
        ``distance``: the mean, over class pairs, of the root-mean-square difference between the
        two class profiles (``||m_a - m_b||_2 / sqrt(C)``, in the units of the excitation, so
        comparable across blocks of different widths); ``normalized``: ``distance`` divided by
        the RMS within-class standard deviation (how many "image-to-image spreads" apart the
        class profiles are; present if ``within_std`` is given). Both are 0 for identical class
        profiles; with fewer than 2 classes both are NaN.
    """
    means = np.asarray(class_means, dtype=np.float64)
    if means.ndim != 2 or means.shape[0] < 2:
        out = {"distance": float("nan")}
        if within_std is not None:
            out["normalized"] = float("nan")
        return out
    channels = means.shape[1]
    dists = [
        np.linalg.norm(means[a] - means[b]) / np.sqrt(channels)
        for a, b in combinations(range(means.shape[0]), 2)
    ]
    out = {"distance": float(np.mean(dists))}
    if within_std is not None:
        spread = float(np.sqrt(np.mean(np.asarray(within_std, dtype=np.float64) ** 2)))
        out["normalized"] = out["distance"] / spread if spread > 0 else 0.0
    return out


def block_summary(stats: Dict[str, BlockStats], classes: Sequence[str]) -> List[Dict]:
    """Per block (in order): depth index, channels, overall mean/std and class specificity."""
    rows = []
    for depth, (block, st) in enumerate(stats.items()):
        present = [k for k in range(st.num_classes) if st.count[k] > 0]
        spec = class_specificity(
            st.class_means(present), np.stack([st.std(k) for k in present]) if present else None
        )
        rows.append(
            {
                "block": block,
                "depth": depth,
                "channels": int(st.sum.shape[1]),
                "images": int(st.count.sum()),
                "mean_excitation": float(st.mean().mean()),
                "mean_within_class_std": float(
                    np.mean([st.std(k).mean() for k in present]) if present else float("nan")
                ),
                "class_specificity": spec["distance"],
                "class_specificity_normalized": spec.get("normalized", float("nan")),
                "classes": [classes[k] for k in present],
            }
        )
    return rows


def channel_importance(
    stats: Dict[str, BlockStats], mean_threshold: float = 0.05, max_threshold: float = 0.1
) -> Dict[str, Dict]:
    """Channels whose excitation stays near zero over the whole data set (pruning candidates).

    A channel is reported if its mean excitation is below ``mean_threshold`` and its maximum
    (over all recorded images) is below ``max_threshold``: the block then scales it to (almost)
    nothing for every image.

    Returns:
        Per block: ``channels`` (C), ``near_zero`` (the channel indices), ``num_near_zero``,
        ``fraction``, and the overall ``mean``/``max`` of those channels.
    """
    report = {}
    for block, st in stats.items():
        mean, maximum = st.mean(), st.maximum()
        idx = np.flatnonzero((mean < mean_threshold) & (maximum < max_threshold))
        report[block] = {
            "channels": int(mean.shape[0]),
            "near_zero": idx.tolist(),
            "num_near_zero": int(idx.size),
            "fraction": float(idx.size / max(mean.shape[0], 1)),
            "mean": [round(float(v), 6) for v in mean[idx]],
            "max": [round(float(v), 6) for v in maximum[idx]],
        }
    return report
