"""Tests of the split protocols: hand-checked small cases and invariants on real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.data.dataset import Examples, SequenceDataset
from training.data.readers import DataSource, load_dataset, write_dreamrec_df
from training.data.splits import cold_start_users, given_split, leave_one_out

PAD = 9


def toy() -> SequenceDataset:
    """9 items (pad 9); users of lengths 5, 2, 1 and 3."""
    per_user = [[0, 1, 2, 3, 4], [5, 6], [7], [8, 0, 8]]
    return SequenceDataset.from_user_items(
        "toy", [str(k) for k in range(9)], [""] * 9, ["a", "b", "c", "d"],
        [np.array(seq) for seq in per_user],
    )  # fmt: skip


@pytest.fixture(scope="session")
def beauty(shared_data: Path) -> SequenceDataset:
    return load_dataset(DataSource(format="p5", path=shared_data / "amazon14-beauty"))


def check_examples(ds: SequenceDataset, examples: Examples, max_len: int) -> None:
    """History = the <= L items right before the target, left-padded; seen = all items before it."""
    pad = ds.num_items
    real = examples.histories != pad  # (n, L)
    assert np.all(np.diff(real.astype(np.int8), axis=1) >= 0), "padding must be on the left only"
    has_history = real[:, -1]
    seen_lengths = np.diff(examples.seen_offsets)
    np.testing.assert_array_equal(has_history, seen_lengths > 0)
    np.testing.assert_array_equal(real.sum(axis=1), np.minimum(seen_lengths, max_len))
    last_seen = examples.seen_items[examples.seen_offsets[1:][has_history] - 1]
    np.testing.assert_array_equal(examples.histories[has_history, -1], last_seen)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(examples), size=min(len(examples), 300), replace=False):
        sequence = ds.sequence(int(examples.users[i])).tolist()
        seen = examples.seen(int(i)).tolist()
        assert sequence[: len(seen) + 1] == [*seen, examples.targets[i]]
        history = [item for item in examples.histories[i] if item != pad]
        assert history == seen[-max_len:]


def test_leave_one_out_small_by_hand() -> None:
    split = leave_one_out(toy(), max_len=3)
    assert (split.protocol, split.num_items, split.max_len) == ("leave_one_out", 9, 3)
    np.testing.assert_array_equal(split.train.targets, [1, 2, 6])  # user d trains on [8]: no row
    np.testing.assert_array_equal(split.train.users, [0, 0, 1])
    np.testing.assert_array_equal(
        split.train.histories, [[PAD, PAD, 0], [PAD, 0, 1], [PAD, PAD, 5]]
    )
    np.testing.assert_array_equal(split.valid.users, [0, 3])
    np.testing.assert_array_equal(split.valid.targets, [3, 0])
    np.testing.assert_array_equal(split.valid.histories, [[0, 1, 2], [PAD, PAD, 8]])
    np.testing.assert_array_equal(split.test.targets, [4, 8])
    np.testing.assert_array_equal(split.test.histories, [[1, 2, 3], [PAD, 8, 0]])
    np.testing.assert_array_equal(split.test.seen(0), [0, 1, 2, 3])
    assert [split.train_sequences.sequence(u).tolist() for u in range(4)] == [
        [0, 1, 2],
        [5, 6],
        [7],
        [8],
    ]


def test_leave_one_out_real_data_invariants(beauty: SequenceDataset) -> None:
    split = leave_one_out(beauty, max_len=20)
    lengths = beauty.lengths()
    assert len(split.valid) == len(split.test) == beauty.num_users  # 5-core: every user has >= 3
    assert len(split.train) == int(np.sum(lengths - 3))
    np.testing.assert_array_equal(split.train_sequences.lengths(), lengths - 2)
    for u in (0, 1, 500, 22362):  # train never holds the valid/test positions of the same user
        np.testing.assert_array_equal(split.train_sequences.sequence(u), beauty.sequence(u)[:-2])
    train_positions = np.diff(split.train.seen_offsets)  # target index within the user's sequence
    assert np.all(train_positions <= lengths[split.train.users] - 3)
    np.testing.assert_array_equal(np.diff(split.valid.seen_offsets), lengths - 2)
    np.testing.assert_array_equal(np.diff(split.test.seen_offsets), lengths - 1)
    for examples in (split.train, split.valid, split.test):
        check_examples(beauty, examples, 20)


def test_leave_one_out_without_train_seen() -> None:
    split = leave_one_out(toy(), max_len=3, train_seen=False)
    assert len(split.train.seen_items) == 0
    np.testing.assert_array_equal(split.train.seen_offsets, np.zeros(4))
    np.testing.assert_array_equal(split.train.targets, [1, 2, 6])


def test_cold_start_small_by_hand() -> None:
    ds = toy()
    for seed in range(6):
        split = cold_start_users(ds, seed=seed, ratios=(0.5, 0.25, 0.25), window=2)
        train_rows = [ds.user_ids.index(u) for u in split.train_sequences.user_ids]
        held_out = [*split.valid.users.tolist(), *split.test.users.tolist()]
        assert len(train_rows) == 2
        assert len(set(train_rows) | set(held_out)) == len(train_rows) + len(held_out)
        assert set(range(4)) - set(train_rows) - set(held_out) <= {2}  # user c (1 item) is skipped
        assert set(split.train.users.tolist()) <= set(train_rows)
        for part in (split.valid, split.test):
            for i in range(len(part)):
                sequence = ds.sequence(int(part.users[i])).tolist()
                assert part.targets[i] == sequence[-1]
                assert [item for item in part.histories[i] if item != PAD] == sequence[-3:-1]


def test_cold_start_beauty(beauty: SequenceDataset) -> None:
    split = cold_start_users(beauty, seed=22)
    assert (split.protocol, split.max_len) == ("cold_start_users", 10)
    train_rows = np.unique(split.train.users)
    assert len(train_rows) == split.train_sequences.num_users == 17890  # floor(22363 * 0.8)
    assert (len(split.valid), len(split.test)) == (2236, 2237)
    assert 139_000 < len(split.train) < 143_000  # the reference trainer had 141,378
    parts = [train_rows, split.valid.users, split.test.users]
    assert len(np.unique(np.concatenate(parts))) == beauty.num_users  # disjoint and complete
    assert split.train_sequences.user_ids == [beauty.user_ids[u] for u in train_rows]
    ends = beauty.offsets[split.test.users + 1]
    np.testing.assert_array_equal(split.test.targets, beauty.items[ends - 1])
    for examples in (split.train, split.valid, split.test):
        check_examples(beauty, examples, 10)
    again = cold_start_users(beauty, seed=22)
    np.testing.assert_array_equal(again.test.users, split.test.users)
    other = cold_start_users(beauty, seed=23)
    assert not np.array_equal(other.test.users, split.test.users)


def test_cold_start_sports_split_sizes(shared_data: Path) -> None:
    sports = load_dataset(DataSource(format="p5", path=shared_data / "amazon14-sports"))
    split = cold_start_users(sports, seed=1)
    assert (split.train_sequences.num_users, len(split.valid), len(split.test)) == (
        28478,
        3559,
        3561,
    )


def test_invalid_arguments() -> None:
    with pytest.raises(
        ValueError,
        match=r"ratios must be three non-negative numbers summing to 1, got \(0.8, 0.1\)",
    ):
        cold_start_users(toy(), seed=0, ratios=(0.8, 0.1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="history window must be >= 1, got 0"):
        leave_one_out(toy(), max_len=0)


def test_a_split_written_to_df_files_reads_back_as_the_given_split(
    beauty: SequenceDataset, tmp_path: Path
) -> None:
    split = cold_start_users(beauty, seed=0, window=10, train_seen=False)
    emb = np.random.default_rng(0).normal(size=(beauty.num_items, 8)).astype(np.float32)
    folder = tmp_path / "beauty-df"
    write_dreamrec_df(split, beauty.item_ids, folder, emb, "minilm")
    ds = load_dataset(DataSource(format="dreamrec_df", path=folder))
    given = given_split(ds, window=10)
    assert (given.protocol, given.num_items, given.max_len) == ("given", split.num_items, 10)
    for written, read in [
        (split.train, given.train),
        (split.valid, given.valid),
        (split.test, given.test),
    ]:
        np.testing.assert_array_equal(read.histories, written.histories)
        np.testing.assert_array_equal(read.targets, written.targets)
    assert given.train_sequences.num_users == len(split.train)
    np.testing.assert_array_equal(np.load(folder / "item_embeddings.npy"), emb)
    np.testing.assert_array_equal(pd.read_pickle(folder / "minilm_emb.pickle"), emb)
    assert json.loads((folder / "item_ids.json").read_text()) == beauty.item_ids
    with pytest.raises(FileExistsError):
        write_dreamrec_df(split, beauty.item_ids, folder)


def test_the_given_split_needs_part_names_in_the_user_ids() -> None:
    with pytest.raises(ValueError, match=r"needs user ids '<part>:<row>'.*\['a', 'b', 'c', 'd'\]"):
        given_split(toy(), window=3)
