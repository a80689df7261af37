"""The language -> ID-part ridge map in core.id_map: exact recovery, lambda choice, seeding, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.id_map import fit_id_map, predict_id


def _language_and_map(
    n: int, d: int, d_n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))  # (n, d), whitened-like language coordinates
    A = rng.normal(size=(d, d_n))  # (d, d_n)
    b = rng.normal(size=d_n)  # (d_n,)
    return X, A, b


@settings(deadline=None, max_examples=20)
@given(n=st.integers(40, 120), d=st.integers(1, 12), d_n=st.integers(1, 6), seed=st.integers(0, 99))
def test_id_map_recovers_a_noiseless_linear_map_exactly(
    n: int, d: int, d_n: int, seed: int
) -> None:
    X, A, b = _language_and_map(n, d, d_n, seed)
    X = X + 3.0  # not centred: the intercept must absorb it
    id_map = fit_id_map(X, X @ A + b, ridges=[10.0, 0.0, 1.0], seed=seed)
    assert id_map.ridge == 0.0
    np.testing.assert_allclose(id_map.weights, A, atol=1e-8)
    np.testing.assert_allclose(id_map.y_mean - id_map.x_mean @ id_map.weights, b, atol=1e-8)
    assert id_map.heldout_r2 == pytest.approx(1.0, abs=1e-10)
    X_new = np.random.default_rng(seed + 1).normal(size=(5, d))
    np.testing.assert_allclose(predict_id(X_new, id_map), X_new @ A + b, atol=1e-8)


def test_default_ridge_grid_nearly_recovers_the_map_and_reports_r2() -> None:
    X, A, b = _language_and_map(600, 16, 4)
    Y = X @ A + b + 0.1 * np.random.default_rng(5).normal(size=(600, 4))
    id_map = fit_id_map(X, Y, seed=3)
    signal = float(np.var(X @ A, axis=0).sum())
    assert id_map.heldout_r2 == pytest.approx(signal / (signal + 4 * 0.01), abs=0.01)
    np.testing.assert_allclose(id_map.weights, A, atol=0.05)


def test_pure_noise_targets_choose_a_larger_ridge_than_a_signal() -> None:
    X, A, _ = _language_and_map(300, 32, 8)
    noise = np.random.default_rng(7).normal(size=(300, 8))
    signal = fit_id_map(X, X @ A + 0.5 * noise, seed=1)
    pure_noise = fit_id_map(X, noise, seed=1)
    assert pure_noise.ridge > signal.ridge
    assert pure_noise.heldout_r2 < 0.05 < 0.5 < signal.heldout_r2
    # a large ridge shrinks the noise fit towards the constant mean ID part
    assert np.abs(pure_noise.weights).max() < 0.1 * np.abs(signal.weights).max()


def test_the_held_out_draw_is_seeded() -> None:
    X, A, _ = _language_and_map(200, 10, 3)
    Y = X @ A + np.random.default_rng(2).normal(size=(200, 3))
    a, b = fit_id_map(X, Y, seed=4), fit_id_map(X, Y, seed=4)
    assert (a.ridge, a.heldout_r2) == (b.ridge, b.heldout_r2)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert fit_id_map(X, Y, seed=5).heldout_r2 != a.heldout_r2


def test_constant_targets_choose_the_largest_ridge() -> None:
    X, _, _ = _language_and_map(100, 6, 2)
    id_map = fit_id_map(X, np.zeros((100, 2)), ridges=[0.0, 1.0, 5.0])
    assert id_map.ridge == 5.0
    np.testing.assert_array_equal(predict_id(X[:3], id_map), 0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id_parts": np.zeros((49, 2))}, "has 49"),
        ({"holdout": 1.0}, "holdout must be in"),
        ({"holdout": 0.0}, "holdout=0 cannot choose"),
        ({"ridges": [-1.0]}, "non-negative"),
        ({"ridges": []}, "not empty"),
        ({"language": np.zeros(50)}, "must be 2-D"),
    ],
)
def test_bad_id_map_arguments_raise(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "language": np.random.default_rng(0).normal(size=(50, 6)),
        "id_parts": np.zeros((50, 2)),
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        fit_id_map(**args)  # type: ignore[arg-type]
