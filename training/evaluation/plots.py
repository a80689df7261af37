"""PNG figures of a training run: the validation curve and metrics per head/tail group.

Figures are drawn on the Agg canvas directly (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``),
so nothing touches pyplot's global state or the process-wide backend. Files are written
atomically: a temporary file in the target's folder, then an atomic rename (``Path.replace``).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_group_metrics", "plot_validation_curve"]

logger = logging.getLogger(__name__)

GROUP_ORDER = ("overall", "head_item", "tail_item", "head_user", "tail_user")


def _save_atomically(fig: Figure, path: Path) -> None:
    """Render ``fig`` as PNG to ``path`` via a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format="png", dpi=120)
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.info("wrote %s", path)


def plot_validation_curve(history: Sequence[Mapping[str, float]], metric: str, path: Path) -> None:
    """Training loss (left axis) and a validation metric (right axis) against the epoch.

    Args:
        history: one mapping per epoch with an "epoch" key, optionally "loss" and ``metric`` (epochs
            without validation may omit the metric).
        metric: the key to plot on the right axis, e.g. "valid_NDCG@10".
        path: the PNG file to write.
    """
    if not history or any("epoch" not in row for row in history):
        raise ValueError(
            f"history must be non-empty with an 'epoch' in every row, got {list(history)[:3]}"
        )
    loss = [(row["epoch"], row["loss"]) for row in history if "loss" in row]
    valid = [(row["epoch"], row[metric]) for row in history if metric in row]
    if not valid:
        raise ValueError(f"metric {metric!r} is in no history row; keys: {sorted(history[0])}")
    fig = Figure(figsize=(7, 4))
    loss_ax = fig.add_subplot()
    loss_ax.set_xlabel("epoch")
    if loss:
        loss_ax.plot(*zip(*loss, strict=True), color="tab:blue", label="loss")
    loss_ax.set_ylabel("training loss", color="tab:blue")
    metric_ax = loss_ax.twinx()
    metric_ax.plot(*zip(*valid, strict=True), color="tab:orange", marker="o", markersize=3)
    metric_ax.set_ylabel(metric, color="tab:orange")
    best_epoch, best_value = max(valid, key=lambda pair: pair[1])
    metric_ax.axvline(best_epoch, color="tab:gray", linestyle="--", linewidth=1)
    loss_ax.set_title(f"best {metric} = {best_value:.4f} at epoch {best_epoch:g}")
    fig.tight_layout()
    _save_atomically(fig, path)


def plot_group_metrics(groups: Mapping[str, Mapping[str, float]], metric: str, path: Path) -> None:
    """Bar chart of one metric per group (overall first, then head/tail pairs), with case counts.

    Args:
        groups: group name -> metrics, as returned by ``training.evaluation.groups.metrics_by_group``; a
            "count" entry, when present, is printed under the group name.
        metric: the metric to show, e.g. "NDCG@10".
        path: the PNG file to write.
    """
    missing = [name for name, metrics in groups.items() if metric not in metrics]
    if not groups or missing:
        raise ValueError(f"metric {metric!r} missing for groups {missing} (groups: {list(groups)})")
    names = sorted(
        groups, key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g)
    )
    values = [groups[name][metric] for name in names]
    labels = [
        f"{name}\n(n={groups[name]['count']:.0f})" if "count" in groups[name] else name
        for name in names
    ]
    fig = Figure(figsize=(1.4 * len(names) + 2, 4))
    ax = fig.add_subplot()
    bars = ax.bar(
        range(len(names)), [0.0 if math.isnan(v) else v for v in values], color="tab:blue"
    )
    ax.bar_label(bars, labels=["n/a" if math.isnan(v) else f"{v:.4f}" for v in values], fontsize=8)
    ax.set_xticks(range(len(names)), labels, fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by group")
    ax.margins(y=0.15)
    fig.tight_layout()
    _save_atomically(fig, path)
