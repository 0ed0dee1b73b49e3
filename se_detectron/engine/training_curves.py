"""Training curves (losses and box / mask AP) from Detectron2's ``metrics.json``."""

import json
from typing import Dict, List, Tuple

from ..utils import atomic_save_figure

__all__ = ["plot_training_curves", "read_metrics"]

LOSS_KEYS = (
    "total_loss",
    "loss_cls",
    "loss_box_reg",
    "loss_mask",
    "loss_keypoint",
    "loss_rpn_cls",
    "loss_rpn_loc",
)
AP_KEYS = ("AP", "AP50", "AP75")
# metrics.json prefix -> label of the AP curves
AP_TASKS = {"bbox": "box", "segm": "mask", "keypoints": "keypoint"}


def read_metrics(metrics_file: str) -> List[Dict]:
    """The records of a Detectron2 ``metrics.json`` (one JSON object per line).

    Lines that do not parse (e.g. a line cut by a killed run) are skipped. When a run was resumed,
    records for iterations that were redone replace the earlier ones.
    """
    by_key: Dict[Tuple[int, bool], Dict] = {}
    with open(metrics_file, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "iteration" in record:
                is_eval = any(k.split("/")[0] in AP_TASKS for k in record if "/" in k)
                by_key.setdefault((record["iteration"], is_eval), {}).update(record)
    return [by_key[k] for k in sorted(by_key)]


def plot_training_curves(metrics_file: str, out_file: str) -> str:
    """Plot the loss curves and the AP curves (box, and mask / keypoint) of a run into one PNG.

    Args:
        metrics_file: Detectron2's ``metrics.json`` of the run.
        out_file: the PNG to write (atomically).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_file)
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key in LOSS_KEYS:
        points = [(r["iteration"], r[key]) for r in records if key in r]
        if points:
            ax_loss.plot(*zip(*points), label=key, linewidth=1.5 if key == "total_loss" else 1)
    ax_loss.set(xlabel="iteration", ylabel="loss", title="training losses")
    ax_loss.set_yscale("log")
    if ax_loss.lines:
        ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)

    for (task, label), style in zip(AP_TASKS.items(), ("-", "--", ":")):
        for key in AP_KEYS:
            name = f"{task}/{key}"
            points = [(r["iteration"], r[name]) for r in records if name in r]
            if points:
                ax_ap.plot(*zip(*points), style, marker="o", label=f"{label} {key}")
    ax_ap.set(xlabel="iteration", ylabel="AP (%)", title="validation AP", ylim=(0, 100))
    if ax_ap.lines:
        ax_ap.legend(fontsize=8)
    else:  # no evaluation yet (or TEST.EVAL_PERIOD 0: only at the end)
        ax_ap.text(
            0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax_ap.transAxes
        )
    ax_ap.grid(alpha=0.3)
    fig.tight_layout()
    atomic_save_figure(fig, out_file, dpi=100)
    plt.close(fig)
    return out_file
