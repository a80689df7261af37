"""Scorers that need no training, for the ``cold_items`` protocol: popularity and text nearest neighbours
(on the raw text embeddings, and centred on the trained items' mean text embedding).

Both return a full-ranking score function ``(B, L) left-padded histories -> (B, N) scores`` that
``training.protocols.cold_items.evaluate_cold_items`` (or ``training.evaluation.evaluate.evaluate_full``) ranks
like a model's.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from core.arrays import IntArray
from training.data.dataset import Split
from training.models.semantic_query import LAST_N
from training.protocols.cold_items.metrics import ScoreFn

__all__ = ["BASELINES", "TEXT_KNN_LAST", "popularity_scorer", "text_knn_scorer"]


BASELINES = ("popularity", "text_knn", "text_knn_centred")
TEXT_KNN_LAST = LAST_N  # the profile: as many recent items as the semantic query's content term


def popularity_scorer(split: Split) -> ScoreFn:
    """Every user gets the items' training interaction counts (held-out items never occur there: score 0)."""
    counts = torch.from_numpy(
        split.train_sequences.item_interaction_counts().astype(np.float32)
    )  # (N,)

    def scores(histories: IntArray) -> torch.Tensor:
        return counts.expand(len(histories), -1)  # (B, N)

    return scores


def text_knn_scorer(
    text_embeddings: NDArray[np.float32],
    last: int = TEXT_KNN_LAST,
    *,
    centre_on: IntArray | None = None,
) -> ScoreFn:
    """Cosine between each candidate's text embedding and the mean text embedding of the last ``last`` history items.

    The history items' embeddings are L2-normalised before averaging; the profile's own norm does not change the
    ranking, so the score is the cosine up to a per-user factor. The content path gorse offers for new items.

    Sentence encoders give every text a large shared component, which dominates the cosine of short texts; with
    ``centre_on`` the mean embedding of those rows (the trained items: a new item's text does not move it) is
    subtracted from every embedding first, as AlphaFuse's basis does before its SVD.

    Args:
        text_embeddings: (N, D) language embeddings of every catalogue row (cold items included).
        last: how many of the most recent history items form the profile.
        centre_on: rows whose mean embedding is subtracted first; None: the raw embeddings.
    """
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last}")
    raw = np.asarray(text_embeddings, dtype=np.float64)
    if centre_on is not None:
        if not len(centre_on):
            raise ValueError("centre_on names no rows")
        raw = raw - raw[centre_on].mean(0)
    emb = torch.from_numpy(raw.astype(np.float32))
    unit = torch.nn.functional.normalize(emb, dim=1)  # (N, D)
    num_items = len(unit)
    padded = torch.cat([unit, torch.zeros(1, unit.shape[1])])  # (N+1, D), pad row N is zero

    def scores(histories: IntArray) -> torch.Tensor:
        recent = torch.from_numpy(histories[:, -last:])  # (B, last), left-padded with N
        count = (recent != num_items).sum(1, keepdim=True).clamp_min(1)  # (B, 1)
        profile = padded[recent].sum(1) / count  # (B, D)
        return profile @ unit.T  # (B, N)

    return scores
