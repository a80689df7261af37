"""Evaluation protocols: leave-one-out, AlphaFuse's cold-start-user split, and the split the input files give.

Both return a `Split` of `Examples` built without Python loops over users: histories are gathered
with one fancy-indexing step over an (n, L) grid of positions, LEFT-padded with ``pad =
num_items`` so the most recent item sits in column ``L-1``; ``seen_*`` is the CSR of every item
the user had before the target. ``Examples.users`` are rows of the dataset that was split.
"""

from __future__ import annotations

import logging

import numpy as np

from core.arrays import IntArray
from training.data.dataset import (
    Examples,
    SequenceDataset,
    Split,
    concat_ranges,
    offsets_from_lengths,
)

logger = logging.getLogger(__name__)


def window_examples(
    items: IntArray,
    starts: IntArray,
    positions: IntArray,
    users: IntArray,
    max_len: int,
    pad: int,
    with_seen: bool = True,
) -> Examples:
    """Examples whose target is ``items[positions[i]]`` in a sequence that begins at ``starts[i]``.

    Args:
        items: (nnz,) item_idx of all sequences laid end to end.
        starts: (n,) index in ``items`` of the first item of each example's sequence.
        positions: (n,) index in ``items`` of each target (> ``starts`` for a non-empty history).
        users: (n,) user row of each example.
        max_len: L, the history window.
        pad: the padding item_idx (num_items).
        with_seen: build ``seen_*`` (``items[starts[i]:positions[i]]``); False leaves them empty.

    Returns:
        Examples with histories (n, L) = ``items[max(starts, positions - L):positions]``,
        left-padded.
    """
    columns = positions[:, None] - max_len + np.arange(max_len, dtype=np.int64)[None, :]  # (n, L)
    in_sequence = columns >= starts[:, None]  # (n, L)
    histories = np.where(in_sequence, items[np.maximum(columns, 0)] if len(items) else pad, pad)
    seen_lengths = positions - starts if with_seen else np.zeros(len(positions), dtype=np.int64)
    return Examples(
        histories=histories.astype(np.int64),
        targets=items[positions],
        users=users,
        seen_offsets=offsets_from_lengths(seen_lengths),
        seen_items=items[concat_ranges(starts, seen_lengths)],
    )


def prefix_examples(
    ds: SequenceDataset, user_rows: IntArray, max_len: int, with_seen: bool = True
) -> Examples:
    """Every prefix row of every sequence of ``ds``: targets at positions t >= 1 of each user.

    Args:
        ds: the sequences, (U',) users.
        user_rows: (U',) row to report in ``Examples.users`` for each user of ``ds``.
        max_len: L, the history window.
        with_seen: see `window_examples`.

    Returns:
        ``sum(max(len_u - 1, 0))`` examples, user by user, oldest target first.
    """
    rows_per_user = np.maximum(ds.lengths() - 1, 0)
    starts = np.repeat(ds.offsets[:-1], rows_per_user)
    positions = concat_ranges(ds.offsets[:-1] + 1, rows_per_user)
    users = np.repeat(np.asarray(user_rows, dtype=np.int64), rows_per_user)
    return window_examples(ds.items, starts, positions, users, max_len, ds.num_items, with_seen)


def _check_max_len(max_len: int) -> None:
    if max_len < 1:
        raise ValueError(f"history window must be >= 1, got {max_len}")


def leave_one_out(ds: SequenceDataset, max_len: int, train_seen: bool = True) -> Split:
    """Leave-one-out: each user's last item is the test target, the one before it validation.

    Users with >= 3 items give one valid example (target ``seq[-2]``, history ``seq[:-2]``), one
    test example (target ``seq[-1]``, history ``seq[:-1]``) and train on ``seq[:-2]``. Users with
    fewer items have no valid/test example and train on their whole sequence (2 items: one train
    row; 1 item: none). ``train_sequences`` holds every user (same rows as ``ds``) with exactly the
    items the train rows use, so it never contains a valid or test target.

    Args:
        ds: the dataset, (U,) users.
        max_len: L, the history window.
        train_seen: build ``train.seen_*``; they take ``sum(len_u^2)/2`` entries, so False (empty
            CSR) saves memory on long sequences when nothing reads them.

    Returns:
        The split; ``valid``/``test`` users are the rows of ``ds`` with >= 3 items.
    """
    _check_max_len(max_len)
    lengths = ds.lengths()
    train_lengths = np.where(lengths >= 3, lengths - 2, lengths)
    position = np.arange(ds.num_interactions) - np.repeat(ds.offsets[:-1], lengths)  # (nnz,)
    train_sequences = ds.select_interactions(position < np.repeat(train_lengths, lengths))
    every_user = np.arange(ds.num_users, dtype=np.int64)
    train = prefix_examples(train_sequences, every_user, max_len, train_seen)
    evaluated = np.flatnonzero(lengths >= 3)
    starts, ends = ds.offsets[evaluated], ds.offsets[evaluated + 1]
    valid = window_examples(ds.items, starts, ends - 2, evaluated, max_len, ds.num_items)
    test = window_examples(ds.items, starts, ends - 1, evaluated, max_len, ds.num_items)
    logger.info(
        "%s leave-one-out (L=%d): %d train rows, %d valid/test users, %d users train-only",
        ds.name, max_len, len(train), len(evaluated), ds.num_users - len(evaluated),
    )  # fmt: skip
    return Split("leave_one_out", ds.num_items, max_len, train, valid, test, train_sequences)


