"""Tests of training/evaluation/sampled.py: seeded candidate sets (exclusions, uniformity) and their ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.arrays import IntArray
from tests.training.test_evaluate import leave_one_out_test, make_examples
from training.data.dataset import Examples, SequenceDataset
from training.evaluation.sampled import evaluate_sampled, sample_candidates


@pytest.fixture(scope="module")
def yelp(shared_data: Path) -> tuple[SequenceDataset, Examples]:
    return leave_one_out_test(shared_data / "yelp" / "sequential_data.txt")


def test_sample_candidates_properties_on_yelp(yelp: tuple[SequenceDataset, Examples]) -> None:
    data, examples = yelp
    candidates = sample_candidates(examples, data.num_items, 100, seed=0)
    assert candidates.shape == (len(examples), 101)
    np.testing.assert_array_equal(candidates[:, 0], examples.targets)
    negatives = candidates[:, 1:]
    assert ((negatives >= 0) & (negatives < data.num_items)).all()
    assert (negatives != examples.targets[:, None]).all()
    ordered = np.sort(negatives, axis=1)
    assert (np.diff(ordered, axis=1) != 0).all()
    n_seen = np.diff(examples.seen_offsets)
    seen_keys = np.repeat(np.arange(len(examples)), n_seen) * data.num_items + examples.seen_items
    negative_keys = np.arange(len(examples))[:, None] * data.num_items + negatives
    assert not np.isin(negative_keys, seen_keys).any()
    np.testing.assert_array_equal(
        candidates, sample_candidates(examples, data.num_items, 100, seed=0)
    )
    other = sample_candidates(examples, data.num_items, 100, seed=1)
    assert (other[:, 1:] != negatives).mean() > 0.9


def test_sample_candidates_can_exclude_whole_sequences() -> None:
    data = SequenceDataset.from_user_items(
        "toy",
        [str(i) for i in range(12)],
        [""] * 12,
        ["a", "b"],
        [np.array([0, 1, 2, 3]), np.array([4, 5])],
    )
    valid = make_examples([[0, 1], [4]], targets=[2, 5], num_items=12)  # user 0's test item is 3
    for seed in range(20):
        negatives = sample_candidates(valid, 12, 8, seed=seed, exclude_sequences=data)[:, 1:]
        assert set(negatives[0].tolist()) == set(range(4, 12))
        assert not {4, 5} & set(negatives[1].tolist())
    with pytest.raises(ValueError, match=r"examples \[0\] have fewer than 9 allowed"):
        sample_candidates(valid, 12, 9, exclude_sequences=data)


def test_sample_candidates_are_uniform_even_when_redrawn() -> None:
    """15 of 19 allowed items: rejection often falls short and rows are redrawn; still uniform."""
    n = 4000
    examples = make_examples([list(range(10))] * n, targets=[10] * n, num_items=30)
    negatives = sample_candidates(examples, 30, 15, seed=3)[:, 1:]
    assert not np.isin(negatives, np.arange(11)).any()
    counts = np.bincount(negatives.ravel(), minlength=30)[11:]
    assert counts.sum() == n * 15
    np.testing.assert_allclose(counts / n, 15 / 19, atol=0.03)


def test_evaluate_sampled_ranks_column_zero() -> None:
    examples = make_examples([[1], [2], [3]], targets=[5, 0, 9], num_items=10)
    candidates = np.array([[5, 1, 7, 8], [0, 3, 4, 6], [9, 2, 3, 4]])

    def by_item(histories: IntArray, cands: IntArray) -> torch.Tensor:
        return torch.from_numpy(cands).float()

    result = evaluate_sampled(by_item, examples, candidates, batch_size=2, ks=(1, 10))
    np.testing.assert_array_equal(result.ranks, [2, 3, 0])
    assert result.metrics["HR@1"] == pytest.approx(1 / 3)
    assert result.metrics["HR@10"] == 1.0
