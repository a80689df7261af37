"""LLM-ESR's long-tail protocol as an evaluation option (``eval.protocol = "long_tail"``, ALGORITHMS.md §6.2).

- Leave-one-out; each case's target is ranked against 100 negatives drawn uniformly without replacement
  from the items outside the evaluated history and target (fixed and seeded here; the original redraws them
  on every pass, so its numbers move with the RNG). HR@10 / NDCG@10 with NDCG = 1/log2(rank + 2).
- Validation (model selection) uses the same sampled protocol on the validation cases.
- Groups: tail item = target popularity < t_item, popularity = distinct users per item over the whole
  dataset (train + valid + test); tail user = history length < t_user. Thresholds: Pareto 20/80 by default
  (head = top 20 %), LLM-ESR's per-dataset values with ``eval.group_thresholds = "llmesr"``, or explicit
  ``eval.tail_item_threshold`` / ``eval.tail_user_threshold`` (these win).

Not replicated: the original's ``metric_pop_report`` skips the first test user.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from core.arrays import BoolArray, IntArray
from training.config import EvalConfig, ExperimentConfig
from training.data.dataset import Examples, SequenceDataset, Split
from training.evaluation.evaluate import EvalResult, PairedEvalResult
from training.evaluation.groups import group_masks, metrics_by_group, pareto_thresholds
from training.evaluation.sampled import evaluate_sampled, sample_candidates
from training.models.recommender import Recommender

__all__ = [
    "LLMESR_THRESHOLDS",
    "PARTS",
    "Part",
    "SampledEvaluator",
    "long_tail_groups",
    "long_tail_metrics",
    "resolve_thresholds",
    "sampled_evaluator",
]

UserVectorFn = Callable[[torch.Tensor], torch.Tensor]
Part = Literal["valid", "test"]
PARTS: tuple[Part, ...] = ("valid", "test")

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


class SampledEvaluator:
    """Ranks each case's target among its fixed, seeded 1 + K candidates, for any recommender."""

    def __init__(
        self, examples: Examples, num_items: int, num_negatives: int = 100, seed: int = 0
    ) -> None:
        self.examples = examples
        self.candidates: IntArray = sample_candidates(examples, num_items, num_negatives, seed=seed)

    @torch.no_grad()
    def __call__(
        self,
        model: Recommender,
        device: torch.device,
        batch_size: int = 1024,
        ks: tuple[int, ...] = (10, 20),
        user_vectors: UserVectorFn | None = None,
    ) -> EvalResult:
        """Rank with ``user_vectors`` ((B, T) histories -> (B, d) queries; default the model's own)."""
        model.eval()
        table = model.items.table().detach()  # (N, d)
        queries = user_vectors or model.user_vectors

        def scores(histories: IntArray, cands: IntArray) -> torch.Tensor:
            user = queries(torch.from_numpy(histories).to(device))  # (B, d)
            items = table[torch.from_numpy(cands).to(device)]  # (B, C, d)
            return torch.einsum("bd,bcd->bc", user, items).float().cpu()  # (B, C)

        return evaluate_sampled(scores, self.examples, self.candidates, batch_size, ks=ks)


def sampled_evaluator(config: ExperimentConfig, split: Split, part: Part) -> SampledEvaluator:
    """The sampled cases of a run's ``"valid"`` or ``"test"`` part: ``eval.sampled_negatives`` negatives each,
    seeded ``data.split_seed + 1`` for validation and ``data.split_seed`` for test."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    examples = split.valid if part == "valid" else split.test
    seed = config.data.split_seed + (part == "valid")
    return SampledEvaluator(examples, split.num_items, config.eval.sampled_negatives, seed)


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