def _split_users(
    num_users: int, seed: int, ratios: tuple[float, float, float]
) -> tuple[IntArray, IntArray, IntArray]:
    shares = [float(share) for share in ratios]
    if len(shares) != 3 or min(shares) < 0 or not np.isclose(sum(shares), 1.0):
        raise ValueError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
    permutation = np.random.default_rng(seed).permutation(num_users).astype(np.int64)
    n_train = int(np.floor(num_users * shares[0] + 1e-9))
    n_valid = int(np.floor(num_users * shares[1] + 1e-9))
    parts = np.split(permutation, [n_train, n_train + n_valid])
    return np.sort(parts[0]), np.sort(parts[1]), np.sort(parts[2])


def _last_item_examples(ds: SequenceDataset, rows: IntArray, window: int) -> Examples:
    rows = rows[ds.lengths()[rows] >= 2]
    ends = ds.offsets[rows + 1]
    return window_examples(ds.items, ds.offsets[rows], ends - 1, rows, window, ds.num_items)


def cold_start_users(
    ds: SequenceDataset,
    seed: int,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    window: int = 10,
    train_seen: bool = True,
) -> Split:
    """AlphaFuse's cold-start-user split: users shuffled and split 8:1:1, disjoint across parts.

    Users are permuted with ``np.random.default_rng(seed)``; the first ``floor(U * ratios[0])``
    train, the next ``floor(U * ratios[1])`` validate, the rest test. Train rows are every prefix
    row of the training users' full sequences; each valid/test user gives one example (target =
    last item, history = the <= ``window`` items before it; users with < 2 items are skipped).

    Args:
        ds: the dataset, (U,) users.
        seed: seed of the user shuffle.
        ratios: train/valid/test shares of the users, summing to 1.
        window: L, the history window (``Split.max_len``).
        train_seen: build ``train.seen_*`` (see `leave_one_out`).

    Returns:
        The split; ``train_sequences`` holds only the training users (in row order).
    """
    _check_max_len(window)
    train_rows, valid_rows, test_rows = _split_users(ds.num_users, seed, ratios)
    train_sequences = ds.select_users(train_rows)
    train = prefix_examples(train_sequences, train_rows, window, train_seen)
    valid = _last_item_examples(ds, valid_rows, window)
    test = _last_item_examples(ds, test_rows, window)
    logger.info(
        "%s cold-start users (seed %d, window %d): %d/%d/%d users, %d train rows, %d/%d examples",
        ds.name, seed, window, len(train_rows), len(valid_rows), len(test_rows), len(train),
        len(valid), len(test),
    )  # fmt: skip
    return Split("cold_start_users", ds.num_items, window, train, valid, test, train_sequences)


GIVEN_PARTS = ("train", "valid", "test")


def given_split(ds: SequenceDataset, window: int) -> Split:
    """The split the input files carry: each user id is ``<part>:<row>`` with part train, valid or test.

    The ``dreamrec_df`` reader names its users that way (one user per row of ``train/val/test_data.df``: the row's
    history followed by its next item), so a run on those files trains and tests on exactly the files' examples
    instead of re-splitting them. Every user gives one example: target = its last item, history = the <= ``window``
    items before it (users with < 2 items are skipped).

    Raises:
        ValueError: a user id without one of the three parts, naming the first few.
    """
    _check_max_len(window)
    parts = np.array([user.partition(":")[0] for user in ds.user_ids])
    unknown = sorted(set(parts.tolist()) - set(GIVEN_PARTS))
    if unknown or not len(parts):
        raise ValueError(
            f"{ds.name}: protocol 'given' needs user ids '<part>:<row>' with part train, valid or test "
            f"(the dreamrec_df reader's); found parts {unknown[:5]}"
        )
    train_rows, valid_rows, test_rows = (
        np.flatnonzero(parts == part).astype(np.int64) for part in GIVEN_PARTS
    )
    train = _last_item_examples(ds, train_rows, window)
    valid = _last_item_examples(ds, valid_rows, window)
    test = _last_item_examples(ds, test_rows, window)
    logger.info(
        "%s given split (window %d): %d/%d/%d examples",
        ds.name,
        window,
        len(train),
        len(valid),
        len(test),
    )
    return Split("given", ds.num_items, window, train, valid, test, ds.select_users(train_rows))
