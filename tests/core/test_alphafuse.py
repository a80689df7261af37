"""Property tests of the AlphaFuse math in core.alphafuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.alphafuse import (
    cold_start,
    fit_semantic_basis,
    fuse,
    load_basis,
    map_language,
    project,
    save_basis,
)
from core.id_map import fit_id_map, predict_id


def _embeddings(n: int, D: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # anisotropic, correlated, non-centred: a realistic language-embedding cloud
    mixing = rng.normal(size=(D, D)) * np.geomspace(1.0, 1e-2, D)
    return rng.normal(size=(n, D)) @ mixing.T + rng.normal(size=D)


def test_kept_coordinates_have_identity_covariance() -> None:
    E = _embeddings(400, 24)
    basis = fit_semantic_basis(E, dim=16, null_dim=6)
    L = project(E, basis)
    np.testing.assert_allclose(L.mean(0), 0.0, atol=1e-10)
    np.testing.assert_allclose(np.cov(L, rowvar=False), np.eye(16), atol=1e-9)


def test_popularity_weighted_covariance_is_identity_under_the_weights() -> None:
    E = _embeddings(300, 12, seed=1)
    w = np.random.default_rng(2).integers(1, 50, size=300).astype(float)
    basis = fit_semantic_basis(E, dim=12, null_dim=4, weights=w)
    L = project(E, basis)
    p = w / w.sum()
    mean = p @ L
    np.testing.assert_allclose(mean, 0.0, atol=1e-9)
    np.testing.assert_allclose((L * p[:, None]).T @ L, np.eye(12), atol=1e-9)


def test_scale_cancels_under_standardization_but_moves_threshold() -> None:
    E = _embeddings(200, 10)
    a = project(E, fit_semantic_basis(E, dim=8, null_dim=2, scale=1.0))
    b = project(E, fit_semantic_basis(E, dim=8, null_dim=2, scale=40.0))
    np.testing.assert_allclose(np.abs(a), np.abs(b), atol=1e-8)  # eigenvector signs may flip
    raw = fit_semantic_basis(E, null_threshold=1e-3, scale=1.0)
    scaled = fit_semantic_basis(E, null_threshold=1e-3 * 1600, scale=40.0)
    assert raw.null_dim == scaled.null_dim


@settings(deadline=None, max_examples=25)
@given(
    n=st.integers(20, 80),
    D=st.integers(4, 16),
    data=st.data(),
)
def test_fuse_changes_only_the_null_coordinates(n: int, D: int, data: st.DataObject) -> None:
    dim = data.draw(st.integers(1, D))
    null_dim = data.draw(st.integers(0, dim))
    cover = data.draw(st.booleans())
    E = _embeddings(n, D, seed=n)
    basis = fit_semantic_basis(E, dim=dim, null_dim=null_dim, cover=cover)
    L = project(E, basis)
    ids = np.random.default_rng(0).normal(size=(n, null_dim))
    F = fuse(L, ids, basis)
    assert F.shape == (n, dim)
    np.testing.assert_array_equal(F[:, : dim - null_dim], L[:, : dim - null_dim])
    expected_null = ids if cover else L[:, dim - null_dim :] + ids
    np.testing.assert_allclose(F[:, dim - null_dim :], expected_null)
    if cover:
        np.testing.assert_array_equal(L[:, dim - null_dim :], 0.0)


def test_projecting_an_items_own_text_reproduces_its_row_space_part() -> None:
    E = _embeddings(150, 20)
    basis = fit_semantic_basis(E, dim=12, null_dim=4)
    table = fuse(project(E, basis), np.zeros((150, 4)), basis)
    np.testing.assert_allclose(cold_start(E[7], basis), table[7], atol=1e-12)
    np.testing.assert_allclose(cold_start(E[:5], basis), table[:5], atol=1e-12)


def test_a_language_map_folds_into_the_basis() -> None:
    E = _embeddings(120, 16)
    basis = fit_semantic_basis(E, dim=10, null_dim=4)
    M = np.random.default_rng(3).normal(size=(10, 10))
    mapped = map_language(basis, M)
    np.testing.assert_allclose(project(E, mapped), project(E, basis) @ M, atol=1e-10)
    np.testing.assert_array_equal(mapped.eigenvalues, basis.eigenvalues)
    assert (mapped.null_dim, mapped.scale) == (basis.null_dim, basis.scale)
    with pytest.raises(ValueError, match=r"language map must be \(10, 10\)"):
        map_language(basis, np.eye(9))


def test_cold_start_id_part_is_exactly_zero() -> None:
    E = _embeddings(100, 10)
    basis = fit_semantic_basis(E, dim=8, null_dim=3, cover=True)
    cold = cold_start(E[:4], basis)
    np.testing.assert_array_equal(cold[:, 5:], 0.0)


def test_rank_deficient_covariance_gives_zero_columns_not_infinities() -> None:
    E = _embeddings(10, 32)  # N < D: at most 9 non-zero eigenvalues
    basis = fit_semantic_basis(E, null_threshold=0.25)
    L = project(E, basis)
    assert np.isfinite(L).all()
    np.testing.assert_array_equal(L[:, 9:], 0.0)
    np.testing.assert_allclose(np.cov(L[:, :9], rowvar=False), np.eye(9), atol=1e-8)
    assert basis.null_dim >= 32 - 9


def test_threshold_counts_small_eigenvalues() -> None:
    E = _embeddings(500, 16)
    basis = fit_semantic_basis(E, null_threshold=float(np.median(np.var(E * 40, axis=0))))
    assert basis.dim == 16
    expected = int((basis.eigenvalues <= float(np.median(np.var(E * 40, axis=0)))).sum())
    assert basis.null_dim == expected


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    E = _embeddings(60, 8)
    basis = fit_semantic_basis(E, dim=6, null_dim=2, cover=True)
    save_basis(basis, tmp_path / "basis.npz")
    loaded = load_basis(tmp_path / "basis.npz")
    np.testing.assert_array_equal(project(E, loaded), project(E, basis))
    assert (loaded.null_dim, loaded.cover, loaded.scale) == (2, True, 40.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 0, "null_dim": 0}, "dim must be in"),
        ({"dim": 9, "null_dim": 1}, "dim must be in"),
        ({"dim": 4, "null_dim": 5}, "null_dim must be in"),
        ({"dim": 4}, "exactly one of null_dim or null_threshold"),
        ({"dim": 4, "null_dim": 1, "null_threshold": 0.1}, "exactly one"),
        ({"null_threshold": -1.0}, "null_threshold must be >= 0"),
        ({"dim": 4, "null_dim": 1, "weights": np.ones(3)}, "weights must have shape"),
        ({"dim": 4, "null_dim": 1, "weights": -np.ones(50)}, "non-negative"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_semantic_basis(_embeddings(50, 8), **kwargs)  # type: ignore[arg-type]


def test_bad_inputs_raise() -> None:
    E = _embeddings(50, 8)
    basis = fit_semantic_basis(E, dim=4, null_dim=2)
    with pytest.raises(ValueError, match="must be 2-D"):
        fit_semantic_basis(E[0], dim=4, null_dim=2)
    bad = E.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fit_semantic_basis(bad, dim=4, null_dim=2)
    with pytest.raises(ValueError, match="dimension 7"):
        project(E[:, :7], basis)
    with pytest.raises(ValueError, match="id_embeddings must have shape"):
        fuse(project(E, basis), np.zeros((50, 3)), basis)


# ---- the ID map: language coordinates -> ID part (ridge, lambda chosen on held-out items) ----


def test_cold_start_with_an_id_map_adds_the_predicted_id_on_the_null_coordinates() -> None:
    E = _embeddings(300, 20)
    basis = fit_semantic_basis(E, dim=12, null_dim=4)
    L = project(E, basis)  # (300, 12)
    ids = L @ np.random.default_rng(1).normal(size=(12, 4)) + 0.5  # an ID part text explains
    id_map = fit_id_map(L[:250], ids[:250], ridges=[0.0])  # fitted on "trained" items only
    cold = cold_start(E[250:], basis, id_map)
    np.testing.assert_array_equal(cold[:, :8], L[250:, :8])  # semantic part: the text alone
    np.testing.assert_allclose(cold, fuse(L[250:], ids[250:], basis), atol=1e-9)
    np.testing.assert_allclose(cold_start(E[260], basis, id_map), cold[10], atol=1e-12)
    np.testing.assert_array_equal(cold_start(E[250:], basis), L[250:])  # no map: ID part zero


def test_id_map_shape_errors() -> None:
    E = _embeddings(80, 10)
    basis = fit_semantic_basis(E, dim=6, null_dim=2)
    L = project(E, basis)
    id_map = fit_id_map(L, np.ones((80, 3)), ridges=[1.0], holdout=0.0)
    assert np.isnan(id_map.heldout_r2)
    with pytest.raises(ValueError, match="fitted on 6"):
        predict_id(L[:, :5], id_map)
    with pytest.raises(ValueError, match="id_embeddings must have shape"):
        cold_start(E[:2], basis, id_map)  # d_n = 3 against the basis's 2
    with pytest.raises(ValueError, match="leave 1 to fit"):
        fit_id_map(L[:2], np.ones((2, 2)), ridges=[1.0], holdout=0.5)
