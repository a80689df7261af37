"""LLM-ESR head/tail groups of evaluation cases, metrics per group and the fixed-width table.

Cases are split by their target's popularity (tail/head item) and their history length (tail/head
user) at Pareto 20/80 thresholds unless given; metrics come from :mod:`training.evaluation.evaluate`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from core.arrays import IntArray
from training.data.dataset import Examples
from training.evaluation.evaluate import KS, metric_names, metrics_from_ranks

__all__ = ["format_metrics_table", "group_masks", "metrics_by_group", "pareto_thresholds"]

logger = logging.getLogger(__name__)


def pareto_thresholds(values: NDArray[np.number], head_share: float = 0.2) -> float:
    """The threshold t such that ``values >= t`` is the top ``head_share`` of values (Pareto 20/80).

    t is the smallest value among the top ceil(head_share * n); values tied with it are head too.

    Example:
        >>> pareto_thresholds(np.arange(1, 101))
        81.0
    """
    values = np.asarray(values)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    if not 0.0 < head_share <= 1.0:
        raise ValueError(f"head_share must be in (0, 1], got {head_share}")
    top = math.ceil(head_share * values.size)
    return float(np.partition(values, values.size - top)[values.size - top])


def group_masks(
    examples: Examples,
    item_popularity: NDArray[np.number],
    user_lengths: NDArray[np.number] | None = None,
    item_threshold: float | None = None,
    user_threshold: float | None = None,
    *,
    head_share: float = 0.2,
) -> dict[str, NDArray[np.bool_]]:
    """LLM-ESR head/tail groups of the cases; tail = value < threshold, head otherwise.

    Args:
        examples: the cases (n of them).
        item_popularity: (N,) distinct users per item; a case's value is its target's popularity.
        user_lengths: (n,) history length per case; None uses ``np.diff(examples.seen_offsets)``.
        item_threshold: None uses :func:`pareto_thresholds` over all N items.
        user_threshold: None uses :func:`pareto_thresholds` over the n cases.
        head_share: the head share for thresholds computed here.

    Returns:
        (n,) bool masks "tail_item", "head_item", "tail_user", "head_user".
    """
    n = len(examples.targets)
    lengths = np.diff(examples.seen_offsets) if user_lengths is None else np.asarray(user_lengths)
    if lengths.shape != (n,):
        raise ValueError(f"user_lengths must have shape ({n},), got {lengths.shape}")
    item_t = item_threshold
    if item_t is None:
        item_t = pareto_thresholds(np.asarray(item_popularity), head_share)
    user_t = pareto_thresholds(lengths, head_share) if user_threshold is None else user_threshold
    tail_item = np.asarray(item_popularity)[examples.targets] < item_t
    tail_user = lengths < user_t
    logger.info("group thresholds: item popularity %s, user length %s", item_t, user_t)
    return {
        "tail_item": tail_item,
        "head_item": ~tail_item,
        "tail_user": tail_user,
        "head_user": ~tail_user,
    }


def metrics_by_group(
    ranks: IntArray, masks: dict[str, NDArray[np.bool_]], ks: Sequence[int] = KS
) -> dict[str, dict[str, float]]:
    """Metrics and case count ("count") overall and per group; an empty group gets NaN metrics."""
    groups = {"overall": np.ones(len(ranks), dtype=bool), **masks}
    table: dict[str, dict[str, float]] = {}
    for name, mask in groups.items():
        if mask.shape != ranks.shape:
            raise ValueError(f"group {name!r} mask shape {mask.shape} != ranks shape {ranks.shape}")
        count = int(mask.sum())
        metrics = (
            metrics_from_ranks(ranks[mask], ks)
            if count
            else dict.fromkeys(metric_names(ks), math.nan)
        )
        table[name] = {**metrics, "count": float(count)}
    return table


def format_metrics_table(rows: dict[str, dict[str, float]]) -> str:
    """A fixed-width text table: a line per row name, a column per metric (first-seen key order).

    "count" is printed as an integer, other values with 4 decimals, missing ones as "-".
    """
    columns = list(dict.fromkeys(key for metrics in rows.values() for key in metrics))
    cells = [["", *columns]]
    cells += [
        [name, *(_cell(col, metrics.get(col)) for col in columns)] for name, metrics in rows.items()
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(
            [
                row[0].ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
            ]
        )
        for row in cells
    ]
    return "\n".join(line.rstrip() for line in lines)


def _cell(column: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if column == "count" else f"{value:.4f}"
