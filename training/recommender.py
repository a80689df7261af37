"""A sequential recommender = item embeddings (tied input/output) + a sequence encoder + a training loss.

Losses (ALGORITHMS.md §2):
- ``infonce``: cosine similarity / tau between the user vector and the target vs K sampled negatives,
  cross-entropy with the target at index 0. Trained with cosine, ranked with the raw dot product.
- ``bce``: dot-product logits, BCE(target, 1) + BCE(negatives, 0), each averaged separately.
- ``ce``: full softmax over all N items with dot-product logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from training.embeddings import ItemEmbedding
from training.models.dreamrec import DreamRec
from training.models.sasrec import SASRec

__all__ = ["LossConfig", "Recommender", "SequentialRecommender", "sample_negatives"]

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
    targets: torch.Tensor, num_items: int, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B,) targets -> (B, k) item indices drawn uniformly from [0, N), redrawn where they hit the target.

    The alternative, ``torch.randint(0, N, (k,))`` shared by the whole batch, is accepted by
    ``SequentialRecommender.loss`` too (clashes with a row's target are masked there) and trains ~2.5x faster.
    """
    neg = torch.randint(0, num_items, (targets.shape[0], k), generator=generator)  # (B, k)
    clash = neg == targets[:, None]
    while bool(clash.any()):
        neg[clash] = torch.randint(0, num_items, (int(clash.sum()),), generator=generator)
        clash = neg == targets[:, None]
    return neg


class SequentialRecommender(nn.Module):
    """Item embeddings + SASRec encoder, with scoring and the training loss."""

    def __init__(self, items: ItemEmbedding, encoder: SASRec, loss: LossConfig) -> None:
        super().__init__()
        if items.dim != encoder.config.dim:
            raise ValueError(f"item dim {items.dim} != encoder dim {encoder.config.dim}")
        self.items = items
        self.encoder = encoder
        self.loss_config = loss

    @property
    def num_items(self) -> int:
        return self.items.num_items

    def user_vectors(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, T) left-padded item indices (pad = N) -> (B, d). Leading all-padding columns are dropped."""
        mask = histories != self.num_items  # (B, T)
        first = int(mask.any(0).float().argmax()) if bool(mask.any()) else histories.shape[1] - 1
        histories, mask = histories[:, first:], mask[:, first:]  # (B, T')
        return self.encoder.encode(self.items(histories), mask)

    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, N) dot-product scores against the whole item table."""
        return self.user_vectors(histories) @ self.items.table().T

    def loss(
        self, histories: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None
    ) -> torch.Tensor:
        """Mean training loss of a batch; ``negatives`` (B, K) is unused by ``ce``."""
        user = self.user_vectors(histories)  # (B, d)
        cfg = self.loss_config
        if cfg.name == "ce":
            return F.cross_entropy(user @ self.items.table().T, targets)
        if negatives is None:
            raise ValueError(f"loss {cfg.name} needs sampled negatives")
        pos = self.items(targets)  # (B, d)
        neg = self.items(negatives)  # (B, K, d) per-example, or (K, d) shared by the batch
        if cfg.name == "infonce":
            user, pos, neg = (F.normalize(x, dim=-1) for x in (user, pos, neg))
        pos_logit = (user * pos).sum(-1, keepdim=True)  # (B, 1)
        neg_logits = (
            torch.einsum("bd,bkd->bk", user, neg) if neg.dim() == 3 else user @ neg.T
        )  # (B, K)
        if (
            neg.dim() == 2
        ):  # a shared negative that is a row's own target is no negative for that row
            clash = negatives[None, :] == targets[:, None]  # (B, K)
            neg_logits = neg_logits.masked_fill(
                clash, -torch.inf if cfg.name == "infonce" else -1e4
            )
        if cfg.name == "infonce":
            logits = torch.cat([pos_logit, neg_logits], dim=1) / cfg.temperature  # (B, 1+K)
            zeros = torch.zeros(len(targets), dtype=torch.long, device=targets.device)
            return F.cross_entropy(logits, zeros)
        pos_loss = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit))
        neg_loss = F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits))
        return pos_loss + neg_loss


Recommender = SequentialRecommender | DreamRec
"""Any model the trainer, evaluation and exporter accept: ``items``, ``user_vectors``, ``loss``."""
