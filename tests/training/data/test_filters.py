"""Tests of k-core filtering and truncation, against a plain-Python reference and on real data."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.data.dataset import SequenceDataset
from training.data.filters import kcore_filter, truncate_sequences
from training.data.readers import DataSource, load_dataset

sequences = st.lists(st.lists(st.integers(0, 7), min_size=0, max_size=12), min_size=1, max_size=15)


def build(per_user: list[list[int]], num_items: int = 8) -> SequenceDataset:
    return SequenceDataset.from_user_items(
        "h",
        [f"i{k}" for k in range(num_items)],
        [f"text {k}" for k in range(num_items)],
        [f"u{u}" for u in range(len(per_user))],
        [np.array(seq, dtype=np.int64) for seq in per_user],
    )


def external(ds: SequenceDataset) -> dict[str, list[str]]:
    """user_id -> item_ids, for comparing datasets across re-indexing."""
    return {ds.user_ids[u]: [ds.item_ids[i] for i in ds.sequence(u)] for u in range(ds.num_users)}


def reference_kcore(
    per_user: list[list[int]], k_user: int, k_item: int, iterative: bool
) -> dict[str, list[str]]:
    """Interaction-by-interaction k-core, the way the original scripts do it."""
    inter = [(u, i) for u, seq in enumerate(per_user) for i in seq]
    while True:
        users, items = Counter(u for u, _ in inter), Counter(i for _, i in inter)
        kept = [(u, i) for u, i in inter if users[u] >= k_user and items[i] >= k_item]
        if not iterative or len(kept) == len(inter):
            break
        inter = kept
    result: dict[str, list[str]] = {}
    for u, i in kept:
        result.setdefault(f"u{u}", []).append(f"i{i}")
    return result


@settings(max_examples=60, deadline=None)
@given(
    per_user=sequences, k_user=st.integers(0, 4), k_item=st.integers(0, 4), iterative=st.booleans()
)
def test_kcore_matches_reference(
    per_user: list[list[int]], k_user: int, k_item: int, iterative: bool
) -> None:
    ds = build(per_user)
    result = kcore_filter(ds, k_user, k_item, iterative=iterative)
    assert external(result) == reference_kcore(per_user, k_user, k_item, iterative)
    if iterative:
        assert np.all(result.lengths() >= max(k_user, 1))
        assert np.all(result.item_interaction_counts() >= k_item)
    assert result.item_texts == [f"text {item_id[1:]}" for item_id in result.item_ids]
    assert result.item_ids == sorted(result.item_ids, key=lambda item_id: int(item_id[1:]))


@settings(max_examples=40, deadline=None)
@given(per_user=sequences, max_len=st.integers(1, 6))
def test_truncate_keeps_most_recent(per_user: list[list[int]], max_len: int) -> None:
    result = truncate_sequences(build(per_user), max_len)
    assert result.num_users == len(per_user)
    assert result.num_items == 8
    for u, seq in enumerate(per_user):
        assert result.sequence(u).tolist() == seq[-max_len:]


def test_single_pass_can_leave_users_below_threshold() -> None:
    per_user = [[0, 1, 2], [0, 1], [0, 3]]  # item 3 appears once, so user 2 drops to one item
    single = kcore_filter(build(per_user), 2, 2, iterative=False)
    iterative = kcore_filter(build(per_user), 2, 2)
    assert external(single) == {"u0": ["i0", "i1"], "u1": ["i0", "i1"], "u2": ["i0"]}
    assert external(iterative) == {"u0": ["i0", "i1"], "u1": ["i0", "i1"]}
    assert iterative.item_ids == ["i0", "i1"]


def test_kcore_on_real_data_and_logs(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    beauty = load_dataset(DataSource(format="p5", path=shared_data / "amazon14-beauty"))
    with caplog.at_level(logging.INFO):
        same = kcore_filter(beauty, 5, 5)  # the P5 data is already 5-core
        ten = kcore_filter(beauty, 10, 10)
    assert same.num_interactions == beauty.num_interactions
    assert np.all(ten.lengths() >= 10)
    assert np.all(ten.item_interaction_counts() >= 10)
    assert 0 < ten.num_users < beauty.num_users
    assert "removed 0 of 22363 users, 0 of 12101 items, 0 of 198502 interactions" in caplog.text


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="min_user=-1"):
        kcore_filter(build([[0]]), -1, 2)
    with pytest.raises(ValueError, match="max_len must be >= 1, got 0"):
        truncate_sequences(build([[0]]), 0)
