"""Dataset filters: k-core filtering and sequence truncation (vectorised over the CSR arrays).

Counts are interactions (a repeated item counts each time), as in the common k-core and LLM-ESR
code. Every filter logs what it removed.
"""

from __future__ import annotations

import logging

import numpy as np

from training.data.dataset import SequenceDataset

logger = logging.getLogger(__name__)


def kcore_filter(
    ds: SequenceDataset, min_user: int, min_item: int, iterative: bool = True
) -> SequenceDataset:
    """Keep users with >= ``min_user`` and items with >= ``min_item`` interactions.

    Iterative (the default) repeats until stable, so every remaining user and item meets its
    threshold. ``iterative=False`` is LLM-ESR's single pass: counts are taken once on the input and
    an interaction is kept when both its user and its item meet their thresholds (survivors may then
    fall below them). Users and items left without interactions are removed (with ``min_item=0``
    the catalogue's cold items stay). Items and users are re-indexed contiguously, keeping their
    relative order.

    Args:
        ds: the dataset, (U,) users and (N,) items.
        min_user: minimum sequence length of a kept user (>= 0).
        min_item: minimum number of interactions of a kept item (>= 0).
        iterative: iterate to a fixed point (True) or make one pass (False).

    Returns:
        The filtered dataset, (U',) users and (N',) items.
    """
    if min_user < 0 or min_item < 0:
        raise ValueError(
            f"k-core thresholds must be >= 0, got min_user={min_user}, min_item={min_item}"
        )
    users = ds.interaction_users()  # (nnz,)
    keep = np.ones(ds.num_interactions, dtype=bool)
    rounds = 0
    while True:
        rounds += 1
        item_counts = np.bincount(ds.items[keep], minlength=ds.num_items)
        user_counts = np.bincount(users[keep], minlength=ds.num_users)
        new_keep = keep & (item_counts[ds.items] >= min_item) & (user_counts[users] >= min_user)
        if not iterative or np.array_equal(new_keep, keep):
            keep = new_keep
            break
        keep = new_keep
    item_counts = np.bincount(ds.items[keep], minlength=ds.num_items)
    filtered = ds.select_interactions(keep).select_items(item_counts >= min(min_item, 1))
    result = filtered.select_users(np.flatnonzero(filtered.lengths() > 0))
    logger.info(
        "%s: %d-core (users) / %d-core (items), %s after %d round(s): removed %d of %d users, "
        "%d of %d items, %d of %d interactions",
        ds.name, min_user, min_item, "iterative" if iterative else "single pass", rounds,
        ds.num_users - result.num_users, ds.num_users, ds.num_items - result.num_items,
        ds.num_items, ds.num_interactions - result.num_interactions, ds.num_interactions,
    )  # fmt: skip
    return result


def truncate_sequences(ds: SequenceDataset, max_len: int) -> SequenceDataset:
    """Keep each user's ``max_len`` most recent interactions; users and items are unchanged.

    Args:
        ds: the dataset.
        max_len: the longest sequence kept (>= 1).

    Returns:
        The dataset with every sequence cut to its last ``max_len`` items.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    lengths = ds.lengths()
    position = np.arange(ds.num_interactions) - np.repeat(ds.offsets[:-1], lengths)  # (nnz,)
    keep = position >= np.repeat(lengths - max_len, lengths)
    result = ds.select_interactions(keep)
    logger.info(
        "%s: truncated %d of %d sequences to their last %d items (%d interactions removed)",
        ds.name, int(np.sum(lengths > max_len)), ds.num_users, max_len,
        ds.num_interactions - result.num_interactions,
    )  # fmt: skip
    return result
