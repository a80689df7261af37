"""Offline evaluation of next-item scores for any model: ranks, HR/NDCG, sampled candidates, groups.

Two protocols (docs/ALGORITHMS.md §6):

- **Full ranking** (AlphaFuse cold-start users): the target is ranked against all N items, with or
  without the user's earlier items excluded (history masking); :func:`evaluate_full` can derive both
  rankings from one scoring pass.
- **Sampled** (LLM-ESR long tail): the target is ranked against a fixed, seeded set of 100 negatives
  the user has not interacted with (:func:`sample_candidates`, :func:`evaluate_sampled`). The
  original redraws them on every pass; here they are drawn once so runs are comparable.

Ranks are 0-based: rank = the number of competing items with a strictly greater score, so ties go in
the target's favour (an integer rank, no random tie-break). HR@k = [rank < k] and NDCG@k =
1/log2(rank + 2) if rank < k else 0, both averaged over cases.

Models are reached only through score callables, ``score_fn(histories (B, L)) -> (B, N)`` and
``score_fn(histories (B, L), candidates (B, C)) -> (B, C)``; the caller puts the model in eval mode
and scoring runs under ``torch.no_grad()``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch
from numpy.typing import NDArray

from training.data.dataset import Examples, SequenceDataset, concat_ranges

__all__ = [
    "KS",
    "EvalResult",
    "PairedEvalResult",
    "evaluate_full",
    "evaluate_sampled",
    "format_metrics_table",
    "group_masks",
    "history_mask",
    "metric_names",
    "metrics_by_group",
    "metrics_from_ranks",
    "pareto_thresholds",
    "sample_candidates",
    "target_ranks",
]

logger = logging.getLogger(__name__)

KS: tuple[int, ...] = (5, 10, 20, 50)

IntArray = NDArray[np.int64]
FullScoreFn = Callable[[IntArray], torch.Tensor]
CandidateScoreFn = Callable[[IntArray, IntArray], torch.Tensor]


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
        >>> metrics_from_ranks(np.array([0, 3]), ks=(5,))
        {'HR@5': 1.0, 'NDCG@5': 0.7153382790366965}
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


def _excluded_keys(
    examples: Examples, num_items: int, sequences: SequenceDataset | None
) -> tuple[IntArray, IntArray]:
    """Sorted unique keys ``row * N + item`` of (example, excluded item) pairs; count per row."""
    n, seen = len(examples.targets), examples.seen_items
    if seen.size and (seen.min() < 0 or seen.max() >= num_items):
        raise ValueError(f"seen items must lie in [0, {num_items}), got {seen.min()}..{seen.max()}")
    rows = [np.repeat(np.arange(n), np.diff(examples.seen_offsets)), np.arange(n)]
    items = [examples.seen_items, examples.targets]
    if sequences is not None:
        users = examples.users
        if users.size and users.max() >= sequences.num_users:
            raise ValueError(
                f"examples.users up to {users.max()} but sequences has {sequences.num_users} users"
            )
        seq_rows, seq_items = _csr_pairs(sequences.offsets, sequences.items, users)
        rows.append(seq_rows)
        items.append(seq_items)
    keys = np.sort(np.concatenate(rows) * num_items + np.concatenate(items))
    keys = keys[np.diff(keys, prepend=-1) != 0]  # np.unique is several times slower here
    return keys, np.bincount(keys // num_items, minlength=n)


def _rejection_sample(
    rng: np.random.Generator, rows: IntArray, excluded: IntArray, num_items: int, k: int, draws: int
) -> tuple[IntArray, NDArray[np.bool_]]:
    """k distinct allowed items per row from ``draws`` uniform draws: (r, k) picks, (r,) success."""
    drawn = rng.integers(0, num_items, size=(len(rows), draws))  # (r, M)
    order = np.argsort(drawn, axis=1, kind="stable")  # equal items keep their draw order
    by_item = np.take_along_axis(drawn, order, axis=1)  # (r, M), rows ascending -> keys sorted
    keys = (rows[:, None] * num_items + by_item).ravel()
    pos = np.searchsorted(excluded, keys).clip(max=len(excluded) - 1)
    fresh = np.diff(by_item, axis=1, prepend=-1) != 0  # (r, M) first draw of each item
    allowed = np.empty_like(fresh)
    np.put_along_axis(allowed, order, fresh & (excluded[pos] != keys).reshape(fresh.shape), axis=1)
    take = allowed & (np.cumsum(allowed, axis=1) <= k)  # the first k allowed draws, in draw order
    ok = take.sum(axis=1) == k
    picks = np.zeros((len(rows), k), dtype=np.int64)
    picks[ok] = drawn[ok][take[ok]].reshape(-1, k)
    return picks, ok


def sample_candidates(
    examples: Examples,
    num_items: int,
    num_negatives: int = 100,
    seed: int = 0,
    exclude_sequences: SequenceDataset | None = None,
) -> IntArray:
    """Fixed, seeded candidate sets for the sampled protocol: the target plus uniform negatives.

    Negatives are drawn uniformly without replacement from the items not excluded. Excluded per
    example: its seen items (``seen_offsets``/``seen_items``), its target and, when
    ``exclude_sequences`` is given, every item of the user's whole sequence there
    (``examples.users`` indexes its rows, so pass the dataset the split was made from), as LLM-ESR
    does.

    Args:
        examples: the cases (n of them).
        num_items: N.
        num_negatives: negatives per case.
        seed: the numpy generator seed; the same seed gives the same candidates.
        exclude_sequences: optional full sequences whose items are excluded too.

    Returns:
        (n, 1 + num_negatives) int64; column 0 is the target.
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    n = len(examples.targets)
    if n and (examples.targets.min() < 0 or examples.targets.max() >= num_items):
        bounds = f"{examples.targets.min()}..{examples.targets.max()}"
        raise ValueError(f"targets must lie in [0, {num_items}), got {bounds}")
    if n == 0:
        return np.zeros((0, 1 + num_negatives), dtype=np.int64)
    rng = np.random.default_rng(seed)
    excluded, excluded_per_row = _excluded_keys(examples, num_items, exclude_sequences)
    short = np.flatnonzero(num_items - excluded_per_row < num_negatives)
    if short.size:
        raise ValueError(
            f"examples {short[:10].tolist()} have fewer than {num_negatives} allowed negatives"
        )
    negatives = np.zeros((n, num_negatives), dtype=np.int64)
    todo, draws = np.arange(n, dtype=np.int64), int(num_negatives * 1.3) + 16
    while todo.size:  # rows that fell short are redrawn whole, with twice the draws
        picks, ok = _rejection_sample(rng, todo, excluded, num_items, num_negatives, draws)
        negatives[todo[ok]] = picks[ok]
        todo, draws = todo[~ok], draws * 2
    return np.concatenate([examples.targets[:, None].astype(np.int64), negatives], axis=1)


