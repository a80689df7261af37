"""The Gaussian diffusion process of DreamRec, apart from any network (docs/algorithms.md, "DreamRec").

Pure functions over a ``Schedule`` (betas and their cumulative products, float64 at construction and kept as
float32 buffers by the callers):

- ``beta_schedule``: ``linear`` (beta_start -> beta_end), ``cosine`` (Nichol & Dhariwal, s = 0.008, betas clipped to
  [1e-4, 0.9999]), ``exp`` (DreamRec's, beta_min 0.1, beta_max 10) and ``sqrt`` (alpha_bar(t) = 1 - sqrt(t + 1e-4),
  betas capped at 0.999), as the DreamRec code defines them.
- ``q_sample``: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.
- ``x0_loss``: x0-prediction MSE with classifier-free guidance training (the condition is replaced by the learned
  null embedding with probability ``p_uncond``).
- ``guided_x0``: (1 + w) f(x, c, t) - w f(x, null, t).
- ``ddim_timesteps`` / ``ddim_step`` / ``ddim_sample``: deterministic DDIM (eta = 0) over a fixed number of steps;
  the last step returns the x0 estimate.
- ``ancestral_sample``: the full T-step posterior sampler (posterior mean + posterior-variance noise, none at t=0).

The denoiser is any callable ``f(x_t (B, d), cond (B, d), t (B,) int64) -> x0_hat (B, d)``; samplers take the guided
estimate as ``x0_fn(x_t, t)`` (``cfg_x0_fn`` builds it from a denoiser, a model may supply an equivalent faster one).
No sampler clips x0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = [
    "Denoiser",
    "Schedule",
    "ScheduleName",
    "X0Fn",
    "ancestral_sample",
    "beta_schedule",
    "cfg_x0_fn",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "guidance_mix",
    "guided_x0",
    "make_schedule",
    "q_sample",
    "x0_loss",
]

ScheduleName = Literal["linear", "cosine", "exp", "sqrt"]
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
X0Fn = Callable[[torch.Tensor, int], torch.Tensor]  # (x_t (B, d), t) -> guided x0_hat (B, d)


def beta_schedule(
    name: ScheduleName, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """(T,) float64 betas of a named schedule, each in (0, 1).

    Args:
        name: ``linear``, ``cosine``, ``exp`` or ``sqrt``.
        timesteps: T >= 1.
        beta_start, beta_end: the range of ``linear`` (unused by the others).
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    T = timesteps
    if name == "linear":
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if name == "cosine":
        s = 0.008
        x = torch.linspace(0, T, T + 1, dtype=torch.float64)  # (T+1,)
        abar = torch.cos((x / T + s) / (1 + s) * math.pi * 0.5) ** 2
        abar = abar / abar[0]
        return (1 - abar[1:] / abar[:-1]).clip(1e-4, 0.9999)
    if name == "exp":
        beta_min, beta_max = 0.1, 10.0
        x = torch.linspace(1, 2 * T + 1, T, dtype=torch.float64)  # (T,)
        return 1 - torch.exp(-beta_min / T - x * 0.5 * (beta_max - beta_min) / (T * T))
    if name == "sqrt":
        grid = torch.arange(T + 1, dtype=torch.float64) / T  # (T+1,)
        abar = 1 - torch.sqrt(grid + 1e-4)
        return (1 - abar[1:] / abar[:-1]).clip(max=0.999)
    raise ValueError(f"unknown beta schedule {name!r}; expected linear, cosine, exp or sqrt")


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discretised forward process: ``betas``, ``alphas_cumprod`` (abar_t) and abar_{t-1} (1 at t=0), all (T,)."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor

    @property
    def timesteps(self) -> int:
        return int(self.betas.shape[0])


def make_schedule(betas: torch.Tensor) -> Schedule:
    """The schedule of (T,) betas (kept in their dtype)."""
    if betas.dim() != 1 or not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError("betas must be a 1-D tensor with every value in (0, 1)")
    abar = torch.cumprod(1 - betas, dim=0)  # (T,)
    prev = torch.cat([torch.ones(1, dtype=betas.dtype), abar[:-1]])  # (T,)
    return Schedule(betas=betas, alphas_cumprod=abar, alphas_cumprod_prev=prev)


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] as (B, 1, ...) broadcastable to ``like``, in ``like``'s dtype."""
    out = values.to(like.device)[t].to(like.dtype)  # (B,)
    return out.view(-1, *([1] * (like.dim() - 1)))


