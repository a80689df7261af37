"""The in-memory dataset every reader produces and every split consumes.

`SequenceDataset` holds each user's time-ordered item sequence in CSR form (``offsets``/``items``)
next to the item catalogue (``item_ids``/``item_texts``); item rows ``0..N-1`` are the ``item_idx``
used everywhere in training. `Examples` and `Split` are what the protocols in
`training.data.splits` return: left-padded history windows (pad index ``N``, most recent item in
column ``L-1``), targets, and the CSR of all items seen before each target. A `Split` also carries the
`TrainingRules` of its protocol (by default: no restriction).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from core.arrays import BoolArray, IntArray

logger = logging.getLogger(__name__)


def concat_ranges(starts: IntArray, lengths: IntArray) -> IntArray:
    """Indices of the ranges ``[starts[i], starts[i] + lengths[i])`` laid end to end.

    Args:
        starts: (n,) first index of each range.
        lengths: (n,) length of each range (>= 0).

    Returns:
        (lengths.sum(),) int64 indices, e.g. ``concat_ranges([5, 0], [2, 3]) == [5, 6, 0, 1, 2]``.
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    ends = np.cumsum(lengths)
    range_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    within = (
        np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64) - (ends - lengths)[range_of]
    )
    return starts[range_of] + within


def offsets_from_lengths(lengths: IntArray) -> IntArray:
    """CSR offsets ``(n+1,)`` from slice lengths ``(n,)``."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


@dataclass(frozen=True, eq=False)
class SequenceDataset:
    """Users' time-ordered item sequences plus the item catalogue. Items are rows 0..N-1 (item_idx).

    Attributes:
        name: dataset name, used in logs and run directories.
        item_ids: (N,) external item id of each row.
        item_texts: (N,) text of each item; ``""`` when the item has no text.
        user_ids: (U,) external user ids.
        offsets: (U+1,) CSR offsets: user u's items are ``items[offsets[u]:offsets[u+1]]``.
        items: (nnz,) item_idx, each user's slice in time order (oldest first).
    """

    name: str
    item_ids: list[str]
    item_texts: list[str]
    user_ids: list[str]
    offsets: IntArray
    items: IntArray

    def __post_init__(self) -> None:
        n_items, n_users = len(self.item_ids), len(self.user_ids)
        if len(self.item_texts) != n_items:
            raise ValueError(
                f"{self.name}: {len(self.item_texts)} item_texts for {n_items} item_ids"
            )
        if self.offsets.dtype != np.int64 or self.items.dtype != np.int64:
            raise TypeError(
                f"offsets/items must be int64, got {self.offsets.dtype}/{self.items.dtype}"
            )
        if self.offsets.shape != (n_users + 1,) or self.offsets[0] != 0:
            raise ValueError(
                f"{self.name}: offsets shape {self.offsets.shape} (first {self.offsets[:1]}) "
                f"must be ({n_users + 1},) starting at 0"
            )
        if self.offsets[-1] != len(self.items) or np.any(np.diff(self.offsets) < 0):
            raise ValueError(
                f"{self.name}: offsets must be non-decreasing and end at nnz={len(self.items)}, "
                f"last offset {self.offsets[-1]}"
            )
        if len(self.items) and (self.items.min() < 0 or self.items.max() >= n_items):
            raise ValueError(
                f"{self.name}: item_idx out of range [0, {n_items}): "
                f"min {self.items.min()}, max {self.items.max()}"
            )

    @classmethod
    def from_user_items(
        cls,
        name: str,
        item_ids: list[str],
        item_texts: list[str],
        user_ids: list[str],
        per_user: list[IntArray],
    ) -> SequenceDataset:
        """Build from one time-ordered item_idx array per user (``per_user[u]`` = user u's)."""
        if len(per_user) != len(user_ids):
            raise ValueError(f"{len(per_user)} sequences for {len(user_ids)} user_ids")
        lengths = np.array([len(seq) for seq in per_user], dtype=np.int64)
        items = np.concatenate(
            [np.asarray(s, dtype=np.int64) for s in per_user] or [np.zeros(0, np.int64)]
        )
        return cls(name, item_ids, item_texts, user_ids, offsets_from_lengths(lengths), items)

    @classmethod
    def from_interactions(
        cls,
        name: str,
        item_ids: list[str],
        item_texts: list[str],
        user_ids: list[str],
        user_idx: IntArray,
        item_idx: IntArray,
    ) -> SequenceDataset:
        """Build from parallel interaction arrays in time order (grouped by user here, stably).

        Args:
            user_idx: (nnz,) user row of each interaction, in ``[0, len(user_ids))``.
            item_idx: (nnz,) item row of each interaction, in ``[0, len(item_ids))``.
        """
        user_idx = np.asarray(user_idx, dtype=np.int64)
        if user_idx.shape != np.shape(item_idx):
            raise ValueError(
                f"user_idx shape {user_idx.shape} != item_idx shape {np.shape(item_idx)}"
            )
        if len(user_idx) and (user_idx.min() < 0 or user_idx.max() >= len(user_ids)):
            raise ValueError(f"user_idx out of range [0, {len(user_ids)}): max {user_idx.max()}")
        order = np.argsort(user_idx, kind="stable")
        lengths = np.bincount(user_idx, minlength=len(user_ids)).astype(np.int64)
        items = np.asarray(item_idx, dtype=np.int64)[order]
        return cls(name, item_ids, item_texts, user_ids, offsets_from_lengths(lengths), items)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_interactions(self) -> int:
        return len(self.items)

    def sequence(self, u: int) -> IntArray:
        """(len_u,) item_idx of user row ``u``, oldest first."""
        if not 0 <= u < self.num_users:
            raise ValueError(f"user row {u} out of range [0, {self.num_users})")
        return self.items[self.offsets[u] : self.offsets[u + 1]]

    def lengths(self) -> IntArray:
        """(U,) sequence length of each user."""
        return np.diff(self.offsets)

    def interaction_users(self) -> IntArray:
        """(nnz,) user row of each interaction."""
        return np.repeat(np.arange(self.num_users, dtype=np.int64), self.lengths())

    def item_interaction_counts(self) -> IntArray:
        """(N,) number of interactions per item (repeats counted)."""
        return np.bincount(self.items, minlength=self.num_items).astype(np.int64)

    def item_user_counts(self) -> IntArray:
        """(N,) number of DISTINCT users per item."""
        pairs = np.sort(self.interaction_users() * self.num_items + self.items)  # (nnz,) int64 keys
        distinct = pairs[np.diff(pairs, prepend=-1) != 0]  # keys >= 0; np.unique is slower here
        counts = np.bincount(distinct % max(self.num_items, 1), minlength=self.num_items)
        return counts.astype(np.int64)

    def stats(self) -> dict[str, float | int]:
        """Size, density, sequence-length summary and catalogue coverage."""
        lengths = self.lengths()
        nnz = self.num_interactions
        has_users = self.num_users > 0
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": nnz,
            "density": nnz / max(self.num_users * self.num_items, 1),
            "avg_seq_len": float(lengths.mean()) if has_users else 0.0,
            "median_seq_len": float(np.median(lengths)) if has_users else 0.0,
            "min_seq_len": int(lengths.min()) if has_users else 0,
            "max_seq_len": int(lengths.max()) if has_users else 0,
            "repeat_interactions": nnz - int(self.item_user_counts().sum()),
            "items_without_interactions": int(np.sum(self.item_interaction_counts() == 0)),
            "items_without_text": sum(1 for text in self.item_texts if not text),
        }

    def select_users(self, rows: IntArray) -> SequenceDataset:
        """The dataset restricted to user ``rows`` (in that order); the catalogue is unchanged."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths()[rows]
        items = self.items[concat_ranges(self.offsets[rows], lengths)]
        user_ids = [self.user_ids[u] for u in rows.tolist()]
        return SequenceDataset(
            self.name,
            self.item_ids,
            self.item_texts,
            user_ids,
            offsets_from_lengths(lengths),
            items,
        )

    def select_interactions(self, keep: BoolArray) -> SequenceDataset:
        """Drop interactions where ``keep`` (nnz,) is False; users (maybe emptied), items stay."""
        if keep.shape != self.items.shape:
            raise ValueError(f"keep mask shape {keep.shape} != items shape {self.items.shape}")
        lengths = np.bincount(self.interaction_users()[keep], minlength=self.num_users).astype(
            np.int64
        )
        return SequenceDataset(
            self.name,
            self.item_ids,
            self.item_texts,
            self.user_ids,
            offsets_from_lengths(lengths),
            self.items[keep],
        )

    def select_items(self, keep: BoolArray) -> SequenceDataset:
        """Keep catalogue rows where ``keep`` (N,) is True (and their interactions); re-index."""
        if keep.shape != (self.num_items,):
            raise ValueError(f"keep mask shape {keep.shape} != ({self.num_items},)")
        pruned = self.select_interactions(keep[self.items])
        new_idx = np.cumsum(keep, dtype=np.int64) - 1
        kept = np.flatnonzero(keep).tolist()
        return SequenceDataset(
            self.name,
            [self.item_ids[i] for i in kept],
            [self.item_texts[i] for i in kept],
            self.user_ids,
            pruned.offsets,
            new_idx[pruned.items],
        )


@dataclass(frozen=True, eq=False)
class Examples:
    """Prediction examples of one split part.

    Attributes:
        histories: (n, L) item_idx, LEFT-padded with pad = num_items (most recent item at
            column L-1).
        targets: (n,) item_idx to predict.
        users: (n,) row of each example's user in the dataset the split was made from.
        seen_offsets: (n+1,) CSR over ``seen_items``.
        seen_items: all items the user interacted with before the target (not only the last L).
    """

    histories: IntArray
    targets: IntArray
    users: IntArray
    seen_offsets: IntArray
    seen_items: IntArray

    def __post_init__(self) -> None:
        n = len(self.targets)
        if self.histories.ndim != 2 or len(self.histories) != n or self.users.shape != (n,):
            raise ValueError(
                f"histories {self.histories.shape}, targets {self.targets.shape} and users "
                f"{self.users.shape} disagree on the number of examples"
            )
        if self.seen_offsets.shape != (n + 1,) or self.seen_offsets[-1] != len(self.seen_items):
            raise ValueError(
                f"seen_offsets shape {self.seen_offsets.shape} must be ({n + 1},) ending at "
                f"{len(self.seen_items)}"
            )

    def __len__(self) -> int:
        return len(self.targets)

    def seen(self, i: int) -> IntArray:
        """Every item_idx the user of example ``i`` had before its target, oldest first."""
        return self.seen_items[self.seen_offsets[i] : self.seen_offsets[i + 1]]


@dataclass(frozen=True, eq=False)
class TrainingRules:
    """Which item rows a split lets the trainer touch; the default (every field None) restricts nothing.

    A protocol that holds items out of training (``cold_items``) fills these in; the basis fit, the model builder,
    the training loop and the run directory read them without asking which protocol made the split.

    Attributes:
        fit_rows: (M,) item rows whose text may fit the AlphaFuse basis / the LLMInit projection; None: every row.
        negative_pool: (P,) item rows that sampled negatives are drawn from; None: all N items.
        loss_exclusion: (N,) True for the items the full-softmax loss leaves out; None: none.
        held_out: (C,) sorted item rows held out of training, which the exporter leaves out of the artifact;
            None: none.
    """

    fit_rows: IntArray | None = None
    negative_pool: IntArray | None = None
    loss_exclusion: BoolArray | None = None
    held_out: IntArray | None = None

    @classmethod
    def holding_out(cls, rows: IntArray, num_items: int) -> TrainingRules:
        """The rules of a split whose item ``rows`` receive no training at all: their text fits nothing, they are
        never negatives, the full softmax leaves them out, and the exporter drops them."""
        held_out = np.zeros(num_items, dtype=bool)
        held_out[rows] = True
        warm = np.flatnonzero(~held_out).astype(np.int64)  # (N - C,)
        return cls(
            fit_rows=warm,
            negative_pool=warm,
            loss_exclusion=held_out,
            held_out=np.sort(np.asarray(rows, dtype=np.int64)),
        )

    def held_out_ids(self, item_ids: list[str]) -> list[str] | None:
        """External ids of the held-out rows (``item_ids`` gives every row's); None when nothing is held out."""
        if self.held_out is None:
            return None
        return [item_ids[i] for i in self.held_out.tolist()]


@dataclass(frozen=True, eq=False)
class Split:
    """A protocol's train/valid/test examples plus the sequences the trainer may see.

    Attributes:
        protocol: ``"leave_one_out"``, ``"cold_start_users"``, ``"cold_items"`` or ``"given"``.
        num_items: N (pad index == N).
        max_len: L, the history window.
        train: every prefix row of ``train_sequences`` (target at position t >= 1, history =
            the <= L items before it).
        valid: validation examples.
        test: test examples.
        train_sequences: what the trainer may see (popularity, seen-in-train masks, LLM-ESR).
        rules: which item rows the trainer may fit, draw as negatives, train and export.
    """

    protocol: str
    num_items: int
    max_len: int
    train: Examples
    valid: Examples
    test: Examples
    train_sequences: SequenceDataset
    rules: TrainingRules = field(default_factory=TrainingRules, kw_only=True)


def format_stats(stats: dict[str, float | int]) -> str:
    """A two-column text table of ``SequenceDataset.stats()`` (ints with thousands separators)."""
    width = max((len(key) for key in stats), default=0)
    lines = []
    for key, value in stats.items():
        shown = f"{value:,}" if isinstance(value, int) else f"{value:.4g}"
        lines.append(f"{key:<{width}}  {shown:>12}")
    return "\n".join(lines)
