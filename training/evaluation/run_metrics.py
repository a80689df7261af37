"""A trained model's metrics: validation (full ranking) and the one test pass of a run (every protocol's figures)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from core.arrays import BoolArray
from training.config import ExperimentConfig
from training.data.dataset import Examples, Split
from training.evaluation import evaluate as ev
from training.evaluation.groups import group_masks, metrics_by_group
from training.items.embeddings import has_null_space
from training.items.semantic_query import semantic_query_scorer, semantic_query_vectors
from training.models.recommender import Recommender, table_scorer
from training.protocols import cold_items as cold
from training.protocols.cold_items import remedies as cold_remedies
from training.protocols.cold_items.baselines import TEXT_KNN_LAST
from training.protocols.long_tail import (
    PARTS,
    Part,
    long_tail_groups,
    long_tail_metrics,
    sampled_evaluator,
)

if TYPE_CHECKING:
    from training.experiment import Prepared

__all__ = ["full_metrics", "semantic_query_metrics", "test_metrics"]


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
    """AlphaFuse served with its semantic query (`training.items.semantic_query`): ``beta`` chosen on the validation
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
        "last_n": TEXT_KNN_LAST,
        "valid": [{"beta": b, metric: v} for b, v in zip(betas, valid, strict=True)],
        "test": test.metrics,
        "groups": metrics_by_group(test.ranks, masks, ks),
    }


def _full_ranker(config: ExperimentConfig, split: Split, model: Recommender) -> BetaRanker:
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


def _sampled_ranker(
    config: ExperimentConfig, split: Split, model: Recommender, device: torch.device
) -> BetaRanker:
    evaluators = {part: sampled_evaluator(config, split, part) for part in PARTS}

    def rank(beta: float, part: Part) -> ev.EvalResult:
        def queries(histories: torch.Tensor) -> torch.Tensor:
            return semantic_query_vectors(model, histories, beta)

        return evaluators[part](
            model, device, config.eval.batch_size, (10, 20), user_vectors=queries if beta else None
        )

    return rank


@torch.no_grad()
def test_metrics(
    config: ExperimentConfig,
    prepared: Prepared,
    model: Recommender,
    device: torch.device,
) -> dict[str, Any]:
    """Test once: full ranking (history kept and masked), sampled 1+100, head/tail groups, and AlphaFuse's
    semantic query (beta chosen on validation) or, under ``cold_items``, the cold-item figures."""
    model.eval()
    split, cfg = prepared.split, config.eval
    paired = ev.evaluate_full(
        table_scorer(model),
        split.test,
        split.num_items,
        mask_history="both",
        batch_size=cfg.batch_size,
    )
    sampled = sampled_evaluator(config, split, "test")(model, device, cfg.batch_size, (10, 20))
    with_semq = bool(cfg.semantic_query_betas) and has_null_space(model.items)
    if cfg.protocol == "long_tail":  # the sampled ranks are primary; groups at its thresholds
        masks, thresholds = long_tail_groups(config, prepared.dataset, split.test)
        metrics = long_tail_metrics(
            config, prepared.dataset, masks, thresholds, sampled.ranks, paired
        )
        if with_semq:
            rank = _sampled_ranker(config, split, model, device)
            metrics["semantic_query"] = semantic_query_metrics(
                config, rank, masks, sampled, ks=(10, 20)
            )
        return metrics
    return _standard_test_metrics(config, prepared, model, paired, sampled, with_semq)


def _standard_test_metrics(
    config: ExperimentConfig,
    prepared: Prepared,
    model: Recommender,
    paired: ev.PairedEvalResult,
    sampled: ev.EvalResult,
    with_semq: bool,
) -> dict[str, Any]:
    """metrics.json of a full-ranking run: the ``eval.mask_history`` ranking is primary."""
    split, cfg = prepared.split, config.eval
    primary = paired.masked if cfg.mask_history else paired.unmasked
    masks = group_masks(
        split.test,
        prepared.dataset.item_user_counts(),
        None,
        cfg.tail_item_threshold,
        cfg.tail_user_threshold,
        head_share=cfg.head_share,
    )
    extra = {}
    if isinstance(split, cold.ColdItemSplit):
        extra["cold_items"] = cold_remedies.cold_item_metrics(
            model,
            split,
            table_scorer(model),
            cfg.batch_size,
            betas=cfg.semantic_query_betas,
            remedies=cfg.cold_remedies,
        )
    elif with_semq:
        rank = _full_ranker(config, split, model)
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
        "dataset": prepared.dataset.stats(),
    }
