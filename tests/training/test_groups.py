"""Tests of training/evaluation/groups.py: Pareto thresholds, head/tail masks, metrics per group, the table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.training.test_evaluate import leave_one_out_test, make_examples
from training.data.dataset import Examples, SequenceDataset
from training.evaluation.evaluate import metrics_from_ranks
from training.evaluation.groups import (
    format_metrics_table,
    group_masks,
    metrics_by_group,
    pareto_thresholds,
)


@pytest.fixture(scope="module")
def yelp(shared_data: Path) -> tuple[SequenceDataset, Examples]:
    return leave_one_out_test(shared_data / "yelp" / "sequential_data.txt")


def test_pareto_thresholds() -> None:
    values = np.arange(1, 101)
    threshold = pareto_thresholds(values)
    assert threshold == 81.0
    assert int((values >= threshold).sum()) == 20
    assert pareto_thresholds(np.array([1, 1, 1, 5, 5, 9, 9, 9, 9, 9])) == 9.0
    assert pareto_thresholds(np.array([3, 1, 2, 2, 2]), head_share=0.5) == 2.0
    with pytest.raises(ValueError, match="head_share"):
        pareto_thresholds(values, head_share=0.0)


def test_group_masks_partition_and_follow_thresholds() -> None:
    examples = make_examples([[1], [1, 2, 3], [], [4, 5]], targets=[0, 1, 2, 3], num_items=6)
    popularity = np.array([10, 1, 5, 3, 2, 2])
    masks = group_masks(examples, popularity, None, item_threshold=4, user_threshold=2)
    np.testing.assert_array_equal(masks["tail_item"], [False, True, False, True])
    np.testing.assert_array_equal(masks["tail_user"], [True, False, True, False])
    for kind in ("item", "user"):
        assert (masks[f"tail_{kind}"] ^ masks[f"head_{kind}"]).all()
    default = group_masks(examples, popularity, np.array([1, 50, 2, 3]))
    np.testing.assert_array_equal(default["head_user"], [False, True, False, False])
    np.testing.assert_array_equal(default["head_item"], [True, False, True, False])  # top 2: 10, 5
    wider = group_masks(examples, popularity, np.array([1, 50, 2, 3]), head_share=0.5)
    np.testing.assert_array_equal(wider["head_user"], [False, True, False, True])  # top 2: 50, 3
    np.testing.assert_array_equal(wider["head_item"], [True, False, True, True])  # top 3: 10, 5, 3


def test_groups_on_yelp_follow_pareto(yelp: tuple[SequenceDataset, Examples]) -> None:
    data, examples = yelp
    masks = group_masks(examples, data.item_user_counts(), None)
    lengths = np.diff(examples.seen_offsets)
    assert 0.2 <= masks["head_user"].mean() < 0.3
    assert lengths[masks["head_user"]].min() > lengths[masks["tail_user"]].max()
    assert (masks["head_item"] ^ masks["tail_item"]).all()


def test_metrics_by_group_counts_and_empty_groups() -> None:
    ranks = np.array([0, 4, 9, 30])
    masks = {
        "head_item": np.array([True, True, False, False]),
        "tail_item": np.zeros(4, dtype=bool),
    }
    table = metrics_by_group(ranks, masks, ks=(5, 10))
    assert list(table) == ["overall", "head_item", "tail_item"]
    assert table["overall"] == {**metrics_from_ranks(ranks, (5, 10)), "count": 4.0}
    assert table["head_item"]["HR@5"] == 1.0
    assert table["head_item"]["count"] == 2.0
    assert math.isnan(table["tail_item"]["NDCG@10"])
    assert table["tail_item"]["count"] == 0.0
    with pytest.raises(ValueError, match="'bad' mask shape"):
        metrics_by_group(ranks, {"bad": np.ones(3, dtype=bool)})


def test_format_metrics_table() -> None:
    text = format_metrics_table(
        {"overall": {"HR@10": 0.51234, "count": 1200.0}, "tail_user": {"HR@10": 0.25}}
    )
    lines = text.splitlines()
    assert lines[0].split() == ["HR@10", "count"]
    assert lines[1].split() == ["overall", "0.5123", "1200"]
    assert lines[2].split() == ["tail_user", "0.2500", "-"]
    assert len({len(line) for line in lines}) == 1
