"""DreamRec (NeurIPS'23) as AlphaFuse's diffusion backbone: generate the next item's embedding, then rank by it.

One model, one file. The condition c is the SASRec encoder's output at the last position of a left-padded history
(docs/algorithms.md, "DreamRec"); the denoiser is DreamRec's single linear layer over ``[x_t ; c ; t_emb]`` with
the timestep embedding sinusoid(256) -> Linear(256, d) -> GELU -> Linear(d, d) (frequencies
exp(-ln(1e4) i / (half - 1)), order [sin, cos]). Training is x0-prediction MSE on the target's (fused) item
embedding with classifier-free guidance dropout; the user vector is the generated x0, by guided DDIM from a fixed
initial point (zeros, or one seeded noise vector shared by every user) so that evaluation and serving are
deterministic, or by the full ancestral sampler (seeded). Items are ranked by the inner product of that vector with
the item table, so the same FAISS index serves SASRec and DreamRec artifacts.

``DreamRecEncoder.encode(item_emb, mask)`` is the whole user encoder (condition + sampler); the exporter traces it
into one ONNX graph with the same inputs and output as the SASRec encoder. ``DreamRec`` adds the item embeddings
and exposes the trainer's interface: ``items``, ``user_vectors``, ``loss``.

Known differences from the reference code (kept on purpose): the DDIM grid has ``steps`` network calls at
t = round(linspace(T-1, 0, steps)) instead of 21 calls starting at t = T (D7), and the initial point is fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from training.items.embeddings import ItemEmbedding, trim_padding
from training.models import diffusion as dif
from training.models.sasrec import SASRec, SASRecConfig

__all__ = [
    "DiffusionSettings",
    "DreamRec",
    "DreamRecConfig",
    "DreamRecEncoder",
]

SamplerName = Literal["ddim", "ancestral"]
TIME_FREQ_DIM = 256


@dataclass(frozen=True)
class DiffusionSettings:
    """The diffusion process and the sampler (see ``training.config.DiffusionConfig``)."""

    timesteps: int = 2000
    schedule: dif.ScheduleName = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    p_uncond: float = 0.1
    w: float = 5.0
    sampler: SamplerName = "ddim"
    steps: int = 20
    init_noise: Literal["zeros", "seeded"] = "zeros"
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= self.timesteps:
            raise ValueError(f"steps must be in [1, timesteps={self.timesteps}], got {self.steps}")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"p_uncond must be in [0, 1), got {self.p_uncond}")
        if self.w < 0:
            raise ValueError(f"guidance weight w must be >= 0, got {self.w}")


@dataclass(frozen=True)
class DreamRecConfig:
    """The condition encoder and the diffusion settings; ``dim``/``max_len`` as the exporter reads them."""

    encoder: SASRecConfig
    diffusion: DiffusionSettings

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def max_len(self) -> int:
        return self.encoder.max_len


def timestep_sinusoid(t: torch.Tensor, dim: int = TIME_FREQ_DIM) -> torch.Tensor:
    """(B,) int timesteps -> (B, dim) [sin, cos] features, frequencies exp(-ln(1e4) i / (half - 1))."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1)
    )  # (half,)
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class DreamRecEncoder(nn.Module):
    """Condition encoder + denoiser + sampler: embedded histories -> generated user vector."""

    init_noise: torch.Tensor  # (d,) buffer: the sampler's starting point for every user

    def __init__(self, config: DreamRecConfig) -> None:
        super().__init__()
        self.config = config
        d, s = config.dim, config.diffusion
        self.condition = SASRec(config.encoder)
        self.time_mlp = nn.Sequential(nn.Linear(TIME_FREQ_DIM, d), nn.GELU(), nn.Linear(d, d))
        self.denoiser = nn.Linear(3 * d, d)
        self.null = nn.Parameter(torch.randn(d))  # (d,) the unconditional embedding, N(0, 1)
        noise = torch.zeros(d)
        if s.init_noise == "seeded":
            noise = torch.randn(d, generator=torch.Generator().manual_seed(s.noise_seed))
        self.register_buffer("init_noise", noise)
        betas = dif.beta_schedule(s.schedule, s.timesteps, s.beta_start, s.beta_end)
        self.schedule = dif.make_schedule(betas)  # float64, rebuilt from the config (not saved)
        # sampler settings, mutable so that a benchmark can compare samplers on one trained model
        self.sampler: SamplerName = s.sampler
        self.steps = s.steps
        self.w = s.w

    def denoise(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """f(x_t, c, t) -> x0_hat; x, cond (B, d), t (B,) int64 -> (B, d)."""
        t_emb = self.time_mlp(timestep_sinusoid(t))  # (B, d)
        return self.denoiser(torch.cat([x, cond, t_emb], dim=-1))  # type: ignore[no-any-return]

    def encode(self, item_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """User vectors: the generated next-item embedding.

        Args:
            item_emb: (B, T, d) embedded left-padded histories, zero at padding.
            mask: (B, T) bool, True at real items; every row has a real item at T-1.

        Returns:
            (B, d) x0 from guided DDIM (``steps`` calls) or the full ancestral sampler.
        """
        cond = self.condition.encode(item_emb, mask)  # (B, d)
        x = self.init_noise.expand_as(cond)  # (B, d)
        x0_fn = self.guided_x0_fn(cond)
        if self.sampler == "ddim":
            return dif.ddim_sample(x0_fn, self.schedule, x, self.steps)
        gen = torch.Generator().manual_seed(self.config.diffusion.noise_seed)
        return dif.ancestral_sample(x0_fn, self.schedule, x, gen)

    def guided_x0_fn(self, cond: torch.Tensor) -> dif.X0Fn:
        """The guided estimate (1 + w) f(x, c, t) - w f(x, null, t), using that the denoiser is linear in c.

        With f = W_x x + W_c c + W_t t_emb(t) + b, the guided estimate is
        W_x x + W_c ((1 + w) c - w null) + W_t t_emb(t) + b: the condition term is computed once per sampling
        and each step costs one d x d product (and t_emb(t) of a constant t folds into a constant in ONNX).
        Equal to ``diffusion.cfg_x0_fn(self.denoise, ...)`` up to float rounding (tested).
        """
        d, w = self.config.dim, self.w
        weight, bias = self.denoiser.weight, self.denoiser.bias  # (d, 3d), (d,)
        w_x, w_c, w_t = weight[:, :d], weight[:, d : 2 * d], weight[:, 2 * d :]  # 3 x (d, d)
        mixed = dif.guidance_mix(cond, self.null, w)  # (B, d)
        const = mixed @ w_c.T + bias  # (B, d)

        def x0_fn(x: torch.Tensor, t: int) -> torch.Tensor:
            t_vec = torch.full((1,), t, dtype=torch.long, device=cond.device)  # (1,)
            t_emb: torch.Tensor = self.time_mlp(timestep_sinusoid(t_vec))  # (1, d)
            t_term = t_emb @ w_t.T  # (1, d)
            return x @ w_x.T + (const + t_term)  # (B, d)

        return x0_fn

    def loss(self, item_emb: torch.Tensor, mask: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """x0-prediction MSE with CFG dropout; histories as in ``encode``, x0 (B, d) target embeddings."""
        cond = self.condition.encode(item_emb, mask)  # (B, d)
        return dif.x0_loss(
            self.denoise, self.schedule, x0, cond, self.null, self.config.diffusion.p_uncond
        )


class DreamRec(nn.Module):
    """Item embeddings + ``DreamRecEncoder``, with the trainer's interface (``user_vectors``, ``loss``)."""

    def __init__(self, items: ItemEmbedding, encoder: DreamRecEncoder) -> None:
        super().__init__()
        if items.dim != encoder.config.dim:
            raise ValueError(f"item dim {items.dim} != DreamRec dim {encoder.config.dim}")
        self.items = items
        self.encoder = encoder

    @property
    def num_items(self) -> int:
        return self.items.num_items

    def _embedded(self, histories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) left-padded indices -> (B, T', d) embeddings, (B, T') mask; all-padding columns dropped."""
        histories, mask = trim_padding(histories, self.num_items)  # (B, T')
        return self.items(histories), mask

    def user_vectors(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, T) left-padded item indices (pad = N) -> (B, d) generated embeddings."""
        return self.encoder.encode(*self._embedded(histories))

    def scores(self, histories: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, N) inner products with the item table."""
        return self.user_vectors(histories) @ self.items.table().T

    def loss(
        self,
        histories: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor | None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Diffusion loss of a batch; x0 is the target's item embedding (its ID part gets gradient too).
        ``negatives`` and ``users`` are accepted for the trainer's interface and unused."""
        del negatives, users
        return self.encoder.loss(*self._embedded(histories), self.items(targets))
