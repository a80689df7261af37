"""LLM-ESR's long-tail protocol as an evaluation option (``eval.protocol = "long_tail"``; docs/algorithms.md,
"Protocols").

- Leave-one-out; each case's target is ranked against 100 negatives drawn uniformly without replacement
  from the items outside the evaluated history and target (fixed and seeded here; the original redraws them
  on every pass, so its numbers move with the RNG). HR@10 / NDCG@10 with NDCG = 1/log2(rank + 2).
- Validation (model selection) uses the same sampled protocol on the validation cases
  (``training.evaluation.sampled.sampled_evaluator``).
- Groups: tail item = target popularity < t_item, popularity = distinct users per item over the whole
  dataset (train + valid + test); tail user = history length < t_user. Thresholds: Pareto 20/80 by default
  (head = top 20 %), LLM-ESR's per-dataset values with ``eval.group_thresholds = "llmesr"``, or explicit
  ``eval.tail_item_threshold`` / ``eval.tail_user_threshold`` (these win).

Not replicated: the original's ``metric_pop_report`` skips the first test user.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from core.arrays import BoolArray, IntArray
from training.config import EvalConfig, ExperimentConfig
from training.data.dataset import Examples, SequenceDataset, Split
from training.evaluation.evaluate import PairedEvalResult
from training.evaluation.groups import group_masks, metrics_by_group, pareto_thresholds
from training.evaluation.run_metrics import TestRankings, sampled_ranker, semantic_query_metrics
from training.models.recommender import Recommender

__all__ = [
    "LLMESR_THRESHOLDS",
    "long_tail_groups",
    "long_tail_metrics",
    "long_tail_test_metrics",
    "resolve_thresholds",
]

# (tail-item popularity threshold, tail-user length threshold) from LLM-ESR's experiments/*.bash
LLMESR_THRESHOLDS: dict[str, tuple[float, float]] = {
    "yelp": (13.0, 12.0),
    "amazon14-beauty": (4.0, 9.0),
    "fashion": (4.0, 3.0),
}


def resolve_thresholds(
    cfg: EvalConfig,
    dataset: str,
    item_popularity: NDArray[np.number],
    user_lengths: NDArray[np.number],
) -> dict[str, float | str]:
    """The group thresholds of a run and where they come from.

    Args:
        cfg: the eval section (``group_thresholds``, ``head_share``, explicit thresholds).
        dataset: the experiment name, the key of :data:`LLMESR_THRESHOLDS`.
        item_popularity: (N,) distinct users per item.
        user_lengths: (n,) history length of each evaluated case.

    Returns:
        ``{"item": t_item, "user": t_user, "source": "pareto" | "llmesr" | "given"}``.
    """
    if cfg.group_thresholds == "llmesr":
        if dataset not in LLMESR_THRESHOLDS:
            known = ", ".join(sorted(LLMESR_THRESHOLDS))
            raise ValueError(f"no LLM-ESR group thresholds for dataset {dataset!r}; known: {known}")
        item_t, user_t = LLMESR_THRESHOLDS[dataset]
        source = "llmesr"
    else:
        item_t = pareto_thresholds(np.asarray(item_popularity), cfg.head_share)
        user_t = pareto_thresholds(np.asarray(user_lengths), cfg.head_share)
        source = "pareto"
    if cfg.tail_item_threshold is not None or cfg.tail_user_threshold is not None:
        source = "given"
    return {
        "item": item_t if cfg.tail_item_threshold is None else cfg.tail_item_threshold,
        "user": user_t if cfg.tail_user_threshold is None else cfg.tail_user_threshold,
        "source": source,
    }


def long_tail_groups(
    config: ExperimentConfig, dataset: SequenceDataset, test: Examples
) -> tuple[dict[str, BoolArray], dict[str, float | str]]:
    """The head/tail group masks of the test cases at the run's resolved thresholds, and those thresholds.

    Popularity is each item's distinct users over ``dataset`` (train + valid + test); a case's user length is
    its history length.
    """
    popularity = dataset.item_user_counts()  # (N,)
    lengths = np.diff(test.seen_offsets)  # (n,)
    t = resolve_thresholds(config.eval, config.name, popularity, lengths)
    return group_masks(test, popularity, lengths, float(t["item"]), float(t["user"])), t


def long_tail_metrics(
    config: ExperimentConfig,
    dataset: SequenceDataset,
    masks: dict[str, BoolArray],
    thresholds: dict[str, float | str],
    ranks: IntArray,
    paired: PairedEvalResult,
) -> dict[str, Any]:
    """metrics.json of a long-tail run: the sampled ranks are primary, groups at resolved thresholds.

    Args:
        config: the run's config.
        dataset: the dataset the split was made from.
        masks, thresholds: the test cases' groups and their thresholds (:func:`long_tail_groups`).
        ranks: (n,) sampled ranks of the test cases (1 + ``eval.sampled_negatives`` candidates).
        paired: the full-ranking results, kept for reference.
    """
    groups = metrics_by_group(ranks, masks, ks=(10, 20))
    return {
        "protocol": config.data.protocol,
        "eval_protocol": "long_tail",
        "group_thresholds": thresholds,
        "mask_history": config.eval.mask_history,
        "test": groups["overall"],
        "test_sampled": groups["overall"],
        "test_unmasked": paired.unmasked.metrics,
        "test_masked": paired.masked.metrics,
        "groups": groups,
        "groups_sampled": groups,
        "dataset": dataset.stats(),
    }


@torch.no_grad()
def long_tail_test_metrics(
    config: ExperimentConfig,
    dataset: SequenceDataset,
    split: Split,
    model: Recommender,
    device: torch.device,
    rankings: TestRankings,
) -> dict[str, Any]:
    """metrics.json of an ``eval.protocol = "long_tail"`` run (`long_tail_metrics`), plus AlphaFuse's semantic
    query ranked on the sampled candidates (``beta`` chosen on the sampled validation cases)."""
    masks, thresholds = long_tail_groups(config, dataset, split.test)
    metrics = long_tail_metrics(
        config, dataset, masks, thresholds, rankings.sampled.ranks, rankings.paired
    )
    if rankings.with_semantic_query:
        rank = sampled_ranker(config, split, model, device)
        metrics["semantic_query"] = semantic_query_metrics(
            config, rank, masks, rankings.sampled, ks=(10, 20)
        )
    return metrics
