"""The ``cold_items`` protocol's figures of one scorer: cold and warm test cases ranked against the whole catalogue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from core.arrays import Float64Array, IntArray
from training.data.dataset import Examples
from training.evaluation import evaluate as ev
from training.evaluation.evaluate import FullScoreFn
from training.protocols.cold_items.split import ColdItemSplit

__all__ = ["COLD_KS", "ScoreFn", "evaluate_cold_items"]

ScoreFn = FullScoreFn  # (B, L) histories -> (B, N) scores

COLD_KS: tuple[int, ...] = (10, 20)
SURFACE_K = 10


@dataclass(frozen=True)
class _CaseStats:
    ranks: IntArray  # (n,) rank among all non-masked items
    ranks_same_kind: (
        IntArray  # (n,) rank among non-masked items of the target's kind (cold or warm)
    )
    target_z: Float64Array  # (n,) (target score - mean) / std over the catalogue
    surfaced: NDArray[np.bool_]  # (n,) top-SURFACE_K list holds at least one cold item
    cold_slots: Float64Array  # (n,) share of the top-SURFACE_K slots taken by cold items


@torch.no_grad()
def _case_stats(
    score_fn: ScoreFn, examples: Examples, cold: torch.Tensor, batch_size: int
) -> _CaseStats:
    num_items = len(cold)
    parts: list[list[NDArray[Any]]] = []
    for start in range(0, len(examples), batch_size):
        rows = slice(start, min(start + batch_size, len(examples)))
        scores = score_fn(examples.histories[rows]).float()  # (B, N)
        targets = torch.from_numpy(examples.targets[rows]).to(scores.device)  # (B,)
        masked = ev.history_mask(
            examples.seen_offsets, examples.seen_items, rows, num_items, scores.device
        )  # (B, N)
        masked.scatter_(1, targets[:, None], False)  # the target always competes
        target_cold = cold.to(scores.device)[targets]  # (B,)
        other_kind = cold.to(scores.device)[None, :] != target_cold[:, None]  # (B, N)
        ranks = ev.target_ranks(scores, targets, masked)
        same_kind = ev.target_ranks(scores, targets, masked | other_kind)
        mean, std = scores.mean(dim=1), scores.std(dim=1).clamp_min(1e-12)  # (B,)
        z = (scores.gather(1, targets[:, None]).squeeze(1) - mean) / std
        top = scores.masked_fill(masked, -torch.inf).topk(SURFACE_K, dim=1).indices  # (B, K)
        top_cold = cold.to(scores.device)[top].float()  # (B, K)
        parts.append(
            [
                ranks.cpu().numpy(),
                same_kind.cpu().numpy(),
                z.double().cpu().numpy(),
                (top_cold.sum(1) > 0).cpu().numpy(),
                top_cold.mean(1).double().cpu().numpy(),
            ]
        )
    joined = [np.concatenate(p) for p in zip(*parts, strict=True)]
    return _CaseStats(
        joined[0].astype(np.int64), joined[1].astype(np.int64), joined[2], joined[3], joined[4]
    )


def evaluate_cold_items(
    score_fn: ScoreFn, split: ColdItemSplit, batch_size: int = 1024
) -> dict[str, Any]:
    """Cold and warm figures of one scorer under the ``cold_items`` protocol (full ranking, history masked).

    Args:
        score_fn: (B, L) left-padded histories -> (B, N) scores over the whole catalogue (warm + cold).
        split: the protocol's split.
        batch_size: cases per ``score_fn`` call.

    Returns:
        ``cold`` / ``warm``: HR@K and NDCG@K (K in 10, 20) over the cold / warm test cases;
        ``ratio``: cold / warm for each of those metrics;
        ``surface_rate``: the share of warm test cases (one per user with >= 3 warm items) whose top-10 list
        (the whole catalogue ranked, that user's history excluded) contains at least one cold item;
        ``cold_slot_share``: the mean share of those top-10 slots held by cold items, next to ``cold_catalogue_share``
        (C / N, what a ranking blind to coldness would give);
        ``cold_among_cold`` / ``warm_among_warm``: the same metrics with the target ranked only against items of its
        own kind (does the model order cold items well among themselves, even where warm items bury them?);
        ``target_score_z``: median and quartiles of the target's standardized score (score minus the mean over
        the catalogue, divided by its std) for cold and for warm cases: the score-distribution check;
        ``cases``: the number of cold and warm cases.
    """
    cold = torch.from_numpy(split.cold_mask())
    cold_stats = _case_stats(score_fn, split.cold_test, cold, batch_size)
    warm_stats = _case_stats(score_fn, split.test, cold, batch_size)
    cold_m = ev.metrics_from_ranks(cold_stats.ranks, COLD_KS)
    warm_m = ev.metrics_from_ranks(warm_stats.ranks, COLD_KS)

    def quartiles(z: Float64Array) -> dict[str, float]:
        q1, q2, q3 = np.quantile(z, [0.25, 0.5, 0.75])
        return {"q25": float(q1), "median": float(q2), "q75": float(q3)}

    return {
        "cold": cold_m,
        "warm": warm_m,
        "ratio": {k: cold_m[k] / warm_m[k] if warm_m[k] > 0 else float("nan") for k in cold_m},
        "surface_rate": float(warm_stats.surfaced.mean()),
        "cold_slot_share": float(warm_stats.cold_slots.mean()),
        "cold_catalogue_share": len(split.cold_items) / split.num_items,
        "cold_among_cold": ev.metrics_from_ranks(cold_stats.ranks_same_kind, COLD_KS),
        "warm_among_warm": ev.metrics_from_ranks(warm_stats.ranks_same_kind, COLD_KS),
        "target_score_z": {
            "cold": quartiles(cold_stats.target_z),
            "warm": quartiles(warm_stats.target_z),
        },
        "cases": {"cold": len(split.cold_test), "warm": len(split.test)},
    }
