"""A sequential recommender = item embeddings (tied input/output) + a sequence encoder + a training loss.

Losses (docs/algorithms.md, "Losses"):
- ``infonce``: cosine similarity / tau between the user vector and the target vs K sampled negatives,
  cross-entropy with the target at index 0. Trained with cosine, ranked with the raw dot product.
- ``bce``: dot-product logits, BCE(target, 1) + BCE(negatives, 0), each averaged separately.
- ``ce``: full softmax over all N items with dot-product logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from training.items.embeddings import ItemEmbedding, trim_padding
from training.models.dreamrec import DreamRec

__all__ = [
    "LossConfig",
    "Recommender",
    "SequentialRecommender",
    "pooled_negatives",
    "sample_negatives",
]

LossName = Literal["infonce", "bce", "ce"]


@dataclass(frozen=True)
class LossConfig:
    name: LossName = "infonce"
    num_negatives: int = 64
    temperature: float = 0.07

    def __post_init__(self) -> None:
        if self.name != "ce" and self.num_negatives < 1:
            raise ValueError(f"loss {self.name} needs num_negatives >= 1, got {self.num_negatives}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def sample_negatives(
    targets: torch.Tensor,
    num_items: int,
    k: int,
    generator: torch.Generator | None = None,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) targets -> (B, k) item indices drawn uniformly from [0, N), redrawn where they hit the target.

    With ``pool`` ((P,) int64 item indices, P >= 2) they are drawn uniformly from the pool instead (the
    ``cold_items`` protocol: held-out items are never negatives). The alternative, ``torch.randint(0, N, (k,))``
    shared by the whole batch, is accepted by ``SequentialRecommender.loss`` too (clashes with a row's target are
    masked there) and trains ~2.5x faster.
    """

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        if pool is None:
            return torch.randint(0, num_items, shape, generator=generator)
        return pool[torch.randint(0, len(pool), shape, generator=generator)]

    if pool is not None and len(pool) < 2:
        raise ValueError(f"a negative pool needs at least 2 items, got {len(pool)}")
    neg = draw((targets.shape[0], k))  # (B, k)
    clash = neg == targets[:, None]
    while bool(clash.any()):
        neg[clash] = draw((int(clash.sum()),))
        clash = neg == targets[:, None]
    return neg


