"""Figures of recorded excitations, in the style of Figs. 6 and 7 of the SE paper."""

from typing import Dict, List, Optional, Sequence

import numpy as np

from se_detectron.utils import atomic_save_figure

from .recorder import BlockStats

__all__ = [
    "block_stage",
    "default_plot_blocks",
    "plot_class_profiles",
    "plot_spread",
    "plot_specificity",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def block_stage(block: str) -> str:
    """The stage of a block name: its first ``resN`` component (``bottom_up.res3.1`` -> res3)."""
    parts = block.split(".")
    return next((p for p in parts if p.startswith("res")), parts[0])


def default_plot_blocks(blocks: Sequence[str]) -> List[str]:
    """The paper's choice: for each stage, the last block and, for res4/res5, the first one too."""
    stages: Dict[str, List[str]] = {}
    for block in blocks:
        stages.setdefault(block_stage(block), []).append(block)
    chosen = []
    for stage, names in stages.items():
        if stage in ("res4", "res5") and len(names) > 1:
            chosen.append(names[0])
        chosen.append(names[-1])
    return chosen


def _block_panels(plt, stats: Dict[str, BlockStats], blocks: Sequence[str], max_channels: int):
    """A figure with one panel per block; yields ``(ax, stats, channel_count)`` per block."""
    cols = min(len(blocks), 3)
    rows = (len(blocks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    for ax in list(axes.flat)[len(blocks) :]:
        ax.axis("off")
    panels = []
    for ax, block in zip(axes.flat, blocks):
        st = stats[block]
        c = min(max_channels, st.sum.shape[1])
        ax.set_title(f"{block} (channels 0-{c - 1} of {st.sum.shape[1]})", fontsize=10)
        ax.set_xlabel("channel index")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        panels.append((ax, st, c))
    return fig, axes, panels


def _save_block_panels(plt, fig, axes, path: str, title: str) -> None:
    """The first panel's legend below the grid, the title above, written atomically."""
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 11), fontsize=9)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_class_profiles(
    stats: Dict[str, BlockStats],
    blocks: Sequence[str],
    classes: Sequence[str],
    path: str,
    max_channels: int = 64,
    title: str = "",
) -> None:
    """Fig. 6: per block, the mean excitation of each channel for each class and overall.

    Args:
        stats: recorded statistics.
        blocks: blocks to draw (one panel each).
        classes: class names (index = class id); classes without images are skipped.
        path: output PNG.
        max_channels: draw channels ``0..max_channels-1`` (as the paper) so lines stay legible.
        title: figure title.
    """
    plt = _pyplot()
    fig, axes, panels = _block_panels(plt, stats, blocks, max_channels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for ax, st, c in panels:
        x = np.arange(c)
        for k, name in enumerate(classes):
            if st.count[k] > 0:
                ax.plot(x, st.mean(k)[:c], lw=1.0, color=cmap(k % cmap.N), label=name)
        ax.plot(x, st.mean()[:c], lw=2.0, color="black", ls="--", label="all")
        ax.set_ylabel("mean excitation")
    title = title or "Mean excitation per channel and class (cf. SE paper Fig. 6)"
    _save_block_panels(plt, fig, axes, path, title)


def plot_spread(
    stats: Dict[str, BlockStats],
    blocks: Sequence[str],
    classes: Sequence[str],
    path: str,
    cls: Optional[int] = None,
    max_channels: int = 64,
) -> None:
    """Fig. 7: per block, mean ± std of the excitation across images of one class, per channel.

    Args:
        cls: the class drawn (default: the class with most images).
        Others: as :func:`plot_class_profiles`.
    """
    plt = _pyplot()
    first = stats[blocks[0]]
    if cls is None:
        cls = int(np.argmax(first.count[:-1]))
    fig, axes, panels = _block_panels(plt, stats, blocks, max_channels)
    for ax, st, c in panels:
        x = np.arange(c)
        mean, std = st.mean(cls)[:c], st.std(cls)[:c]
        ax.fill_between(x, mean - std, mean + std, color="tab:blue", alpha=0.3, label="mean ± std")
        ax.plot(x, mean, color="tab:blue", lw=1.2, label="mean")
        ax.plot(x, st.max[cls, :c], color="tab:red", lw=0.6, ls=":", label="max")
        ax.plot(x, st.min[cls, :c], color="tab:green", lw=0.6, ls=":", label="min")
        ax.set_ylabel("excitation")
    title = (
        f"Spread of the excitation across the {int(first.count[cls])} images of class "
        f"'{classes[cls]}' (cf. SE paper Fig. 7)"
    )
    _save_block_panels(plt, fig, axes, path, title)


def plot_specificity(summary: List[Dict], path: str, title: str = "") -> None:
    """Class specificity of each block against depth (both measures of ``block_summary``)."""
    plt = _pyplot()
    names = [row["block"] for row in summary]
    x = np.arange(len(names))
    fig, ax1 = plt.subplots(figsize=(max(8, 0.42 * len(names) + 2), 4.8))
    ax1.plot(x, [r["class_specificity"] for r in summary], "o-", color="tab:blue")
    ax1.set_ylabel("mean pairwise RMS distance\nbetween class profiles", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(x, [r["class_specificity_normalized"] for r in summary], "s--", color="tab:orange")
    ax2.set_ylabel("... / RMS within-class std", color="tab:orange")
    stages = [block_stage(n) for n in names]
    for i in range(1, len(names)):
        if stages[i] != stages[i - 1]:
            ax1.axvline(i - 0.5, color="grey", lw=0.8, ls=":")
    ax1.set_xticks(x)
    ax1.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax1.set_xlabel("SE block (stem to head)")
    ax1.grid(alpha=0.3)
    ax1.set_title(title or "Class specificity of the excitations per block")
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)
