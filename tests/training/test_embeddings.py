"""Item-embedding modes: parity with core.alphafuse, frozen language part, cold ID rows held at zero."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.alphafuse import fit_semantic_basis, fuse, map_language, project
from training.config import load_config
from training.items.embeddings import (
    AlphaFuseEmbedding,
    ItemEmbedding,
    build_item_embedding,
    has_semantic_query,
)
from training.models.recommender import LossConfig, SequentialRecommender
from training.models.sasrec import SASRec, SASRecConfig
from training.run.loop import parameter_groups

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "ml-100k.toml"


def _text(n: int = 60, D: int = 24) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, D)).astype(np.float32)


def _fit_table(items: ItemEmbedding, target: torch.Tensor, steps: int) -> None:
    """``steps`` Adam steps (lr 1e-2) of the trainable weights toward ``items.table() == target``."""
    opt = torch.optim.Adam([p for p in items.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        loss = ((items.table() - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_alphafuse_table_matches_core_fuse() -> None:
    E = _text()
    basis = fit_semantic_basis(E, dim=16, null_dim=6)
    items = build_item_embedding(
        "alphafuse", 60, 16, basis=basis, text_embeddings=E, id_init="normal"
    )
    assert isinstance(items, AlphaFuseEmbedding)
    expected = fuse(project(E, basis), items.id_table().detach().numpy(), basis)
    np.testing.assert_allclose(items.table().detach().numpy(), expected, atol=1e-5)
    gathered = items(torch.tensor([[3, 60, 5]]))  # 60 = padding
    np.testing.assert_allclose(gathered[0, 0].detach().numpy(), expected[3], atol=1e-5)
    assert torch.count_nonzero(gathered[0, 1]) == 0


def test_llminit_starts_from_whitened_pca() -> None:
    E = _text()
    items = build_item_embedding("llminit", 60, 8, text_embeddings=E)
    pca = project(E, fit_semantic_basis(E, dim=8, null_dim=0))
    np.testing.assert_allclose(items.table().detach().numpy(), pca, atol=1e-5)
    assert items.table().requires_grad


def test_training_moves_only_seen_id_rows_and_never_the_language_part() -> None:
    torch.manual_seed(0)
    E = _text()
    basis = fit_semantic_basis(E, dim=16, null_dim=8)
    seen = np.zeros(60, dtype=bool)
    seen[:40] = True
    items = build_item_embedding(
        "alphafuse", 60, 16, basis=basis, text_embeddings=E, id_init="normal", seen=seen
    )
    model = SequentialRecommender(items, SASRec(SASRecConfig(dim=16, max_len=5)), LossConfig("ce"))
    language_before = items.language.clone()  # type: ignore[union-attr]
    table_before = items.table().detach().clone()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(5):
        hist = torch.randint(0, 40, (32, 5))
        loss = model.loss(
            hist, torch.randint(0, 40, (32,)), None
        )  # full softmax: all items get gradient
        opt.zero_grad()
        loss.backward()
        opt.step()
    table_after = items.table().detach()
    torch.testing.assert_close(items.language, language_before)  # type: ignore[union-attr]
    assert not torch.allclose(table_after[:40], table_before[:40])
    np.testing.assert_allclose(table_after[40:].numpy(), project(E[40:], basis), atol=1e-5)


def test_build_errors() -> None:
    with pytest.raises(ValueError, match="needs text_embeddings with 60 rows"):
        build_item_embedding("llminit", 60, 8)
    with pytest.raises(ValueError, match="basis with dim=8"):
        build_item_embedding("alphafuse", 60, 8, text_embeddings=_text())
    with pytest.raises(ValueError, match="unknown item-embedding mode"):
        build_item_embedding("nope", 60, 8, text_embeddings=_text())  # type: ignore[arg-type]


def test_zero_init_alphafuse_is_llminit_with_the_semantic_columns_frozen() -> None:
    """Under the same basis settings, AlphaFuse with a zero ID init starts from the LLMInit table and trains
    like LLMInit whose first d_s columns receive no gradient (the AlphaFuse-vs-LLMInit comparison of issue 2)."""
    E, d, d_n = _text(), 16, 6
    basis = fit_semantic_basis(E, dim=d, null_dim=d_n)
    af = build_item_embedding("alphafuse", 60, d, basis=basis, text_embeddings=E, id_init="zeros")
    ll = build_item_embedding("llminit", 60, d, text_embeddings=E)
    torch.testing.assert_close(af.table(), ll.table())
    frozen = torch.ones(61, d)
    frozen[:, : d - d_n] = 0.0
    ll_weight = ll.weight.weight  # type: ignore[union-attr]
    ll_weight.register_hook(lambda g: g * frozen)
    target = torch.from_numpy(np.random.default_rng(1).normal(size=(60, d)).astype(np.float32))
    start = ll.table().detach().clone()
    for items in (af, ll):
        opt = torch.optim.Adam([p for p in items.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(3):
            loss = ((items.table() - target) ** 3).abs().sum()  # any loss of the table will do
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.testing.assert_close(af.table(), ll.table())
    torch.testing.assert_close(af.table()[:, : d - d_n], start[:, : d - d_n])
    assert not torch.allclose(af.table()[:, d - d_n :], start[:, d - d_n :])


def test_id_dropout_zeroes_whole_id_parts_in_training_only() -> None:
    torch.manual_seed(0)
    E, d, d_n = _text(), 16, 6
    basis = fit_semantic_basis(E, dim=d, null_dim=d_n)
    items = build_item_embedding(
        "alphafuse", 60, d, basis=basis, text_embeddings=E, id_init="normal", id_dropout=0.5
    )
    lang = items.language[:60]  # type: ignore[union-attr]
    full = items.table().detach().clone()  # built in training mode: some rows dropped
    items.eval()
    exact = items.table().detach()
    torch.testing.assert_close(exact[:, d - d_n :], lang[:, d - d_n :] + items.id_table().detach())
    items.train()
    for got in (items.table().detach(), items(torch.arange(60).repeat(50)).detach()):
        torch.testing.assert_close(got[:, : d - d_n], lang.repeat(len(got) // 60, 1)[:, : d - d_n])
        ref = exact.repeat(len(got) // 60, 1)
        kept = torch.isclose(got, ref).all(1)
        dropped = torch.isclose(got, lang.repeat(len(got) // 60, 1)).all(1)
        assert bool((kept ^ dropped).all())  # each row is whole or has its ID part zero
        assert 0.35 < float(dropped.float().mean()) < 0.65
    assert not torch.equal(full, exact)
    with pytest.raises(ValueError, match="id_dropout"):
        build_item_embedding("llminit", 60, 8, text_embeddings=E, id_dropout=0.1)
    with pytest.raises(ValueError, match="id_dropout"):
        build_item_embedding("alphafuse", 60, d, basis=basis, text_embeddings=E, id_dropout=1.0)


def test_full_width_null_space_with_zero_ids_is_llminit_and_trains_like_it() -> None:
    """null_dim = dim puts an ID part on every coordinate: with a zero ID init the table starts and trains as
    LLMInit's does, and a new item (ID part zero) is still its text's projection."""
    E, d = _text(), 16
    basis = fit_semantic_basis(E, dim=d, null_dim=d)
    af = build_item_embedding("alphafuse", 60, d, basis=basis, text_embeddings=E, id_init="zeros")
    ll = build_item_embedding("llminit", 60, d, text_embeddings=E)
    target = torch.from_numpy(np.random.default_rng(1).normal(size=(60, d)).astype(np.float32))
    for items in (af, ll):
        _fit_table(items, target, steps=3)
    torch.testing.assert_close(af.table(), ll.table())
    assert not has_semantic_query(
        af
    )  # no pure-language coordinates left for the query's content term
    torch.testing.assert_close(af.language[:60], torch.from_numpy(project(E, basis)).float())  # type: ignore[union-attr]


def test_id_decay_shrinks_the_id_table_alone() -> None:
    """embedding.id_decay is AdamW's decoupled decay on the ID table only: with no gradient, one step scales the
    ID rows by (1 - lr * id_decay) and leaves every other weight as it was."""
    E, d, d_n = _text(), 16, 6
    basis = fit_semantic_basis(E, dim=d, null_dim=d_n)
    items = build_item_embedding(
        "alphafuse", 60, d, basis=basis, text_embeddings=E, id_init="normal"
    )
    model = SequentialRecommender(
        items, SASRec(SASRecConfig(dim=d, max_len=6)), LossConfig("infonce", 5)
    )
    config = load_config(
        CONFIG, ["embedding.id_decay=2.0", "train.weight_decay=0.0", "train.lr=0.1"]
    )
    groups = parameter_groups(model, config)
    assert [len(g["params"]) for g in groups][1:] == [1]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = torch.optim.AdamW(groups, lr=0.1, weight_decay=0.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        scale = 1 - 0.1 * 2.0 if name == "items.ids.weight" else 1.0
        torch.testing.assert_close(p.detach(), before[name] * scale)
    assert len(parameter_groups(model, load_config(CONFIG, []))) == 1
    with pytest.raises(ValueError, match="id_decay applies to mode 'alphafuse' only"):
        load_config(CONFIG, ['embedding.mode="llminit"', "embedding.id_decay=1.0"])


@pytest.mark.parametrize("kind", ["scale", "linear"])
def test_language_map_starts_as_identity_and_new_items_get_it_from_their_text(kind: str) -> None:
    """embedding.language_map: one trainable map shared by every language part. It starts as the identity; once
    trained it moves every row's language part (the frozen buffer stays), and an item with no ID part is exactly
    its text projected through the basis with the map folded in (what the service does for a new item)."""
    torch.manual_seed(0)
    E, d, d_n = _text(), 16, 6
    basis = fit_semantic_basis(E[:50], dim=d, null_dim=d_n)
    seen = np.arange(60) < 50  # the last 10 items are new: their ID part stays zero
    plain = build_item_embedding("alphafuse", 60, d, basis=basis, text_embeddings=E, seen=seen)
    items = build_item_embedding(
        "alphafuse",
        60,
        d,
        basis=basis,
        text_embeddings=E,
        seen=seen,
        language_map=kind,  # type: ignore[arg-type]
    )
    assert isinstance(items, AlphaFuseEmbedding)
    torch.testing.assert_close(items.table(), plain.table())
    frozen = items.language.clone()
    target = torch.from_numpy(np.random.default_rng(1).normal(size=(60, d)).astype(np.float32))
    _fit_table(items, target, steps=5)
    with torch.no_grad():
        matrix = items.language_map_matrix()
    assert matrix is not None
    assert float((matrix - torch.eye(d)).abs().max()) > 1e-3  # the map trained
    assert kind == "linear" or torch.equal(matrix, torch.diag(torch.diagonal(matrix)))
    assert torch.equal(items.language, frozen)
    folded = map_language(basis, matrix.double().numpy())
    with torch.no_grad():
        np.testing.assert_allclose(
            items.table()[50:].numpy(), project(E[50:], folded), rtol=1e-4, atol=1e-4
        )
        np.testing.assert_allclose(
            items(torch.arange(60)).numpy(), items.table().numpy(), rtol=1e-5, atol=1e-5
        )
    assert plain.language_map_matrix() is None  # type: ignore[operator]
    with pytest.raises(ValueError, match="language_map applies to mode 'alphafuse' only"):
        load_config(CONFIG, ['embedding.mode="llminit"', 'embedding.language_map="linear"'])


def test_a_trained_semantic_query_needs_language_coordinates() -> None:
    assert load_config(CONFIG, ["model.semantic_query_beta=0.5"]).model.semantic_query_beta == 0.5
    for bad in ('embedding.mode="llminit"', "embedding.null_dim=128", "embedding.null_dim=0"):
        with pytest.raises(ValueError, match="semantic_query_beta needs"):
            load_config(CONFIG, ["model.semantic_query_beta=0.5", bad])