def evaluate_sampled(
    score_fn_candidates: CandidateScoreFn,
    examples: Examples,
    candidates: IntArray,
    batch_size: int = 1024,
    ks: Sequence[int] = (10,),
) -> EvalResult:
    """Rank column 0 (the target) of each candidate row among its C candidates.

    Args:
        score_fn_candidates: maps (B, L) histories and (B, C) candidates to (B, C) float scores.
        examples: the cases (n of them).
        candidates: (n, C) from :func:`sample_candidates`.
        batch_size: examples per scoring call.
        ks: metric cut-offs.

    Returns:
        :class:`EvalResult` with ranks in [0, C).
    """
    n = len(examples.targets)
    if candidates.ndim != 2 or candidates.shape[0] != n:
        raise ValueError(f"candidates must be ({n}, C), got {candidates.shape}")

    def rank_batch(rows: slice) -> list[torch.Tensor]:
        scores = score_fn_candidates(examples.histories[rows], candidates[rows])  # (B, C)
        if scores.shape != candidates[rows].shape:
            expected = candidates[rows].shape
            raise ValueError(f"score_fn returned {tuple(scores.shape)}, expected {expected}")
        zeros = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)  # (B,)
        return [target_ranks(scores, zeros)]

    (ranks,) = _rank_in_batches(n, batch_size, rank_batch)
    return EvalResult(ranks, metrics_from_ranks(ranks, ks))


