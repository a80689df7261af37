"""The ``cold_items`` protocol: a share of the catalogue is held out of training and measured as new items.

Protocol (issue 7, ``data.protocol = "cold_items"``):

1. Cold items: ``round(cold_share * M)`` of the M items that have at least one interaction, chosen with
   ``np.random.default_rng(split_seed)``: ``random`` draws them uniformly; ``newest`` takes the items whose first
   interaction is latest (timestamps from the interaction file; ties broken by the seeded shuffle). Data without
   timestamps (P5, DreamRec layouts) cannot use ``newest``.
2. Every interaction with a cold item is deleted from every sequence; ordinary leave-one-out then runs on these warm
   sequences: training, validation and the *warm* test cases (each user's last warm item) never contain a cold item.
   The split's `TrainingRules` (``split.rules``) carry the cold rows to the trainer: they are left out of sampled
   negatives and of the full softmax (``negative_pool``, ``loss_exclusion``), the AlphaFuse basis / LLMInit
   projection is fitted on the warm items' text only (``fit_rows``), and the exporter drops them (``held_out``).
   So a cold item receives no gradient at all.
3. *Cold* test cases: for every user whose full sequence has a cold item at position p >= 1 (p = the position of the
   user's first cold item), one case with history ``seq[:p]`` (the last L items as the window, all of them masked)
   and target ``seq[p]``.
4. Both case sets are ranked against the whole catalogue (warm + cold, N items), history masked
   (`training.protocols.cold_items.metrics.evaluate_cold_items`).

The offline AlphaFuse remedies and a trained model's cold-item metrics (`cold_item_metrics`) are in
`training.protocols.cold_items.remedies`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from core.arrays import Float64Array, IntArray
from training.data.dataset import Examples, SequenceDataset, Split, TrainingRules
from training.data.readers import DataSource
from training.data.splits import leave_one_out, window_examples

__all__ = [
    "ColdItemSplit",
    "cold_item_split",
    "first_interaction_times",
    "make_cold_item_split",
    "pick_cold_items",
]

logger = logging.getLogger(__name__)

ColdPick = Literal["random", "newest"]


@dataclass(frozen=True, eq=False)
class ColdItemSplit(Split):
    """A leave-one-out split of the warm sequences plus the held-out items and their test cases.

    Attributes:
        cold_items: (C,) sorted item rows held out of training (never in ``train``/``valid``/``test``).
        cold_test: one case per user with a cold item at position >= 1 (module docstring, step 3).
    """

    cold_items: IntArray
    cold_test: Examples

    def __post_init__(self) -> None:
        # what the trainer may touch: the cold rows get no fit, no negatives, no loss, no export
        object.__setattr__(
            self, "rules", TrainingRules.holding_out(self.cold_items, self.num_items)
        )

    def cold_mask(self) -> NDArray[np.bool_]:
        """(N,) True for the held-out items."""
        mask = np.zeros(self.num_items, dtype=bool)
        mask[self.cold_items] = True
        return mask


def first_interaction_times(source: DataSource, ds: SequenceDataset) -> Float64Array:
    """(N,) earliest timestamp of each catalogue row of ``ds`` in the source's interaction file (NaN: none).

    Reads the interactions again (``SequenceDataset`` keeps only each user's order). Supported: ``recbole`` (a
    ``timestamp`` field in ``.inter``) and ``canonical`` (a ``timestamp`` column); ``min_rating`` is applied as
    the reader does.

    Raises:
        ValueError: the format or the file has no timestamps.
    """
    if source.format == "recbole":
        path = source.path
        inter = path if path.is_file() else path / f"{path.name}.inter"
        if not inter.is_file():
            found = sorted(path.glob("*.inter")) if path.is_dir() else []
            if len(found) != 1:
                raise ValueError(f"{path}: expected one <name>.inter file for the timestamps")
            inter = found[0]
        frame = pd.read_csv(inter, sep="\t", dtype=str)
        frame.columns = [str(c).partition(":")[0] for c in frame.columns]
    elif source.format == "canonical":
        suffix = source.path.suffix.lower()
        if suffix == ".parquet":
            frame = pd.read_parquet(source.path).astype(str)
        else:
            frame = pd.read_csv(source.path, sep="\t" if suffix == ".tsv" else ",", dtype=str)
        inter = source.path
    else:
        raise ValueError(
            f"cold_pick='newest' needs interaction timestamps; format {source.format!r} keeps only each "
            "user's order (use cold_pick='random')"
        )
    if "timestamp" not in frame.columns:
        raise ValueError(f"{inter}: no timestamp column, so cold_pick='newest' is impossible")
    if source.min_rating is not None and "rating" in frame.columns:
        frame = frame[frame["rating"].astype(float) >= source.min_rating]
    stamps = pd.to_numeric(frame["timestamp"], errors="raise").to_numpy(np.float64)
    row_of = {item: row for row, item in enumerate(ds.item_ids)}
    rows = frame["item_id"].map(row_of)
    known = rows.notna().to_numpy()
    times = np.full(ds.num_items, np.inf)
    np.minimum.at(times, rows[known].to_numpy(np.int64), stamps[known])
    times[np.isinf(times)] = np.nan
    return times


def pick_cold_items(
    ds: SequenceDataset,
    share: float,
    pick: ColdPick,
    seed: int,
    first_times: Float64Array | None = None,
) -> IntArray:
    """The held-out item rows: ``round(share * M)`` of the M items with at least one interaction.

    Args:
        ds: the (filtered) dataset.
        share: fraction in (0, 1).
        pick: ``random`` (uniform, seeded) or ``newest`` (latest first interaction; seeded tie-break).
        seed: the seed of the draw / the tie-break.
        first_times: (N,) first-interaction time per row; required for ``newest``.

    Returns:
        (C,) sorted item rows, C >= 1.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"cold_share must be in (0, 1), got {share}")
    candidates = np.flatnonzero(ds.item_interaction_counts() > 0).astype(np.int64)  # (M,)
    count = round(share * len(candidates))
    if count < 1 or count >= len(candidates):
        raise ValueError(
            f"{ds.name}: cold_share={share} of {len(candidates)} interacted items leaves {count} cold items"
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(candidates)  # (M,)
    if pick == "random":
        chosen = shuffled[:count]
    elif pick == "newest":
        if first_times is None or first_times.shape != (ds.num_items,):
            raise ValueError("cold_pick='newest' needs first_times of shape (N,)")
        times = first_times[shuffled]
        if np.isnan(times).any():
            raise ValueError(
                f"{ds.name}: {int(np.isnan(times).sum())} interacted items have no timestamp"
            )
        chosen = shuffled[
            np.argsort(-times, kind="stable")[:count]
        ]  # latest first, shuffle breaks ties
    else:
        raise ValueError(f"cold_pick must be 'random' or 'newest', got {pick!r}")
    return np.sort(chosen).astype(np.int64)


def cold_item_split(ds: SequenceDataset, cold_items: IntArray, max_len: int) -> ColdItemSplit:
    """Delete ``cold_items`` from every sequence, leave-one-out on the rest, and build the cold test cases.

    Args:
        ds: the dataset, (U,) users, N items (the catalogue stays whole: cold rows keep their index).
        cold_items: (C,) item rows to hold out.
        max_len: L, the history window.
    """
    is_cold = np.zeros(ds.num_items, dtype=bool)
    is_cold[cold_items] = True
    warm = ds.select_interactions(~is_cold[ds.items])
    base = leave_one_out(warm, max_len, train_seen=False)
    cold_positions = np.flatnonzero(is_cold[ds.items])  # (nnz_cold,) ascending
    users_of = ds.interaction_users()[cold_positions]
    users, first = np.unique(users_of, return_index=True)  # each user's first cold interaction
    positions = cold_positions[first]
    starts = ds.offsets[users]
    keep = positions > starts  # cold item at position >= 1
    cold_test = window_examples(
        ds.items, starts[keep], positions[keep], users[keep].astype(np.int64), max_len, ds.num_items
    )
    logger.info(
        "%s cold items: %d of %d items held out (%d interactions); %d cold / %d warm test cases",
        ds.name, len(cold_items), ds.num_items, len(cold_positions), len(cold_test), len(base.test),
    )  # fmt: skip
    return ColdItemSplit(
        "cold_items",
        ds.num_items,
        max_len,
        base.train,
        base.valid,
        base.test,
        base.train_sequences,
        np.sort(np.asarray(cold_items, dtype=np.int64)),
        cold_test,
    )


def make_cold_item_split(
    ds: SequenceDataset,
    source: DataSource,
    *,
    share: float,
    pick: ColdPick,
    seed: int,
    max_len: int,
    tuning: bool = False,
) -> tuple[SequenceDataset, ColdItemSplit]:
    """`pick_cold_items` (timestamps read once, for ``newest``) then `cold_item_split`.

    ``tuning`` (``data.cold_tuning``): first remove the items these settings would hold out, rows and
    interactions (the catalogue before they existed), then split what is left with the same settings
    (``newest``: the newest of what is left, a time-shifted split), so settings can be chosen without ever
    seeing the test's cold items.

    Returns:
        the dataset that was split (``tuning``: without the test's cold items) and its split.
    """
    times = first_interaction_times(source, ds) if pick == "newest" else None
    if tuning:
        keep = np.ones(ds.num_items, dtype=bool)
        keep[pick_cold_items(ds, share, pick, seed, times)] = False
        logger.info(
            "%s tuning split: %d test cold items removed from the catalogue", ds.name, (~keep).sum()
        )
        ds = ds.select_items(keep)
        times = None if times is None else times[keep]  # an item's first time is its own
    return ds, cold_item_split(ds, pick_cold_items(ds, share, pick, seed, times), max_len)
