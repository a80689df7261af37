"""The diffusion process apart from the network: schedules, q_sample, CFG loss and guidance, DDIM, ancestral."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from training.models import diffusion as dif

NAMES: list[dif.ScheduleName] = ["linear", "cosine", "exp", "sqrt"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("T", [1, 50, 2000])
def test_schedules_are_valid_and_abar_decreases(name: dif.ScheduleName, T: int) -> None:
    betas = dif.beta_schedule(name, T)
    assert betas.shape == (T,)
    assert betas.dtype == torch.float64
    assert bool(((betas > 0) & (betas < 1)).all())
    s = dif.make_schedule(betas)
    abar = s.alphas_cumprod
    assert torch.allclose(abar, torch.cumprod(1 - betas, 0))
    assert bool((abar[1:] < abar[:-1]).all())
    assert 0 < float(abar[-1]) <= float(abar[0]) < 1
    assert float(s.alphas_cumprod_prev[0]) == 1.0
    assert torch.equal(s.alphas_cumprod_prev[1:], abar[:-1])


def test_schedule_closed_forms() -> None:
    T = 1000
    lin = dif.beta_schedule("linear", T, 1e-4, 0.02)
    assert float(lin[0]) == pytest.approx(1e-4)
    assert float(lin[-1]) == pytest.approx(0.02)
    assert bool((lin[1:] > lin[:-1]).all())
    # cosine: 1 - beta_t = f(t+1) / f(t), f(t) = cos^2(((t/T) + s) / (1 + s) * pi / 2), clipped to [1e-4, 0.9999]
    abar = dif.make_schedule(dif.beta_schedule("cosine", T)).alphas_cumprod

    def f(t: float) -> float:
        return math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2

    k = T // 2
    assert float(abar[k] / abar[k - 1]) == pytest.approx(f(k + 1) / f(k), rel=1e-9)
    assert float(1 - abar[0]) == pytest.approx(1e-4)  # the first beta (4e-5 unclipped) is clipped
    # exp: 1 - beta_t = exp(-(b_min / T) - x_t (b_max - b_min) / (2 T^2)), x = linspace(1, 2T + 1, T)
    exp = dif.beta_schedule("exp", T)
    assert float(exp[0]) == pytest.approx(1 - math.exp(-0.1 / T - 9.9 / (2 * T * T)))
    assert bool((exp[1:] > exp[:-1]).all())
    # sqrt: abar_t = (1 - sqrt((t+1)/T + 1e-4)) / (1 - sqrt(1e-4)) until the 0.999 cap
    sq = dif.make_schedule(dif.beta_schedule("sqrt", T)).alphas_cumprod
    expected = (1 - math.sqrt(10 / T + 1e-4)) / (1 - math.sqrt(1e-4))
    assert float(sq[9]) == pytest.approx(expected, rel=1e-9)


def test_bad_schedules_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown beta schedule"):
        dif.beta_schedule("quadratic", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timesteps"):
        dif.beta_schedule("linear", 0)
    with pytest.raises(ValueError, match="beta_start"):
        dif.beta_schedule("linear", 10, 0.1, 0.01)


def test_q_sample_mean_and_variance() -> None:
    s = dif.make_schedule(dif.beta_schedule("linear", 2000))
    gen = torch.Generator().manual_seed(0)
    n, d = 200_000, 3
    x0 = torch.tensor([1.5, -2.0, 0.5]).expand(n, d)
    for t in (0, 500, 1999):
        noise = torch.randn(n, d, generator=gen, dtype=torch.float64)
        x_t = dif.q_sample(s, x0.double(), torch.full((n,), t), noise)  # (n, d)
        a = float(s.alphas_cumprod[t])
        se = math.sqrt((1 - a) / n)
        assert torch.allclose(x_t.mean(0), math.sqrt(a) * x0[0].double(), atol=5 * se + 1e-12)
        assert torch.allclose(x_t.var(0), torch.full((d,), 1 - a, dtype=torch.float64), rtol=0.02)


def test_ddim_step_matches_its_closed_form() -> None:
    gen = torch.Generator().manual_seed(1)
    x, x0_hat = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    a_t, a_prev = 0.3, 0.8
    eps_hat = (x - math.sqrt(a_t) * x0_hat) / math.sqrt(1 - a_t)
    expected = math.sqrt(a_prev) * x0_hat + math.sqrt(1 - a_prev) * eps_hat
    assert torch.allclose(dif.ddim_step(x, x0_hat, a_t, a_prev), expected, atol=1e-6)
    # the AlphaFuse form: c1 = sqrt(a_prev) - sqrt(1 - a_prev) / sqrt(1 / a_t - 1),
    # c2 = sqrt(1 - a_prev) / sqrt(1 - a_t)
    c1 = math.sqrt(a_prev) - math.sqrt(1 - a_prev) / math.sqrt(1 / a_t - 1)
    c2 = math.sqrt(1 - a_prev) / math.sqrt(1 - a_t)
    assert torch.allclose(dif.ddim_step(x, x0_hat, a_t, a_prev), c1 * x0_hat + c2 * x, atol=1e-6)
    assert torch.equal(dif.ddim_step(x, x0_hat, a_t, 1.0), x0_hat)


def test_ddim_timesteps() -> None:
    assert dif.ddim_timesteps(2000, 1) == [1999]
    ts = dif.ddim_timesteps(2000, 20)
    assert len(ts) == 20 == len(set(ts))
    assert ts[0] == 1999
    assert ts[-1] == 0
    assert all(a > b for a, b in itertools.pairwise(ts))
    assert dif.ddim_timesteps(5, 5) == [4, 3, 2, 1, 0]
    with pytest.raises(ValueError, match="DDIM steps"):
        dif.ddim_timesteps(10, 11)


def test_guidance_combination() -> None:
    calls: list[torch.Tensor] = []

    def f(x: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(c)
        return 2 * c + x + t[:, None].float()

    x, c, null, t = torch.ones(3, 2), torch.randn(3, 2), torch.tensor([5.0, -1.0]), torch.arange(3)
    w = 1.5
    got = dif.guided_x0(f, x, c, null, t, w)
    expected = (1 + w) * f(x, c, t) - w * f(x, null.expand(3, 2), t)
    assert torch.allclose(got, expected)
    assert torch.allclose(got, 2 * ((1 + w) * c - w * null) + x + t[:, None])
    calls.clear()
    assert torch.equal(dif.guided_x0(f, x, c, null, t, 0.0), f(x, c, t))
    assert len(calls) == 2


def test_samplers_return_x0_of_a_perfect_denoiser() -> None:
    """A denoiser that always predicts x0 makes DDIM (any step count) and the ancestral sampler return x0."""
    s = dif.make_schedule(dif.beta_schedule("linear", 100))
    target = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))

    def f(x: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return target

    null, x_init = torch.zeros(4), torch.randn(3, 4)
    for steps in (1, 2, 7, 100):
        got = dif.ddim_sample(dif.cfg_x0_fn(f, torch.zeros(3, 4), null, 2.0), s, x_init, steps)
        assert torch.allclose(got, target, atol=1e-5)
    got = dif.ancestral_sample(dif.cfg_x0_fn(f, torch.zeros(3, 4), null, 2.0), s, x_init)
    assert torch.allclose(got, target, atol=1e-5)


def test_ddim_inverts_q_sample_with_the_true_noise() -> None:
    """With x0_hat = x0, one DDIM step from x_t lands exactly on q_sample at the earlier level, same noise."""
    s = dif.make_schedule(dif.beta_schedule("cosine", 500))
    gen = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(5, 8, generator=gen).double(), torch.randn(5, 8, generator=gen).double()
    x_t = dif.q_sample(s, x0, torch.full((5,), 400), eps)
    x_prev = dif.ddim_step(x_t, x0, float(s.alphas_cumprod[400]), float(s.alphas_cumprod[100]))
    assert torch.allclose(x_prev, dif.q_sample(s, x0, torch.full((5,), 100), eps), atol=1e-10)


def test_x0_loss_drops_the_condition_with_probability_p() -> None:
    s = dif.make_schedule(dif.beta_schedule("linear", 50))
    seen: list[torch.Tensor] = []

    def f(x: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(c.clone())
        return x * 0

    n = 20_000
    x0, cond, null = torch.ones(n, 2), torch.zeros(n, 2), torch.full((2,), 7.0)
    gen = torch.Generator().manual_seed(4)
    loss = dif.x0_loss(f, s, x0, cond, null, p_uncond=0.1, generator=gen)
    assert float(loss) == pytest.approx(1.0)  # predicting zero for x0 = 1
    dropped = (seen[-1] == 7.0).all(1).float().mean()
    assert float(dropped) == pytest.approx(0.1, abs=0.01)
    dif.x0_loss(f, s, x0, cond, null, p_uncond=0.0, generator=gen)
    assert not bool((seen[-1] == 7.0).any())
    dif.x0_loss(f, s, x0, cond, null, p_uncond=1.0, generator=gen)
    assert bool((seen[-1] == 7.0).all())
    with pytest.raises(ValueError, match="p_uncond"):
        dif.x0_loss(f, s, x0, cond, null, p_uncond=1.5)