def pareto_thresholds(values: NDArray[np.number], head_share: float = 0.2) -> float:
    """The threshold t such that ``values >= t`` is the top ``head_share`` of values (Pareto 20/80).

    t is the smallest value among the top ceil(head_share * n); values tied with it are head too.

    Example:
        >>> pareto_thresholds(np.arange(1, 101))
        81.0
    """
    values = np.asarray(values)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {values.shape}")
    if not 0.0 < head_share <= 1.0:
        raise ValueError(f"head_share must be in (0, 1], got {head_share}")
    top = math.ceil(head_share * values.size)
    return float(np.partition(values, values.size - top)[values.size - top])


def group_masks(
    examples: Examples,
    item_popularity: NDArray[np.number],
    user_lengths: NDArray[np.number] | None = None,
    item_threshold: float | None = None,
    user_threshold: float | None = None,
    *,
    head_share: float = 0.2,
) -> dict[str, NDArray[np.bool_]]:
    """LLM-ESR head/tail groups of the cases; tail = value < threshold, head otherwise.

    Args:
        examples: the cases (n of them).
        item_popularity: (N,) distinct users per item; a case's value is its target's popularity.
        user_lengths: (n,) history length per case; None uses ``np.diff(examples.seen_offsets)``.
        item_threshold: None uses :func:`pareto_thresholds` over all N items.
        user_threshold: None uses :func:`pareto_thresholds` over the n cases.
        head_share: the head share for thresholds computed here.

    Returns:
        (n,) bool masks "tail_item", "head_item", "tail_user", "head_user".
    """
    n = len(examples.targets)
    lengths = np.diff(examples.seen_offsets) if user_lengths is None else np.asarray(user_lengths)
    if lengths.shape != (n,):
        raise ValueError(f"user_lengths must have shape ({n},), got {lengths.shape}")
    item_t = item_threshold
    if item_t is None:
        item_t = pareto_thresholds(np.asarray(item_popularity), head_share)
    user_t = pareto_thresholds(lengths, head_share) if user_threshold is None else user_threshold
    tail_item = np.asarray(item_popularity)[examples.targets] < item_t
    tail_user = lengths < user_t
    logger.info("group thresholds: item popularity %s, user length %s", item_t, user_t)
    return {
        "tail_item": tail_item,
        "head_item": ~tail_item,
        "tail_user": tail_user,
        "head_user": ~tail_user,
    }


def metrics_by_group(
    ranks: IntArray, masks: dict[str, NDArray[np.bool_]], ks: Sequence[int] = KS
) -> dict[str, dict[str, float]]:
    """Metrics and case count ("count") overall and per group; an empty group gets NaN metrics."""
    groups = {"overall": np.ones(len(ranks), dtype=bool), **masks}
    table: dict[str, dict[str, float]] = {}
    for name, mask in groups.items():
        if mask.shape != ranks.shape:
            raise ValueError(f"group {name!r} mask shape {mask.shape} != ranks shape {ranks.shape}")
        count = int(mask.sum())
        metrics = (
            metrics_from_ranks(ranks[mask], ks)
            if count
            else dict.fromkeys(metric_names(ks), math.nan)
        )
        table[name] = {**metrics, "count": float(count)}
    return table


def format_metrics_table(rows: dict[str, dict[str, float]]) -> str:
    """A fixed-width text table: a line per row name, a column per metric (first-seen key order).

    "count" is printed as an integer, other values with 4 decimals, missing ones as "-".
    """
    columns = list(dict.fromkeys(key for metrics in rows.values() for key in metrics))
    cells = [["", *columns]]
    cells += [
        [name, *(_cell(col, metrics.get(col)) for col in columns)] for name, metrics in rows.items()
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(
            [
                row[0].ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
            ]
        )
        for row in cells
    ]
    return "\n".join(line.rstrip() for line in lines)


def _cell(column: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if column == "count" else f"{value:.4f}"
