"""Offline evaluation of next-item scores for any model: ranks, HR/NDCG, full ranking.

The shared core of every protocol lives here: target ranks, the metrics computed from them,
:class:`EvalResult`, history masks and the batched no-grad ranking loop. Two protocols
(docs/algorithms.md, "Protocols") build on it:

- **Full ranking** (AlphaFuse cold-start users, this module): the target is ranked against all N
  items, with or without the user's earlier items excluded (history masking); :func:`evaluate_full`
  can derive both rankings from one scoring pass.
- **Sampled** (LLM-ESR long tail, :mod:`training.evaluation.sampled`): the target is ranked against a fixed,
  seeded set of 100 negatives the user has not interacted with.

Head/tail groups of the cases and the metrics table are in :mod:`training.evaluation.groups`.

Ranks are 0-based: rank = the number of competing items with a strictly greater score, so ties go in
the target's favour (an integer rank, no random tie-break). HR@k = [rank < k] and NDCG@k =
1/log2(rank + 2) if rank < k else 0, both averaged over cases.

Models are reached only through score callables, ``score_fn(histories (B, L)) -> (B, N)`` and
``score_fn(histories (B, L), candidates (B, C)) -> (B, C)``; the caller puts the model in eval mode
and scoring runs under ``torch.no_grad()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch
from numpy.typing import NDArray

from core.arrays import IntArray
from training.data.dataset import Examples, concat_ranges

__all__ = [
    "KS",
    "EvalResult",
    "PairedEvalResult",
    "evaluate_full",
    "history_mask",
    "metric_names",
    "metrics_from_ranks",
    "target_ranks",
]

logger = logging.getLogger(__name__)

KS: tuple[int, ...] = (5, 10, 20, 50)

FullScoreFn = Callable[[IntArray], torch.Tensor]


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Per-case 0-based ranks of the targets and the metrics averaged over them.

    Attributes:
        ranks: (n,) int64 rank of each example's target.
        metrics: {"HR@k": ..., "NDCG@k": ...} for every requested k.
    """

    ranks: IntArray
    metrics: dict[str, float]


@dataclass(frozen=True, eq=False)
class PairedEvalResult:
    """Both full rankings from one scoring pass: history items kept and history items excluded."""

    unmasked: EvalResult
    masked: EvalResult


