"""Per-epoch metrics (``metrics.jsonl``) and their plot (``curves.png``).

Each line of ``metrics.jsonl`` is one epoch's JSON record (``epoch`` counts from 1). The plot is
drawn with matplotlib's Agg canvas directly, so it never touches the global backend, and written
atomically.
"""

import json
import math
import os
from typing import Any, Dict, List

from ..utils import atomic_save_figure, atomic_write

__all__ = ["append_metrics", "plot_curves", "read_metrics", "truncate_metrics"]


def read_metrics(path: str) -> List[Dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file ([] if it does not exist).

    A line that does not parse (the last line of a run killed while appending) is skipped, as
    in :func:`se_detectron.engine.training_curves.read_metrics`.

    Args:
        path: the file.
    """
    if not os.path.isfile(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def append_metrics(path: str, record: Dict[str, Any]) -> None:
    """Append one record as a JSON line.

    Args:
        path: the ``metrics.jsonl`` file.
        record: JSON-serializable values; NaN/inf floats become null.
    """
    # Strict JSON: a non-finite value (e.g. a diverged val loss) is written as null.
    record = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()
    }
    with open(path, "a") as f:
        f.write(json.dumps(record, allow_nan=False) + "\n")
        f.flush()


def truncate_metrics(path: str, last_epoch: int) -> List[Dict[str, Any]]:
    """Keep only the records of epochs ``<= last_epoch`` (used when resuming).

    A run that stopped after logging an epoch but before checkpointing it would otherwise log that
    epoch twice.

    Args:
        path: the ``metrics.jsonl`` file.
        last_epoch: the last completed epoch of the checkpoint being resumed.

    Returns:
        list: the kept records.
    """
    records = [r for r in read_metrics(path) if r.get("epoch", 0) <= last_epoch]
    if os.path.isfile(path):
        atomic_write(
            path, lambda f: f.writelines(json.dumps(r) + "\n" for r in records), binary=False
        )
    return records


def _series(records, key):
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(r["epoch"])
            ys.append(v)
    return xs, ys


def plot_curves(records: List[Dict[str, Any]], path: str, title: str = "") -> None:
    """Plot loss and top-1 accuracy against the epoch.

    Args:
        records: the ``metrics.jsonl`` records.
        path: the PNG to write (replaced atomically).
        title: figure title, e.g. the architecture.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("val_loss", "val"), ("ema_loss", "val (EMA)")):
        xs, ys = _series(records, key)
        if xs:
            ax_loss.plot(xs, ys, marker="o", markersize=3, label=label)
    for key, label in (
        ("train_top1", "train"),
        ("val_top1", "val"),
        ("val_top5", "val top-5"),
        ("ema_top1", "val (EMA)"),
    ):
        xs, ys = _series(records, key)
        if xs:
            ax_acc.plot(xs, ys, marker="o", markersize=3, label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    if all(y > 0 for line in ax_loss.lines for y in line.get_ydata()) and ax_loss.lines:
        ax_loss.set_yscale("log")  # early BatchNorm statistics can make val loss spike
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_save_figure(fig, path)
