"""DreamRec: guided sampling identities, determinism, a few training steps on real data, cold items' ID part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.alphafuse import fit_semantic_basis
from training.config import load_config
from training.experiment import prepare
from training.items.embeddings import AlphaFuseEmbedding, build_item_embedding
from training.models import diffusion as dif
from training.models.dreamrec import (
    DiffusionSettings,
    DreamRec,
    DreamRecConfig,
    DreamRecEncoder,
)
from training.models.sasrec import SASRecConfig
from training.run.builder import dreamrec_config

CONFIGS = Path(__file__).resolve().parents[3] / "training" / "configs"


def _encoder(dim: int = 16, **settings: object) -> DreamRecEncoder:
    torch.manual_seed(0)
    cfg = DreamRecConfig(SASRecConfig(dim=dim, max_len=6), DiffusionSettings(**settings))  # type: ignore[arg-type]
    return DreamRecEncoder(cfg).eval()


def _histories(dim: int, batch: int = 5, length: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(batch, length, dim, generator=gen)  # (B, L, d)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:2, :3] = False
    return emb * mask[..., None], mask


@torch.no_grad()
def test_fast_guidance_equals_two_denoiser_calls() -> None:
    enc = _encoder(w=3.0)
    emb, mask = _histories(16)
    cond = enc.condition.encode(emb, mask)  # (B, d)
    x = torch.randn(5, 16)
    for t in (0, 17, 1999):
        fast = enc.guided_x0_fn(cond)(x, t)
        slow = dif.cfg_x0_fn(enc.denoise, cond, enc.null, 3.0)(x, t)
        assert torch.allclose(fast, slow, atol=1e-5)


@torch.no_grad()
def test_encode_is_deterministic_and_follows_the_sampler_settings() -> None:
    enc = _encoder(steps=5)
    emb, mask = _histories(16)
    first = enc.encode(emb, mask)
    assert first.shape == (5, 16)
    assert torch.equal(first, enc.encode(emb, mask))
    # the same DDIM by hand: zero start, 5 steps, guided by w = 5
    cond = enc.condition.encode(emb, mask)
    by_hand = dif.ddim_sample(
        dif.cfg_x0_fn(enc.denoise, cond, enc.null, 5.0), enc.schedule, torch.zeros(5, 16), 5
    )
    assert torch.allclose(first, by_hand, atol=1e-4)
    enc.steps = 1
    assert not torch.allclose(first, enc.encode(emb, mask))
    enc.sampler = "ancestral"
    anc = enc.encode(emb, mask)
    assert torch.equal(anc, enc.encode(emb, mask))  # seeded
    seeded = _encoder(init_noise="seeded", noise_seed=3)
    assert float(seeded.init_noise.abs().sum()) > 0
    assert float(_encoder().init_noise.abs().sum()) == 0


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="steps"):
        DiffusionSettings(timesteps=10, steps=11)
    with pytest.raises(ValueError, match="p_uncond"):
        DiffusionSettings(p_uncond=1.0)
    with pytest.raises(ValueError, match="guidance"):
        DiffusionSettings(w=-1.0)
    with pytest.raises(ValueError, match="steps=30 > timesteps=20"):
        load_config(
            CONFIGS / "amazon14-beauty-dreamrec.toml",
            ["diffusion.timesteps=20", "diffusion.steps=30"],
        )


def test_alphafuse_diffusion_form_config() -> None:
    cfg = load_config(CONFIGS / "amazon14-beauty-dreamrec.toml")
    assert cfg.model.name == "dreamrec"
    assert cfg.embedding.null_dim is None
    assert cfg.embedding.null_threshold == 0.25
    assert cfg.data.protocol == "cold_start_users"
    sports = load_config(CONFIGS / "amazon14-sports-dreamrec.toml")
    assert sports.data.protocol == "cold_start_users"
    assert "sports" in str(sports.data.source.path)
    built = dreamrec_config(cfg, 10)
    assert (built.dim, built.max_len, built.diffusion.w) == (384, 10, 5.0)


def test_training_steps_on_real_data_lower_the_loss_and_keep_cold_ids_zero(
    shared_data: Path,
) -> None:
    """ml-100k with its text: AlphaFuse in the diffusion form (d = d_l, null space by threshold), a few AdamW
    steps; the loss falls and the ID rows of items marked unseen stay exactly zero."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = load_config(
        CONFIGS / "amazon14-beauty-dreamrec.toml",
        [
            'data.source={format="recbole", path="' + str(shared_data / "ml-100k") + '"}',
            "data.max_sequence_length=30",
        ],
    )
    prepared = prepare(config)
    text = prepared.text_embeddings
    assert text is not None
    basis = fit_semantic_basis(text, dim=None, null_threshold=0.25)
    assert basis.dim == text.shape[1]  # no clipping
    assert basis.null_dim == int((basis.eigenvalues <= 0.25).sum()) > 0
    n = prepared.split.num_items
    seen = np.ones(n, dtype=bool)
    cold = np.arange(0, n, 7)
    seen[cold] = False
    items = build_item_embedding(
        "alphafuse", n, basis.dim, basis=basis, text_embeddings=text, id_init="normal", seen=seen
    )
    assert isinstance(items, AlphaFuseEmbedding)
    model = DreamRec(items, DreamRecEncoder(dreamrec_config(config, prepared.split.max_len)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    train = prepared.split.train
    rows = torch.randperm(len(train.targets))[:128]
    hist = torch.from_numpy(train.histories)[rows]  # (128, L)
    tgt = torch.from_numpy(train.targets)[rows].clone()  # (128,)
    tgt[:32] = torch.from_numpy(cold[:32])  # cold items as targets: x0 must not move their ID rows
    torch.manual_seed(1)
    with torch.no_grad():
        before = float(model.loss(hist, tgt, None))
    for _ in range(25):
        loss = model.loss(hist, tgt, None)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    torch.manual_seed(1)
    with torch.no_grad():
        assert float(model.loss(hist, tgt, None)) < before
    table = items.table().detach()
    language = items.language[:n]
    assert torch.equal(table[cold], language[cold])  # ID part exactly zero
    assert not torch.equal(table[seen], language[seen])
    model.eval()
    with torch.no_grad():
        scores = model.scores(torch.from_numpy(prepared.split.test.histories[:4]))
    assert scores.shape == (4, n)
    assert bool(torch.isfinite(scores).all())
