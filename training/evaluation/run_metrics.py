"""A trained model's metrics: validation (full ranking) and the parts of a run's one test pass.

`test_rankings` ranks the test cases once by full ranking (history kept and masked) and once by the sampled
protocol; `standard_test_metrics` turns them into metrics.json for the full-ranking protocols, beside the figures
the split's protocol adds (``training.protocols.protocol_metrics``) or, without those, AlphaFuse's semantic query
with ``beta`` chosen on validation (`semantic_query_metrics`). LLM-ESR's long-tail protocol assembles its own
(``training.protocols.long_tail.long_tail_test_metrics``) from the same pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.arrays import BoolArray
from training.config import ExperimentConfig
from training.data.dataset import Examples, SequenceDataset, Split
from training.evaluation import evaluate as ev
from training.evaluation.groups import group_masks, metrics_by_group
from training.evaluation.sampled import PARTS, Part, sampled_evaluator
from training.items.embeddings import has_semantic_query
from training.models.recommender import Recommender, table_scorer
from training.models.semantic_query import LAST_N, semantic_query_scorer, semantic_query_vectors

__all__ = [
    "BetaRanker",
    "TestRankings",
    "full_metrics",
    "full_ranker",
    "sampled_ranker",
    "semantic_query_metrics",
    "standard_test_metrics",
    "test_rankings",
]


@torch.no_grad()
def full_metrics(
    model: Recommender,
    examples: Examples,
    num_items: int,
    mask_history: bool,
    batch_size: int,
) -> dict[str, float]:
    """Full-ranking metrics of ``examples`` (validation), history masked or not; the model's device is its table's."""
    model.eval()
    result = ev.evaluate_full(
        table_scorer(model),
        examples,
        num_items,
        mask_history=mask_history,
        batch_size=batch_size,
    )
    return result.metrics


BetaRanker = Callable[[float, Part], ev.EvalResult]  # (beta, "valid" | "test") -> ranking


@torch.no_grad()
def semantic_query_metrics(
    config: ExperimentConfig,
    rank: BetaRanker,
    masks: dict[str, BoolArray],
    plain_test: ev.EvalResult,
    ks: Sequence[int] = ev.KS,
) -> dict[str, Any]:
    """AlphaFuse served with its semantic query (`training.models.semantic_query`): ``beta`` chosen on the validation
    cases by ``train.select_metric`` among 0 and ``eval.semantic_query_betas`` (ties: the smaller), then the test
    cases ranked once at that ``beta``, with the head/tail groups at ``ks``.

    ``rank(beta, part)`` ranks the ``"valid"`` or ``"test"`` cases under the run's protocol (full ranking, or
    the long tail's sampled candidates). ``beta`` 0 is the model itself, whose test ranking ``plain_test`` the
    caller already has.
    """
    metric = config.train.select_metric
    betas = [0.0, *config.eval.semantic_query_betas]
    valid = [rank(beta, "valid").metrics[metric] for beta in betas]
    beta = betas[int(np.argmax(valid))]  # first maximum: the smaller beta on a tie
    test = rank(beta, "test") if beta else plain_test
    return {
        "beta": beta,
        "last_n": LAST_N,
        "valid": [{"beta": b, metric: v} for b, v in zip(betas, valid, strict=True)],
        "test": test.metrics,
        "groups": metrics_by_group(test.ranks, masks, ks),
    }


def full_ranker(config: ExperimentConfig, split: Split, model: Recommender) -> BetaRanker:
    """Full ranking of the validation or test cases, history masked as ``eval.mask_history`` says."""
    cfg = config.eval

    def rank(beta: float, part: Part) -> ev.EvalResult:
        scorer = semantic_query_scorer(model, beta) if beta else table_scorer(model)
        return ev.evaluate_full(
            scorer,
            split.valid if part == "valid" else split.test,
            split.num_items,
            mask_history=cfg.mask_history,
            batch_size=cfg.batch_size,
        )

    return rank


def sampled_ranker(
    config: ExperimentConfig, split: Split, model: Recommender, device: torch.device
) -> BetaRanker:
    """The sampled protocol's ranking (1 + ``eval.sampled_negatives`` fixed candidates) of a run's part."""
    evaluators = {part: sampled_evaluator(config, split, part) for part in PARTS}

    def rank(beta: float, part: Part) -> ev.EvalResult:
        def queries(histories: torch.Tensor) -> torch.Tensor:
            return semantic_query_vectors(model, histories, beta)

        return evaluators[part](
            model, device, config.eval.batch_size, (10, 20), user_vectors=queries if beta else None
        )

    return rank


@dataclass(frozen=True, eq=False)
class TestRankings:
    """The test cases ranked once per protocol: full ranking (history kept and masked) and sampled 1 + K.

    Attributes:
        paired: the full rankings, history items kept and excluded.
        sampled: the sampled protocol's ranking (K = ``eval.sampled_negatives``), HR/NDCG at 10 and 20.
        with_semantic_query: the model is AlphaFuse with a null space and ``eval.semantic_query_betas`` is not
            empty, so the semantic query is evaluated too.
    """

    paired: ev.PairedEvalResult
    sampled: ev.EvalResult
    with_semantic_query: bool


@torch.no_grad()
def test_rankings(
    config: ExperimentConfig, split: Split, model: Recommender, device: torch.device
) -> TestRankings:
    """Rank the test cases of ``split`` (full ranking and sampled); the model goes to eval mode."""
    model.eval()
    cfg = config.eval
    paired = ev.evaluate_full(
        table_scorer(model),
        split.test,
        split.num_items,
        mask_history="both",
        batch_size=cfg.batch_size,
    )
    sampled = sampled_evaluator(config, split, "test")(model, device, cfg.batch_size, (10, 20))
    with_semq = bool(cfg.semantic_query_betas) and has_semantic_query(model.items)
    return TestRankings(paired, sampled, with_semq)


@torch.no_grad()
def standard_test_metrics(
    config: ExperimentConfig,
    dataset: SequenceDataset,
    split: Split,
    model: Recommender,
    rankings: TestRankings,
    protocol: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json of a full-ranking run: the ``eval.mask_history`` ranking is primary.

    Args:
        config: the run's config.
        dataset: the dataset the split was made from (item popularity for the groups, statistics).
        split: the run's split.
        model: the trained model.
        rankings: `test_rankings` of the model.
        protocol: the figures the split's protocol adds (first in metrics.json); when there are none, AlphaFuse
            with a null space gets its semantic query (``semantic_query``).
    """
    cfg = config.eval
    paired, sampled = rankings.paired, rankings.sampled
    primary = paired.masked if cfg.mask_history else paired.unmasked
    masks = group_masks(
        split.test,
        dataset.item_user_counts(),
        None,
        cfg.tail_item_threshold,
        cfg.tail_user_threshold,
        head_share=cfg.head_share,
    )
    extra = dict(protocol)
    if not extra and rankings.with_semantic_query:
        rank = full_ranker(config, split, model)
        extra["semantic_query"] = semantic_query_metrics(config, rank, masks, primary)
    return {
        **extra,
        "protocol": config.data.protocol,
        "mask_history": cfg.mask_history,
        "test": primary.metrics,
        "test_unmasked": paired.unmasked.metrics,
        "test_masked": paired.masked.metrics,
        "test_sampled": sampled.metrics,
        "groups": metrics_by_group(primary.ranks, masks),
        "groups_sampled": metrics_by_group(sampled.ranks, masks, ks=(10,)),
        "dataset": dataset.stats(),
    }
