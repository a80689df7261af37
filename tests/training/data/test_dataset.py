"""Tests of the in-memory dataset contract: SequenceDataset, Examples, format_stats."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.dataset import (
    Examples,
    SequenceDataset,
    TrainingRules,
    concat_ranges,
    format_stats,
)


def small() -> SequenceDataset:
    """3 users, 4 items; user 1 repeats item 2; item 3 has no interactions and no text."""
    return SequenceDataset.from_user_items(
        "small",
        item_ids=["a", "b", "c", "d"],
        item_texts=["A", "B", "C", ""],
        user_ids=["u0", "u1", "u2"],
        per_user=[np.array([0, 1]), np.array([2, 0, 2, 1]), np.array([1])],
    )


def test_sizes_sequences_and_counts() -> None:
    ds = small()
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (3, 4, 7)
    np.testing.assert_array_equal(ds.offsets, [0, 2, 6, 7])
    np.testing.assert_array_equal(ds.sequence(1), [2, 0, 2, 1])
    np.testing.assert_array_equal(ds.lengths(), [2, 4, 1])
    np.testing.assert_array_equal(ds.interaction_users(), [0, 0, 1, 1, 1, 1, 2])
    np.testing.assert_array_equal(ds.item_interaction_counts(), [2, 3, 2, 0])
    np.testing.assert_array_equal(ds.item_user_counts(), [2, 3, 1, 0])


def test_stats_values_and_table() -> None:
    stats = small().stats()
    assert stats["users"] == 3
    assert stats["interactions"] == 7
    assert stats["density"] == pytest.approx(7 / 12)
    assert stats["median_seq_len"] == 2
    assert stats["max_seq_len"] == 4
    assert stats["repeat_interactions"] == 1
    assert stats["items_without_interactions"] == 1
    assert stats["items_without_text"] == 1
    table = format_stats({"interactions": 198502, "density": 0.000733})
    assert "198,502" in table
    assert "0.000733" in table
    assert len(table.splitlines()) == 2


def test_from_interactions_groups_users_stably() -> None:
    ds = SequenceDataset.from_interactions(
        "t", ["a", "b", "c"], ["", "", ""], ["x", "y"],
        user_idx=np.array([1, 0, 1, 0, 1]), item_idx=np.array([2, 0, 1, 1, 0]),
    )  # fmt: skip
    np.testing.assert_array_equal(ds.sequence(0), [0, 1])
    np.testing.assert_array_equal(ds.sequence(1), [2, 1, 0])


def test_select_users_interactions_items() -> None:
    ds = small()
    picked = ds.select_users(np.array([2, 0]))
    assert picked.user_ids == ["u2", "u0"]
    np.testing.assert_array_equal(picked.items, [1, 0, 1])
    dropped = ds.select_interactions(ds.items != 2)
    np.testing.assert_array_equal(dropped.lengths(), [2, 2, 1])
    reindexed = ds.select_items(np.array([True, False, True, True]))
    assert reindexed.item_ids == ["a", "c", "d"]
    assert reindexed.item_texts == ["A", "C", ""]
    np.testing.assert_array_equal(reindexed.sequence(1), [1, 0, 1])
    np.testing.assert_array_equal(reindexed.sequence(2), [])


def test_concat_ranges() -> None:
    np.testing.assert_array_equal(
        concat_ranges(np.array([5, 0, 9]), np.array([2, 3, 0])), [5, 6, 0, 1, 2]
    )
    assert len(concat_ranges(np.zeros(0, np.int64), np.zeros(0, np.int64))) == 0


@pytest.mark.parametrize(
    ("offsets", "items", "message"),
    [
        ([0, 2], [0, 1, 2], "end at nnz=3"),
        ([0, 1, 3], [0, 1, 2], r"shape \(3,\)"),
        ([0, 3], [0, 1, 7], r"out of range \[0, 3\).*max 7"),
    ],
)
def test_invalid_csr_is_rejected(offsets: list[int], items: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SequenceDataset(
            "bad", ["a", "b", "c"], ["", "", ""], ["u"], np.array(offsets), np.array(items)
        )


def test_mismatched_texts_and_dtype_are_rejected() -> None:
    with pytest.raises(ValueError, match="2 item_texts for 3 item_ids"):
        SequenceDataset(
            "bad", ["a", "b", "c"], ["", ""], [], np.zeros(1, np.int64), np.zeros(0, np.int64)
        )
    with pytest.raises(TypeError, match="int64"):
        SequenceDataset("bad", ["a"], [""], [], np.zeros(1, np.int32), np.zeros(0, np.int64))


def test_examples_shapes_are_checked() -> None:
    examples = Examples(
        histories=np.array([[3, 0], [0, 1]]),
        targets=np.array([1, 2]),
        users=np.array([0, 0]),
        seen_offsets=np.array([0, 1, 3]),
        seen_items=np.array([0, 0, 1]),
    )
    assert len(examples) == 2
    np.testing.assert_array_equal(examples.seen(1), [0, 1])
    with pytest.raises(ValueError, match="seen_offsets"):
        Examples(
            examples.histories,
            examples.targets,
            examples.users,
            np.array([0, 1]),
            np.zeros(1, np.int64),
        )


def test_training_rules_hold_rows_out_of_every_training_step() -> None:
    rules = TrainingRules.holding_out(np.array([3, 1], dtype=np.int64), 5)
    assert rules.fit_rows is not None
    assert rules.fit_rows.tolist() == [0, 2, 4]
    assert rules.negative_pool is not None
    assert rules.negative_pool.tolist() == [0, 2, 4]
    assert rules.loss_exclusion is not None
    assert rules.loss_exclusion.tolist() == [False, True, False, True, False]
    assert rules.held_out is not None
    assert rules.held_out.tolist() == [1, 3]
    assert rules.held_out_ids(["a", "b", "c", "d", "e"]) == ["b", "d"]
    free = TrainingRules()  # what every split carries unless its protocol says otherwise
    assert (free.fit_rows, free.negative_pool, free.loss_exclusion, free.held_out) == (None,) * 4
    assert free.held_out_ids(["a", "b"]) is None
