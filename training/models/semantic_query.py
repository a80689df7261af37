"""The semantic query: an AlphaFuse user vector plus a content term taken from the history's language coordinates.

An AlphaFuse row is ``e = [lang_s ; lang_n + id]``: its first ``d_s = d - d_n`` coordinates are pure (whitened)
language, the same for a trained item and for an item added from its text after training. The query

    q = u + beta * s * [m_s ; 0]

adds to the user vector ``u`` the mean ``m_s`` of those coordinates over the last ``last_n`` history items, scaled by
``s = |u_s| / |m_s|`` (``u_s``: the first ``d_s`` coordinates of ``u``) so that ``beta`` is the size of the content
term relative to the user's own language part on any dataset. Every item is still scored by one inner product with
its unchanged row, ``q . e = u . e + beta * s * (m_s . lang_s(e))``, so the same FAISS index serves it; ``beta = 0``
is the model itself. It needs nothing but the encoder's own inputs (the history rows and their mask), so the
exporter folds it into the ONNX user encoder (`SemanticQueryEncoder`) and the service runs it unchanged.
Offline, `semantic_query_scorer` ranks with it: after training, ``beta`` is chosen on validation
(`training.evaluation.run_metrics.semantic_query_metrics`) and the cold-item remedies report every ``beta``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from core.arrays import IntArray
from training.items.embeddings import alphafuse_with_null_space
from training.models.dreamrec import DreamRecConfig, DreamRecEncoder
from training.models.recommender import Recommender
from training.models.sasrec import SASRec, SASRecConfig

__all__ = [
    "LAST_N",
    "SemanticQueryEncoder",
    "semantic_query",
    "semantic_query_scorer",
    "semantic_query_vectors",
]

LAST_N = 5  # history items whose language coordinates form the content term


def semantic_query(
    user: torch.Tensor,
    item_emb: torch.Tensor,
    mask: torch.Tensor,
    semantic_dim: int,
    beta: float,
    last_n: int = LAST_N,
) -> torch.Tensor:
    """(B, d) user vectors, (B, L, d) left-padded history rows, (B, L) bool mask -> (B, d) queries ``q``.

    Raises:
        ValueError: ``beta < 0``, ``last_n < 1`` or ``semantic_dim`` outside [1, d].
    """
    _check(semantic_dim, beta, last_n, user.shape[-1])
    recent = mask[:, -last_n:].to(item_emb.dtype).unsqueeze(-1)  # (B, n, 1)
    m_s = (item_emb[:, -last_n:, :semantic_dim] * recent).sum(1) / recent.sum(1).clamp_min(1.0)
    u_s = user[:, :semantic_dim]  # (B, d_s)
    scale = u_s.norm(dim=1, keepdim=True) / m_s.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.cat([u_s + beta * scale * m_s, user[:, semantic_dim:]], dim=1)  # (B, d)


def _check(semantic_dim: int, beta: float, last_n: int, dim: int) -> None:
    if beta < 0 or last_n < 1 or not 1 <= semantic_dim <= dim:
        raise ValueError(
            f"need beta >= 0, last_n >= 1 and 1 <= semantic_dim <= {dim}, "
            f"got beta={beta}, last_n={last_n}, semantic_dim={semantic_dim}"
        )


class SemanticQueryEncoder(nn.Module):
    """A user encoder (SASRec, or DreamRec's sampler) whose ``encode`` returns the semantic query."""

    def __init__(
        self,
        encoder: SASRec | DreamRecEncoder,
        semantic_dim: int,
        beta: float,
        last_n: int = LAST_N,
    ) -> None:
        super().__init__()
        _check(semantic_dim, beta, last_n, encoder.config.dim)  # at construction: before any export
        self.encoder = encoder
        self.semantic_dim, self.beta, self.last_n = semantic_dim, beta, last_n

    @property
    def config(self) -> SASRecConfig | DreamRecConfig:
        return self.encoder.config

    def encode(self, item_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        user = self.encoder.encode(item_emb, mask)  # (B, d)
        return semantic_query(user, item_emb, mask, self.semantic_dim, self.beta, self.last_n)


def semantic_query_vectors(
    model: Recommender, histories: torch.Tensor, beta: float, last_n: int = LAST_N
) -> torch.Tensor:
    """(B, T) left-padded histories -> (B, d) semantic queries ``q = u + beta * s * [m_s ; 0]`` of an AlphaFuse
    model (`semantic_query` over the model's own rows of the history).

    Raises:
        ValueError: the model is not AlphaFuse with a null space, ``beta < 0`` or ``last_n < 1``.
    """
    items = alphafuse_with_null_space(model.items, "the semantic query")
    user = model.user_vectors(histories)  # (B, d)
    item_emb = items(histories)  # (B, T, d); its first d_s coordinates are the language part
    mask = histories != items.num_items  # (B, T)
    return semantic_query(user, item_emb, mask, items.semantic_dim, beta, last_n)


def semantic_query_scorer(
    model: Recommender, beta: float, last_n: int = LAST_N
) -> Callable[[IntArray], torch.Tensor]:
    """Score every item (warm and cold rows unchanged) with `semantic_query_vectors`: one inner product per item."""
    table = model.items.table().detach()  # (N, d)
    device = table.device

    def scores(histories: NDArray[np.int64]) -> torch.Tensor:
        hist = torch.from_numpy(histories).to(device)
        return (semantic_query_vectors(model, hist, beta, last_n) @ table.T).float().cpu()

    return scores
