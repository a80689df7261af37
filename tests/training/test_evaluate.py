"""Tests of training/evaluation/evaluate.py: ranks, metrics, history masks, the full-ranking protocol.

Also holds the case builders the sampled-protocol and group tests share (``make_examples``,
``leave_one_out_test``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from core.arrays import IntArray
from training.data.dataset import Examples, SequenceDataset, offsets_from_lengths
from training.evaluation.evaluate import (
    KS,
    evaluate_full,
    history_mask,
    metric_names,
    metrics_from_ranks,
    target_ranks,
)


def make_examples(
    seen: list[list[int]], targets: list[int], num_items: int, max_len: int = 4
) -> Examples:
    """Examples whose history is the last ``max_len`` seen items, left-padded with ``num_items``."""
    histories = np.full((len(seen), max_len), num_items, dtype=np.int64)
    for i, items in enumerate(seen):
        tail = items[-max_len:]
        if tail:
            histories[i, max_len - len(tail) :] = tail
    lengths = np.array([len(s) for s in seen], dtype=np.int64)
    flat = np.array([item for items in seen for item in items], dtype=np.int64)
    return Examples(
        histories=histories,
        targets=np.array(targets, dtype=np.int64),
        users=np.arange(len(seen), dtype=np.int64),
        seen_offsets=offsets_from_lengths(lengths),
        seen_items=flat,
    )


def random_examples(rng: np.random.Generator, n: int, num_items: int, max_seen: int) -> Examples:
    seen = [rng.integers(0, num_items, rng.integers(0, max_seen + 1)).tolist() for _ in range(n)]
    return make_examples(seen, rng.integers(0, num_items, n).tolist(), num_items)


def leave_one_out_test(path: Path) -> tuple[SequenceDataset, Examples]:
    """Yelp (P5 format) as a dataset and its leave-one-out test examples (target = last item)."""
    per_user, item_index = [], {}
    for line in path.read_text().splitlines():
        raw = line.split()[1:]
        per_user.append(
            np.array([item_index.setdefault(t, len(item_index)) for t in raw], np.int64)
        )
    n_items = len(item_index)
    data = SequenceDataset.from_user_items(
        "yelp", list(item_index), [""] * n_items, [str(u) for u in range(len(per_user))], per_user
    )
    ends = data.offsets[1:]
    keep = np.ones(data.num_interactions, dtype=bool)
    keep[ends - 1] = False
    idx = (ends - 1)[:, None] - 50 + np.arange(50)  # (U, 50) positions of the last 50 seen items
    valid = idx >= data.offsets[:-1, None]
    examples = Examples(
        histories=np.where(valid, data.items[idx.clip(min=0)], n_items),
        targets=data.items[ends - 1],
        users=np.arange(data.num_users, dtype=np.int64),
        seen_offsets=data.offsets - np.arange(data.num_users + 1),
        seen_items=data.items[keep],
    )
    return data, examples


# ---- metrics -------------------------------------------------------------------------------------


def test_metrics_on_hand_computed_ranks() -> None:
    m = metrics_from_ranks(np.array([0]))
    assert all(m[f"HR@{k}"] == 1.0 and m[f"NDCG@{k}"] == 1.0 for k in KS)
    m = metrics_from_ranks(np.array([3]))
    assert m["HR@5"] == 1.0
    assert m["NDCG@5"] == pytest.approx(1 / math.log2(5))
    m = metrics_from_ranks(np.array([7, 0, 60]), ks=(5, 10))
    assert m["HR@5"] == pytest.approx(1 / 3)
    assert m["HR@10"] == pytest.approx(2 / 3)
    assert m["NDCG@10"] == pytest.approx((1 / math.log2(9) + 1.0) / 3)
    assert list(m) == metric_names((5, 10)) == ["HR@5", "HR@10", "NDCG@5", "NDCG@10"]


@pytest.mark.parametrize(
    "ranks", [np.array([], dtype=np.int64), np.array([1, -1]), np.zeros((2, 2))]
)
def test_metrics_reject_bad_ranks(ranks: IntArray) -> None:
    with pytest.raises(ValueError, match="ranks"):
        metrics_from_ranks(ranks)


# ---- target_ranks and history masks -------------------------------------------------------------


def brute_force_rank(scores: np.ndarray, target: int, excluded: set[int]) -> int:
    return sum(
        1 for j, s in enumerate(scores) if j not in excluded - {target} and s > scores[target]
    )


@pytest.mark.parametrize("with_mask", [False, True])
def test_target_ranks_match_brute_force(with_mask: bool) -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(40, 15)).astype(np.float32)  # many ties
    targets = rng.integers(0, 15, 40)
    mask = rng.random((40, 15)) < 0.3
    mask[np.arange(0, 40, 3), targets[::3]] = True  # target in the history: never excluded
    got = target_ranks(
        torch.from_numpy(scores),
        torch.from_numpy(targets),
        torch.from_numpy(mask) if with_mask else None,
    )
    expected = [
        brute_force_rank(
            scores[i], int(targets[i]), set(np.flatnonzero(mask[i])) if with_mask else set()
        )
        for i in range(40)
    ]
    assert got.tolist() == expected


def test_masking_only_improves_ranks() -> None:
    rng = np.random.default_rng(1)
    scores, targets = torch.randn(64, 30), torch.from_numpy(rng.integers(0, 30, 64))
    mask = torch.from_numpy(rng.random((64, 30)) < 0.5)
    masked, unmasked = target_ranks(scores, targets, mask), target_ranks(scores, targets)
    assert bool((masked <= unmasked).all())
    assert bool((masked < unmasked).any())


def test_target_ranks_reject_nan_and_bad_targets() -> None:
    scores = torch.zeros(3, 4)
    scores[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"NaN in rows \[1\]"):
        target_ranks(scores, torch.tensor([0, 0, 0]))
    with pytest.raises(ValueError, match="targets must lie"):
        target_ranks(torch.zeros(2, 4), torch.tensor([0, 4]))


def test_history_mask_matches_seen_lists() -> None:
    rng = np.random.default_rng(2)
    examples = random_examples(rng, 12, 9, 6)
    rows = np.array([5, 0, 11, 5])
    for selection in (slice(2, 9), rows):
        mask = history_mask(examples.seen_offsets, examples.seen_items, selection, 9).numpy()
        expected = np.zeros_like(mask)
        for r, i in enumerate(np.arange(12)[selection]):
            expected[r, examples.seen(i)] = True
        np.testing.assert_array_equal(mask, expected)


# ---- full ranking --------------------------------------------------------------------------------


def item_index_scores(histories: IntArray) -> torch.Tensor:
    """Score = item index for every row, so rank(t) = the number of competing items above t."""
    return torch.arange(7, dtype=torch.float32).repeat(len(histories), 1)


def test_evaluate_full_known_answers() -> None:
    examples = make_examples([[6, 5, 6], [], [0, 3], [4, 2, 1]], targets=[4, 6, 3, 2], num_items=7)
    unmasked = evaluate_full(
        item_index_scores, examples, 7, mask_history=False, batch_size=3, ks=(1, 2)
    )
    np.testing.assert_array_equal(unmasked.ranks, [2, 0, 3, 4])
    masked = evaluate_full(
        item_index_scores, examples, 7, mask_history=True, batch_size=3, ks=(1, 2)
    )
    np.testing.assert_array_equal(masked.ranks, [0, 0, 3, 3])  # row 2: seen target 3 stays
    assert masked.metrics["HR@1"] == 0.5
    assert masked.metrics["NDCG@2"] == 0.5
    assert unmasked.metrics["NDCG@2"] == pytest.approx(0.25)
    both = evaluate_full(
        item_index_scores, examples, 7, mask_history="both", batch_size=2, ks=(1, 2)
    )
    np.testing.assert_array_equal(both.unmasked.ranks, unmasked.ranks)
    np.testing.assert_array_equal(both.masked.ranks, masked.ranks)
    assert both.masked.metrics == masked.metrics


def test_evaluate_full_checks_arguments() -> None:
    examples = make_examples([[1], [2]], targets=[0, 1], num_items=7)
    with pytest.raises(ValueError, match="mask_history must be True, False or 'both', got 'yes'"):
        evaluate_full(item_index_scores, examples, 7, mask_history="yes")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"score_fn returned \(2, 6\), expected \(2, 7\)"):
        evaluate_full(lambda h: torch.zeros(len(h), 6), examples, 7, mask_history=False)
