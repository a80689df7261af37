"""The sampled protocol (LLM-ESR long tail): fixed, seeded 1 + negatives candidate sets, ranked.

Each case's target is ranked against a fixed, seeded set of (by default 100) negatives the user has
not interacted with (:func:`sample_candidates`, :func:`evaluate_sampled`). The original redraws
them on every pass; here they are drawn once so runs are comparable. Ranks and metrics follow
:mod:`training.evaluation.evaluate` (0-based, ties in the target's favour). `SampledEvaluator` holds one
part's candidates and ranks any recommender on them (`sampled_evaluator`: a run's validation or test part).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray

from core.arrays import IntArray
from training.config import ExperimentConfig
from training.data.dataset import Examples, SequenceDataset, Split
from training.evaluation.evaluate import (
    EvalResult,
    _csr_pairs,
    _rank_in_batches,
    metrics_from_ranks,
    target_ranks,
)
from training.models.recommender import Recommender

__all__ = [
    "PARTS",
    "CandidateScoreFn",
    "Part",
    "SampledEvaluator",
    "evaluate_sampled",
    "sample_candidates",
    "sampled_evaluator",
]

logger = logging.getLogger(__name__)

CandidateScoreFn = Callable[[IntArray, IntArray], torch.Tensor]
UserVectorFn = Callable[[torch.Tensor], torch.Tensor]
Part = Literal["valid", "test"]
PARTS: tuple[Part, ...] = ("valid", "test")


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
