"""LLM-ESR (NeurIPS'24): dual-view sequence encoder with retrieval-augmented self-distillation.

As the original code has it, not the AlphaFuse authors' re-implementation (docs/algorithms.md, "LLM-ESR"):

- Semantic view: frozen language embeddings E (N, d_l) -> adapter ``Linear(d_l, d_l/2) -> Linear(-> d)``
  (no activation).
- Collaborative view: a trainable ID table initialised from PCA(d) of E (centred, not whitened).
- Both views: ``Drop(view(s) * sqrt(d) + pos)`` with one shared position table (positions count 1..len from
  the oldest kept item) and one shared dropout, then cross-attention between the views (2 heads, no QKV bias,
  output Linear, key-padding mask only, no residual, no dropout), then ONE shared sequence encoder applied to
  both views, and the two last-position outputs concatenated: ``F_u = [f_id ; f_llm]`` (2d).
- Logit-level fusion: item vectors are ``e(i) = [id(i) ; Adapter(E_i)]`` (2d), so
  ``F_u . e(i) = f_id . id(i) + f_llm . Adapter(E_i)``, the sum of the two views' logits. This is why the
  model plugs into :class:`SequentialRecommender` unchanged: user vectors and the item table are 2d wide.
- Self-distillation: ``L = L_rec + alpha * MSE(F_u, mean_j sg(F_{n_j}))`` over the top-k similar users n_j
  (retrieved by :func:`training.models.llmesr.setup.similar_users`), the user itself excluded. Student and
  teacher are the last-position features of the users' full training histories, each from its own forward pass in train
  mode, the teacher detached.

Deliberate difference from the original: the shared encoder is the project's SASRec with causal and
padding masks (the original masks neither). Training uses one example per prefix (the project's loop), which
with a causal encoder is the seq-to-seq loss; the distillation term is applied once per user per epoch, on the
example that is the user's last training prefix (the original's one sample per user per epoch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from core.alphafuse import fit_semantic_basis, project
from training.items.embeddings import ItemEmbedding
from training.models.recommender import LossConfig, SequentialRecommender
from training.models.sasrec import SASRec, SASRecConfig

__all__ = [
    "LLMESR",
    "CrossAttention",
    "DualViewEncoder",
    "DualViewItems",
    "LLMESRConfig",
    "build_llmesr",
    "pca_init",
]


@dataclass(frozen=True)
class LLMESRConfig:
    """Encoder hyperparameters; ``dim`` is the fused (concatenated) width 2 * view_dim."""

    view_dim: int = 64
    max_len: int = 50
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.5
    cross_heads: int = 2

    def __post_init__(self) -> None:
        if self.view_dim % self.cross_heads:
            raise ValueError(
                f"view_dim={self.view_dim} must be divisible by cross_heads={self.cross_heads}"
            )

    @property
    def dim(self) -> int:
        return 2 * self.view_dim

    def backbone(self) -> SASRecConfig:
        return SASRecConfig(
            dim=self.view_dim,
            max_len=self.max_len,
            num_blocks=self.num_blocks,
            num_heads=self.num_heads,
            dropout=self.dropout,
        )


def pca_init(text_embeddings: NDArray[np.floating], dim: int) -> NDArray[np.float32]:
    """(N, d_l) -> (N, dim) principal-component scores: centred, not whitened (sklearn ``PCA(dim)``).

    The AlphaFuse basis of `core.alphafuse` with no scaling, no whitening and no null space: the projection of
    the centred embeddings on their top ``dim`` principal directions.
    """
    E = np.asarray(text_embeddings, dtype=np.float64)
    if E.ndim != 2 or dim > min(E.shape):
        raise ValueError(
            f"PCA({dim}) needs a 2-D array with >= {dim} rows and columns, got {E.shape}"
        )
    basis = fit_semantic_basis(E, dim=dim, null_dim=0, scale=1.0, standardize=False)
    scores: NDArray[np.float32] = project(E, basis).astype(np.float32)  # (N, dim)
    return scores


class DualViewItems(ItemEmbedding):
    """Item rows ``[id(i) ; Adapter(E_i)]`` (2d); E is a frozen buffer, the pad row N gives zeros."""

    language: torch.Tensor  # (N+1, d_l) buffer, pad row N is zero
    pad_keep: torch.Tensor  # (N+1,) buffer, 0 at the pad row

    def __init__(
        self, language: torch.Tensor, view_dim: int, *, adapter_hidden: int | None = None
    ) -> None:
        super().__init__()
        N, d_l = language.shape
        self.num_items, self.view_dim, self.dim = N, view_dim, 2 * view_dim
        self.register_buffer("language", torch.cat([language, language.new_zeros(1, d_l)]))
        self.ids = nn.Embedding(N + 1, view_dim, padding_idx=N)
        hidden = adapter_hidden or d_l // 2
        self.adapter = nn.Sequential(nn.Linear(d_l, hidden), nn.Linear(hidden, view_dim))
        self.register_buffer("pad_keep", torch.cat([torch.ones(N), torch.zeros(1)]))  # (N+1,)

    def table(self) -> torch.Tensor:
        N = self.num_items
        return torch.cat([self.ids.weight[:N], self.adapter(self.language[:N])], dim=1)  # (N, 2d)

    def forward(self, item_idx: torch.Tensor) -> torch.Tensor:
        # the adapter runs once per distinct item of the batch, not once per position
        uniq, inverse = torch.unique(item_idx, return_inverse=True)  # (M,), item_idx.shape
        sem = self.adapter(self.language[uniq]) * self.pad_keep[uniq].unsqueeze(-1)  # (M, d)
        return torch.cat([self.ids(item_idx), sem[inverse]], dim=-1)  # (..., 2d)


class CrossAttention(nn.Module):
    """Multi-head attention from one view's queries to the other view's keys/values.

    No bias in Q/K/V, an output Linear, scale sqrt(head dim), no residual, no dropout. Padded keys are never
    attended; a padded query attends to its own position only (its output is masked by the caller).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, query: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """query, context (B, T, d); mask (B, T) bool, True at real items. Returns (B, T, d)."""
        B, T, d = query.shape
        h = self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(B, T, h, d // h).transpose(1, 2)  # (B, h, T, d/h)

        steps = torch.arange(T, device=mask.device)
        eye = steps[:, None] == steps[None, :]  # (T, T)
        allowed = mask[:, None, :] | (eye & ~mask[:, :, None])  # (B, Tq, Tk)
        a = F.scaled_dot_product_attention(
            split(self.q(query)),
            split(self.k(context)),
            split(self.v(context)),
            attn_mask=allowed.unsqueeze(1),
        )  # (B, h, T, d/h)
        return self.out(a.transpose(1, 2).reshape(B, T, d))  # type: ignore[no-any-return]


class DualViewEncoder(nn.Module):
    """Embedded histories ``[id ; sem]`` (B, T, 2d) -> user vectors ``[f_id ; f_llm]`` (B, 2d)."""

    def __init__(self, config: LLMESRConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = SASRec(
            config.backbone()
        )  # shared by both views; owns positions and dropout
        self.to_id = CrossAttention(config.view_dim, config.cross_heads)  # q = semantic, kv = id
        self.to_sem = CrossAttention(config.view_dim, config.cross_heads)  # q = id, kv = semantic

    def encode(self, item_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """item_emb (B, T, 2d) left-padded, mask (B, T) True at real items -> (B, 2d)."""
        d, T = self.config.view_dim, item_emb.shape[1]
        if self.config.max_len < T:
            raise ValueError(f"history length {T} exceeds max_len={self.config.max_len}")
        ids, sem = item_emb[..., :d], item_emb[..., d:]  # 2 x (B, T, d)
        order = (mask.long().cumsum(1) - 1).clamp(min=0)  # (B, T): 0 at the oldest kept item
        pos = self.backbone.positions(order)  # (B, T, d)
        keep = mask.unsqueeze(-1).to(item_emb.dtype)  # (B, T, 1)
        scale = math.sqrt(d)
        x_id = self.backbone.dropout(ids * scale + pos) * keep  # (B, T, d)
        x_sem = self.backbone.dropout(sem * scale + pos) * keep  # (B, T, d)
        id_view = self.to_id(x_sem, x_id, mask) * keep  # (B, T, d)
        sem_view = self.to_sem(x_id, x_sem, mask) * keep  # (B, T, d)
        f_id = self.backbone.run_blocks(id_view, mask)  # (B, d)
        f_sem = self.backbone.run_blocks(sem_view, mask)  # (B, d)
        return torch.cat([f_id, f_sem], dim=-1)  # (B, 2d)


class LLMESR(SequentialRecommender):
    """Dual-view items + encoder with the recommender's loss, plus the self-distillation term."""

    last_histories: torch.Tensor  # (U, L) each user's last training history (teacher/student input)
    last_targets: torch.Tensor  # (U,) the target of that history
    neighbours: torch.Tensor  # (U, k) similar users, never the user itself

    def __init__(
        self, items: DualViewItems, encoder: DualViewEncoder, loss: LossConfig, alpha: float
    ) -> None:
        super().__init__(items, encoder, loss)
        self.alpha = alpha
        for name in ("last_histories", "last_targets", "neighbours"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.long), persistent=False)
        _xavier_init(self)

    def set_distillation(
        self, last_histories: torch.Tensor, last_targets: torch.Tensor, neighbours: torch.Tensor
    ) -> None:
        """Install the per-user tables of the self-distillation (not saved in checkpoints)."""
        U = len(last_histories)
        if last_targets.shape != (U,) or neighbours.ndim != 2 or len(neighbours) != U:
            raise ValueError(
                f"distillation tables disagree: histories {tuple(last_histories.shape)}, "
                f"targets {tuple(last_targets.shape)}, neighbours {tuple(neighbours.shape)}"
            )
        own = neighbours == torch.arange(U, device=neighbours.device)[:, None]
        if bool(own.any()):
            raise ValueError("a user is among its own similar users")
        device = self.last_histories.device
        self.last_histories = last_histories.long().to(device)
        self.last_targets = last_targets.long().to(device)
        self.neighbours = neighbours.long().to(device)

    def distillation_target(self, users: torch.Tensor) -> torch.Tensor:
        """(b,) users -> (b, 2d) mean of their neighbours' detached representations."""
        nbr = self.neighbours[users]  # (b, k)
        with torch.no_grad():
            reps = self.user_vectors(self.last_histories[nbr.reshape(-1)])  # (b*k, 2d)
        return reps.view(*nbr.shape, -1).mean(1).detach()  # (b, 2d)

    def loss(
        self,
        histories: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor | None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """L_rec + alpha * L_sd; L_sd on the examples that are their user's last training prefix."""
        rec = super().loss(histories, targets, negatives)
        if users is None or self.alpha == 0 or not self.training or not len(self.neighbours):
            return rec
        last = (targets == self.last_targets[users]) & (
            histories == self.last_histories[users]
        ).all(1)  # (B,)
        if not bool(last.any()):
            return rec
        u = users[last]  # (b,)
        student = self.user_vectors(self.last_histories[u])  # (b, 2d), its own forward pass
        return rec + self.alpha * F.mse_loss(student, self.distillation_target(u))


def _xavier_init(model: LLMESR) -> None:
    """Xavier-normal for every >= 2-D parameter except the two item tables (the original's init)."""
    skip = {id(model.items.ids.weight)}  # type: ignore[union-attr]
    for p in model.parameters():
        if p.dim() >= 2 and id(p) not in skip:
            nn.init.xavier_normal_(p)


def build_llmesr(
    text_embeddings: NDArray[np.floating],
    config: LLMESRConfig,
    loss: LossConfig,
    *,
    alpha: float = 0.1,
    adapter_hidden: int | None = None,
) -> LLMESR:
    """LLM-ESR over N items from their (N, d_l) language embeddings (ID view = their PCA scores)."""
    language = torch.from_numpy(np.asarray(text_embeddings, dtype=np.float32))  # (N, d_l)
    items = DualViewItems(language, config.view_dim, adapter_hidden=adapter_hidden)
    with torch.no_grad():
        items.ids.weight[: items.num_items] = torch.from_numpy(
            pca_init(text_embeddings, config.view_dim)
        )
        items.ids.weight[items.num_items] = 0.0
    return LLMESR(items, DualViewEncoder(config), loss, alpha)
