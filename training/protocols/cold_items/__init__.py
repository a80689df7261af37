"""The ``cold_items`` protocol: the split (`split`), its metrics, the no-training baselines (`baselines`) and
AlphaFuse's offline remedies (`remedies`)."""

from training.protocols.cold_items.split import (
    COLD_KS,
    HELD_OUT_FILE,
    ColdItemSplit,
    cold_item_split,
    evaluate_cold_items,
    first_interaction_times,
    held_out_ids,
    loss_exclusion,
    make_cold_item_split,
    negative_pool,
    pick_cold_items,
    warm_rows,
)

__all__ = [
    "COLD_KS",
    "HELD_OUT_FILE",
    "ColdItemSplit",
    "cold_item_split",
    "evaluate_cold_items",
    "first_interaction_times",
    "held_out_ids",
    "loss_exclusion",
    "make_cold_item_split",
    "negative_pool",
    "pick_cold_items",
    "warm_rows",
]
