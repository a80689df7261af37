"""The ``cold_items`` protocol: the split (`split`), its figures (`metrics`), the no-training baselines
(`baselines`) and AlphaFuse's offline remedies (`remedies`)."""

from training.protocols.cold_items.metrics import COLD_KS, ScoreFn, evaluate_cold_items
from training.protocols.cold_items.split import (
    ColdItemSplit,
    cold_item_split,
    first_interaction_times,
    make_cold_item_split,
    pick_cold_items,
)

__all__ = [
    "COLD_KS",
    "ColdItemSplit",
    "ScoreFn",
    "cold_item_split",
    "evaluate_cold_items",
    "first_interaction_times",
    "make_cold_item_split",
    "pick_cold_items",
]
