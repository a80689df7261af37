"""SASRec, as AlphaFuse's backbone uses it: a causal self-attention encoder over left-padded item sequences.

One model, one file: the frozen config, the attention block and the encoder. The user vector is the output at
the last position (the most recent item), so sequences are LEFT-padded. Item embeddings are not owned here: the
encoder takes the embedded sequence (B, T, d) and a mask, so that the same graph serves items added after
training (the exporter relies on this), and input/output item embeddings are tied by the caller.

Layout of one block (docs/algorithms.md, "SASRec")::

    q = LN1(x);  a = MHA(q, x, x) + q          # keys/values from x, padding keys and future keys masked
    f = LN(Drop(W2 Drop(ReLU(W1 LN2(a)))) + LN2(a));  x = f * mask
    h = LN_final(x)[:, -1]

Because only the last position is read out, the last block computes its query, residual and FFN for that one
position: the result is identical and costs a fraction of the full block.

Known differences from the AlphaFuse authors' block (all small, kept on purpose until a validation comparison says
otherwise): attention has the usual output projection (theirs has none), the FFN drops out after the ReLU as well as
after W2, and attention scores are scaled per head (identical to theirs at one head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SASRec", "SASRecConfig"]


@dataclass(frozen=True)
class SASRecConfig:
    """Hyperparameters of the encoder (item embeddings are configured separately)."""

    dim: int = 128
    max_len: int = 50
    num_blocks: int = 1
    num_heads: int = 1
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.num_blocks < 1 or self.max_len < 1:
            raise ValueError(f"need num_blocks >= 1 and max_len >= 1, got {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class _FeedForward(nn.Module):
    """Position-wise d -> d -> d with its own residual and LayerNorm."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, dim)
        self.w2 = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.w2(self.dropout(F.relu(self.w1(x)))))  # (B, T, d)
        return self.norm(h + x)  # type: ignore[no-any-return]


class _Block(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        d = config.dim
        self.num_heads = config.num_heads
        self.norm_q = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.attn_dropout = config.dropout
        self.norm_ff = nn.LayerNorm(d)
        self.ff = _FeedForward(d, config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, last_only: bool) -> torch.Tensor:
        """x (B, T, d); attn_mask (B, 1, Tq, T) bool, True = may attend. Returns (B, Tq, d)."""
        B, T, d = x.shape
        h = self.num_heads
        q_in = self.norm_q(x[:, -1:] if last_only else x)  # (B, Tq, d)
        Tq = q_in.shape[1]
        q = self.q(q_in).view(B, Tq, h, d // h).transpose(1, 2)  # (B, h, Tq, d/h)
        k, v = self.kv(x).view(B, T, 2, h, d // h).permute(2, 0, 3, 1, 4)  # 2 x (B, h, T, d/h)
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_dropout if self.training else 0.0
        )  # (B, h, Tq, d/h)
        a = self.out(a.transpose(1, 2).reshape(B, Tq, d)) + q_in  # (B, Tq, d)
        return self.ff(self.norm_ff(a))  # type: ignore[no-any-return]


class SASRec(nn.Module):
    """Causal self-attention sequence encoder; ``encode`` maps embedded histories to user vectors.

    Example:
        >>> model = SASRec(SASRecConfig(dim=8, max_len=5))
        >>> emb = torch.randn(2, 5, 8); mask = torch.ones(2, 5, dtype=torch.bool)
        >>> model.encode(emb, mask).shape
        torch.Size([2, 8])
    """

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.positions = nn.Embedding(config.max_len, config.dim)
        nn.init.normal_(self.positions.weight)  # N(0, 1): the scale of whitened item inputs
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.num_blocks))
        self.norm = nn.LayerNorm(config.dim)

    def encode(self, item_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """User vectors from embedded, left-padded histories.

        Args:
            item_emb: (B, T, d) embeddings of the history items, T <= max_len, most recent at T-1.
            mask: (B, T) bool, True at real items, False at padding. Every row has a real item at T-1.

        Returns:
            (B, d) the encoder output at the last position.
        """
        T = item_emb.shape[1]
        L = self.config.max_len
        if T > L:
            raise ValueError(f"history length {T} exceeds max_len={L}")
        pos = self.positions.weight[L - T :]  # (T, d): the last item always sits at position L-1
        keep = mask.unsqueeze(-1).to(item_emb.dtype)  # (B, T, 1)
        return self.run_blocks(self.dropout(item_emb + pos) * keep, mask)

    def run_blocks(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The attention blocks and final LayerNorm on inputs that already hold positions and dropout.

        Args:
            x: (B, T, d) position-encoded inputs, zero at padding.
            mask: (B, T) bool, True at real items.

        Returns:
            (B, d) the output at the last position.
        """
        T = x.shape[1]
        keep = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        # (T, T) identity; not torch.eye(dtype=bool): ONNX Runtime has no kernel for a bool EyeLike
        steps = torch.arange(T, device=mask.device)
        eye = steps[:, None] == steps[None, :]
        causal = torch.ones(T, T, dtype=torch.bool, device=mask.device).tril()
        # padded queries attend to themselves only, so no softmax row is empty (their output is masked anyway)
        full_mask = (causal & mask[:, None, :]) | eye  # (B, T, T)
        for block in self.blocks[:-1]:
            x = block(x, full_mask.unsqueeze(1), last_only=False) * keep  # (B, T, d)
        h = self.blocks[-1](x, full_mask[:, None, -1:], last_only=True)  # (B, 1, d)
        return self.norm(h[:, 0] * keep[:, -1])  # type: ignore[no-any-return]