def target_ranks(
    scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """0-based rank of each target: the number of non-excluded items with a strictly greater score.

    Ties count in the target's favour. The target itself is never excluded, even when ``mask`` marks
    it (a repeat visit to an item already in the history).

    Args:
        scores: (B, N) float scores.
        targets: (B,) int item index of each row's target.
        mask: (B, N) bool, True for items to exclude from the competition; None excludes nothing.

    Returns:
        (B,) int64 ranks on ``scores.device``.

    Example:
        >>> target_ranks(torch.tensor([[0.1, 0.9, 0.5]]), torch.tensor([2])).tolist()
        [1]
    """
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(
            f"need scores (B, N), targets (B,); got {tuple(scores.shape)}, {tuple(targets.shape)}"
        )
    if mask is not None and mask.shape != scores.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != scores shape {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        bad = torch.isnan(scores).any(dim=1).nonzero().flatten()[:10].tolist()
        raise ValueError(f"scores contain NaN in rows {bad} (first 10)")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= scores.shape[1]):
        raise ValueError(
            f"targets must lie in [0, {scores.shape[1]}), got {targets.min()}..{targets.max()}"
        )
    target_scores = scores.gather(1, targets.long().unsqueeze(1))  # (B, 1)
    greater = scores > target_scores  # (B, N); the target is never greater than itself
    if mask is not None:
        greater &= ~mask
    return greater.sum(dim=1)


def metrics_from_ranks(ranks: NDArray[np.integer], ks: Sequence[int] = KS) -> dict[str, float]:
    """HR@k and NDCG@k averaged over cases from 0-based ranks.

    Args:
        ranks: (n,) non-negative integer ranks, n >= 1.
        ks: cut-offs, each >= 1.

    Returns:
        {"HR@k": ..., ...} for every k, then {"NDCG@k": ...} for every k.

    Example:
        >>> metrics_from_ranks(np.array([0, 3]), ks=(5,))  # NDCG@5 = (1 + 1 / log2(5)) / 2
        {'HR@5': 1.0, 'NDCG@5': 0.71533827903...}
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {ranks.shape}")
    if ranks.min() < 0:
        raise ValueError(f"ranks must be >= 0, got min {ranks.min()}")
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be non-empty positive cut-offs, got {ks}")
    gains = 1.0 / np.log2(ranks.astype(np.float64) + 2.0)  # (n,)
    hits = {k: ranks < k for k in ks}
    metrics = {f"HR@{k}": float(hits[k].mean()) for k in ks}
    metrics.update({f"NDCG@{k}": float(np.where(hits[k], gains, 0.0).mean()) for k in ks})
    return metrics


def metric_names(ks: Sequence[int] = KS) -> list[str]:
    """The keys :func:`metrics_from_ranks` returns, in its order."""
    return [f"HR@{k}" for k in ks] + [f"NDCG@{k}" for k in ks]


def _csr_pairs(offsets: IntArray, items: IntArray, row_idx: IntArray) -> tuple[IntArray, IntArray]:
    """(position in ``row_idx``, item) for every item of the selected CSR rows, without a loop."""
    lengths = offsets[row_idx + 1] - offsets[row_idx]  # (B,)
    row_of = np.repeat(np.arange(len(row_idx), dtype=np.int64), lengths)  # (nnz_B,)
    return row_of, items[concat_ranges(offsets[row_idx], lengths)]


def history_mask(
    seen_offsets: IntArray,
    seen_items: IntArray,
    rows: slice | IntArray,
    num_items: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Dense (B, N) bool mask of each selected example's seen items, built from the seen CSR.

    Args:
        seen_offsets: (n+1,) CSR offsets (``Examples.seen_offsets``).
        seen_items: (nnz,) item indices (``Examples.seen_items``), each < ``num_items``.
        rows: which examples, as a slice or a (B,) index array.
        num_items: N, the mask width.
        device: where the mask is built.

    Returns:
        (B, N) bool, True where the item was seen before that example's target.
    """
    row_idx = np.arange(len(seen_offsets) - 1, dtype=np.int64)[rows]  # (B,)
    row_of, items = _csr_pairs(seen_offsets, seen_items, row_idx)
    if items.size and (items.min() < 0 or items.max() >= num_items):
        raise ValueError(
            f"seen items must lie in [0, {num_items}), got {items.min()}..{items.max()}"
        )
    mask = torch.zeros((len(row_idx), num_items), dtype=torch.bool, device=device)
    mask[torch.from_numpy(row_of).to(device), torch.from_numpy(items).to(device)] = True
    return mask


def _rank_in_batches(
    n: int, batch_size: int, rank_batch: Callable[[slice], list[torch.Tensor]]
) -> list[IntArray]:
    """Run ``rank_batch`` over row slices under no_grad; concatenate each of its outputs."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"need at least one example and batch_size >= 1, got {n}, {batch_size}")
    chunks: list[list[IntArray]] = []
    for start in range(0, n, batch_size):
        with torch.no_grad():
            ranks = rank_batch(slice(start, min(start + batch_size, n)))
        chunks.append([r.cpu().numpy().astype(np.int64) for r in ranks])
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def _full_ranks(
    score_fn: FullScoreFn, examples: Examples, num_items: int, masked: list[bool], batch_size: int
) -> list[IntArray]:
    """One scoring pass over ``examples``; an (n,) rank array per entry of ``masked``."""

    def rank_batch(rows: slice) -> list[torch.Tensor]:
        scores = score_fn(examples.histories[rows])  # (B, N)
        expected = (len(examples.targets[rows]), num_items)
        if scores.shape != expected:
            raise ValueError(f"score_fn returned {tuple(scores.shape)}, expected {expected}")
        targets = torch.from_numpy(examples.targets[rows]).to(scores.device)  # (B,)
        seen = (examples.seen_offsets, examples.seen_items, rows, num_items, scores.device)
        return [target_ranks(scores, targets, history_mask(*seen) if m else None) for m in masked]

    logger.info("full ranking of %d cases over %d items", len(examples.targets), num_items)
    return _rank_in_batches(len(examples.targets), batch_size, rank_batch)


@overload
def evaluate_full(
    score_fn: FullScoreFn,
    examples: Examples,
    num_items: int,
    *,
    mask_history: bool,
    batch_size: int = ...,
    ks: Sequence[int] = ...,
) -> EvalResult: ...
@overload
def evaluate_full(
    score_fn: FullScoreFn,
    examples: Examples,
    num_items: int,
    *,
    mask_history: Literal["both"],
    batch_size: int = ...,
    ks: Sequence[int] = ...,
) -> PairedEvalResult: ...
def evaluate_full(
    score_fn: FullScoreFn,
    examples: Examples,
    num_items: int,
    *,
    mask_history: bool | Literal["both"],
    batch_size: int = 1024,
    ks: Sequence[int] = KS,
) -> EvalResult | PairedEvalResult:
    """Rank every example's target against all N items.

    Args:
        score_fn: maps a (B, L) int64 batch of left-padded histories to (B, N) float scores.
        examples: the cases; ``seen_offsets``/``seen_items`` give the items to mask.
        num_items: N.
        mask_history: True excludes the items seen before the target (never the target itself),
            False ranks against every item, "both" derives both rankings from one scoring pass.
        batch_size: examples per ``score_fn`` call.
        ks: metric cut-offs.

    Returns:
        :class:`EvalResult` (ranks in [0, N)), or :class:`PairedEvalResult` for "both".
    """
    if mask_history not in (True, False, "both"):
        raise ValueError(f"mask_history must be True, False or 'both', got {mask_history!r}")
    masked = [False, True] if mask_history == "both" else [bool(mask_history)]
    rank_arrays = _full_ranks(score_fn, examples, num_items, masked, batch_size)
    results = [EvalResult(ranks, metrics_from_ranks(ranks, ks)) for ranks in rank_arrays]
    return PairedEvalResult(*results) if mask_history == "both" else results[0]