def q_sample(
    schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; x0, noise (B, d), t (B,) int64 -> (B, d)."""
    abar = _at(schedule.alphas_cumprod, t, x0)  # (B, 1)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def x0_loss(
    denoiser: Denoiser,
    schedule: Schedule,
    x0: torch.Tensor,
    cond: torch.Tensor,
    null: torch.Tensor,
    p_uncond: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean-squared x0-prediction loss with classifier-free-guidance dropout.

    Args:
        denoiser: f(x_t, c, t) -> x0_hat.
        schedule: the forward process.
        x0: (B, d) clean target embeddings (gradient flows into them).
        cond: (B, d) conditions (the encoded histories).
        null: (d,) the learned unconditional embedding.
        p_uncond: probability that a row's condition is replaced by ``null``.
        generator: optional RNG for t, noise and the dropout draw (CPU).
    """
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
    B = x0.shape[0]
    t = torch.randint(0, schedule.timesteps, (B,), generator=generator).to(x0.device)  # (B,)
    noise = torch.randn(x0.shape, generator=generator).to(x0)  # (B, d)
    drop = (torch.rand(B, generator=generator) < p_uncond).to(x0.device)  # (B,)
    cond = torch.where(drop[:, None], null.expand_as(cond), cond)  # (B, d)
    x_t = q_sample(schedule, x0, t, noise)
    return torch.nn.functional.mse_loss(denoiser(x_t, cond, t), x0)


def guided_x0(
    denoiser: Denoiser,
    x: torch.Tensor,
    cond: torch.Tensor,
    null: torch.Tensor,
    t: torch.Tensor,
    w: float,
) -> torch.Tensor:
    """Classifier-free guidance: (1 + w) f(x, c, t) - w f(x, null, t); (B, d) -> (B, d)."""
    conditional = denoiser(x, cond, t)
    if w == 0:
        return conditional
    unconditional = denoiser(x, null.expand_as(cond), t)
    return guidance_mix(conditional, unconditional, w)


def guidance_mix(conditional: torch.Tensor, unconditional: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance's mix (1 + w) a - w b of a conditional and an unconditional term.

    The terms are x0 estimates (`guided_x0`), or, for a denoiser linear in its condition, the condition and the
    null embedding themselves (``DreamRecEncoder.guided_x0_fn``).
    """
    return (1 + w) * conditional - w * unconditional


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` distinct indices from T-1 down to 0, evenly spaced (the network sees these t)."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"DDIM steps must be in [1, T={timesteps}], got {steps}")
    if steps == 1:
        return [timesteps - 1]
    grid = torch.linspace(timesteps - 1, 0, steps, dtype=torch.float64).round().long()
    return [int(v) for v in grid]


def ddim_step(
    x: torch.Tensor, x0_hat: torch.Tensor, abar_t: float, abar_prev: float
) -> torch.Tensor:
    """One deterministic DDIM (eta = 0) update from level abar_t to abar_prev; (B, d) -> (B, d).

    x_prev = c1 x0_hat + c2 x with c2 = sqrt(1 - abar_prev) / sqrt(1 - abar_t) and
    c1 = sqrt(abar_prev) - c2 sqrt(abar_t); abar_prev = 1 returns x0_hat.
    """
    c2 = math.sqrt(1 - abar_prev) / math.sqrt(1 - abar_t)
    c1 = math.sqrt(abar_prev) - c2 * math.sqrt(abar_t)
    return c1 * x0_hat + c2 * x


def cfg_x0_fn(denoiser: Denoiser, cond: torch.Tensor, null: torch.Tensor, w: float) -> X0Fn:
    """The guided x0 estimate of ``guided_x0`` as a sampler's ``x0_fn(x_t, t)``; cond (B, d), null (d,)."""

    def x0_fn(x: torch.Tensor, t: int) -> torch.Tensor:
        t_vec = torch.full((cond.shape[0],), t, dtype=torch.long, device=cond.device)  # (B,)
        return guided_x0(denoiser, x, cond, null, t_vec, w)

    return x0_fn


def ddim_sample(x0_fn: X0Fn, schedule: Schedule, x_init: torch.Tensor, steps: int) -> torch.Tensor:
    """Deterministic DDIM from ``x_init`` (B, d) in ``steps`` calls of ``x0_fn``; returns x0 (B, d).

    The step schedule is a Python loop over constants, so tracing it unrolls it into one graph.
    """
    ts = ddim_timesteps(schedule.timesteps, steps)
    abar = schedule.alphas_cumprod
    x = x_init
    for i, t in enumerate(ts):
        prev = float(abar[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        x = ddim_step(x, x0_fn(x, t), float(abar[t]), prev)  # (B, d)
    return x


def ancestral_sample(
    x0_fn: X0Fn,
    schedule: Schedule,
    x_init: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Full ancestral sampling over all T steps: x_{t-1} ~ q(x_{t-1} | x_t, x0_hat); returns (B, d)."""
    betas, abar, prev = schedule.betas, schedule.alphas_cumprod, schedule.alphas_cumprod_prev
    x = x_init
    for t in range(schedule.timesteps - 1, -1, -1):
        x0_hat = x0_fn(x, t)  # (B, d)
        b, a, ap = float(betas[t]), float(abar[t]), float(prev[t])
        mean = (b * math.sqrt(ap) / (1 - a)) * x0_hat + ((1 - ap) * math.sqrt(1 - b) / (1 - a)) * x
        if t == 0:
            return mean
        var = b * (1 - ap) / (1 - a)
        noise = torch.randn(x.shape, generator=generator).to(x)  # (B, d)
        x = mean + math.sqrt(var) * noise
    return x