def pooled_negatives(
    targets: torch.Tensor,
    num_items: int,
    k: int,
    pool_size: int,
    generator: torch.Generator | None = None,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) targets -> (B, k) negatives per example, all drawn from one pool of ``pool_size`` items per batch.

    The batch's pool is drawn uniformly (with replacement) from [0, N), or from ``pool`` under the ``cold_items``
    protocol; each example then draws its own k negatives uniformly from the batch's pool, so each example's
    negatives are uniform over the items, as ``sample_negatives``'s are, while the batch touches at most
    ``pool_size`` item rows. ``SequentialRecommender.loss`` embeds those rows once and gathers the (B, k) logits
    from one (B, pool_size) product. A negative equal to its row's target is masked in the loss, not redrawn.
    """
    if pool is not None and len(pool) < 2:
        raise ValueError(f"a negative pool needs at least 2 items, got {len(pool)}")
    if pool is None:
        batch_pool = torch.randint(0, num_items, (pool_size,), generator=generator)
    else:
        batch_pool = pool[torch.randint(0, len(pool), (pool_size,), generator=generator)]
    return batch_pool[torch.randint(0, pool_size, (targets.shape[0], k), generator=generator)]


class _Width(Protocol):
    @property
    def dim(self) -> int: ...


class SequenceEncoder(Protocol):
    """What the recommender needs of its sequence encoder (an ``nn.Module``): SASRec, or SASRec wrapped in the
    semantic query (``training.models.semantic_query.SemanticQueryEncoder``) when trained with it."""

    @property
    def config(self) -> _Width: ...

    def encode(self, item_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


class SequentialRecommender(nn.Module):
    """Item embeddings + SASRec encoder, with scoring and the training loss."""

    loss_exclude: (
        torch.Tensor | None
    )  # (N,) bool non-persistent buffer: items the ``ce`` softmax leaves out

    def __init__(self, items: ItemEmbedding, encoder: SequenceEncoder, loss: LossConfig) -> None:
        super().__init__()
        if items.dim != encoder.config.dim:
            raise ValueError(f"item dim {items.dim} != encoder dim {encoder.config.dim}")
        self.items = items
        self.encoder = encoder
        self.loss_config = loss
        self.register_buffer("loss_exclude", None, persistent=False)

    def exclude_from_loss(self, items: torch.Tensor | None) -> None:
        """Leave ``items`` ((N,) bool) out of the full-softmax ``ce`` loss, so they get no gradient from it.

        Not saved in checkpoints (a training-time rule of the ``cold_items`` protocol). Sampled losses get the
        same effect from their negative pool (``sample_negatives``).
        """
        if items is not None and items.shape != (self.num_items,):
            raise ValueError(
                f"loss exclusion must have shape ({self.num_items},), got {tuple(items.shape)}"
            )
        self.loss_exclude = None if items is None else items.to(torch.bool)

    @property
    def num_items(self) -> int:
        return self.items.num_items

    def user_vectors(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, T) left-padded item indices (pad = N) -> (B, d). Leading all-padding columns are dropped."""
        histories, mask = trim_padding(histories, self.num_items)  # (B, T')
        return self.encoder.encode(self.items(histories), mask)

    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, N) dot-product scores against the whole item table."""
        return self.user_vectors(histories) @ self.items.table().T

    def loss(
        self,
        histories: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor | None,
        users: torch.Tensor | None = None,  # noqa: ARG002 -- read by overrides (LLM-ESR)
    ) -> torch.Tensor:
        """Mean training loss of a batch; ``negatives`` (B, K) is unused by ``ce``.

        ``users`` (B,) are the examples' user rows; unused here, models with user-level terms
        (LLM-ESR's self-distillation) override this method and read them.
        """
        cfg = self.loss_config
        if cfg.name == "ce":
            user = self.user_vectors(histories)  # (B, d)
            logits = user @ self.items.table().T  # (B, N)
            if self.loss_exclude is not None:  # -inf logits pass no gradient to their rows
                logits = logits.masked_fill(self.loss_exclude.to(logits.device), -torch.inf)
            return F.cross_entropy(logits, targets)
        if negatives is None:
            raise ValueError(f"loss {cfg.name} needs sampled negatives")
        normalize = cfg.name == "infonce"
        user, pos, neg_logits = self._sampled_logits(histories, targets, negatives, normalize)
        pos_logit = (user * pos).sum(-1, keepdim=True)  # (B, 1)
        # a negative that is its row's own target is no negative for that row
        clash = (negatives if negatives.dim() == 2 else negatives[None, :]) == targets[:, None]
        neg_logits = neg_logits.masked_fill(clash, -torch.inf if cfg.name == "infonce" else -1e4)
        if cfg.name == "infonce":
            logits = torch.cat([pos_logit, neg_logits], dim=1) / cfg.temperature  # (B, 1+K)
            zeros = torch.zeros(len(targets), dtype=torch.long, device=targets.device)
            return F.cross_entropy(logits, zeros)
        pos_loss = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit))
        neg_loss = F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits))
        return pos_loss + neg_loss

    def _sampled_logits(
        self,
        histories: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor,
        normalize: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, d) user vectors, (B, d) target rows and (B, K) negative logits, from one item-table lookup.

        The histories, targets and negatives ((K,) shared or (B, K) per example) are embedded together, so the
        trainable ID table gets one dense gradient per step instead of one per lookup. Per-example negatives that
        repeat a few distinct items (``pooled_negatives``) are embedded once each and their logits gathered from
        one (B, U) product; otherwise each (B, K) row is embedded on its own. With ``normalize`` (infoNCE) the
        user vectors and the item rows are scaled to unit length.
        """
        hist, mask = trim_padding(histories, self.num_items)  # (B, T')
        B, T = hist.shape
        inverse = None
        neg_ids = negatives.reshape(-1)
        if negatives.dim() == 2:
            distinct, inv = torch.unique(negatives, return_inverse=True)
            if 4 * len(distinct) <= negatives.numel():
                neg_ids, inverse = distinct, inv
        rows = self.items(torch.cat([hist.reshape(-1), targets, neg_ids]))
        h, pos, neg = rows.split([B * T, B, len(neg_ids)])
        user = self.encoder.encode(h.reshape(B, T, -1), mask)  # (B, d)
        if normalize:
            user, pos, neg = (F.normalize(x, dim=-1) for x in (user, pos, neg))
        if negatives.dim() == 1:
            return user, pos, user @ neg.T  # (B, K)
        if inverse is not None:
            return user, pos, (user @ neg.T).gather(1, inverse)  # (B, U) -> (B, K)
        return user, pos, torch.einsum("bd,bkd->bk", user, neg.view(*negatives.shape, -1))


Recommender = SequentialRecommender | DreamRec
"""Any model the trainer, evaluation and exporter accept: ``items``, ``user_vectors``, ``loss``."""


def table_scorer(
    model: Recommender, table: torch.Tensor | None = None
) -> Callable[[NDArray[np.int64]], torch.Tensor]:
    """A full-ranking score callable: (B, L) left-padded histories -> (B, N) inner products, float32 on the CPU.

    Args:
        model: its ``user_vectors`` encode the histories (on the table's device).
        table: the (N, d) item table to score against; None: the model's own, read once here (per evaluation).
    """
    items = model.items.table().detach() if table is None else table  # (N, d)

    def scores(histories: NDArray[np.int64]) -> torch.Tensor:
        user = model.user_vectors(torch.from_numpy(histories).to(items.device))  # (B, d)
        return (user @ items.T).float().cpu()  # (B, N)

    return scores
