"""A ridge regression from an item's language coordinates to its trained ID part (numpy float64).

A cold-start remedy: an item that arrives after training has no learned ID part; `predict_id` estimates one from
the same text-derived coordinates, fitted on the trained items only (`fit_id_map`). `core.alphafuse.cold_start`
takes the fitted map; without one the ID part is exactly zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from core.arrays import Float64Array, IntArray, as_matrix

__all__ = ["IdMap", "fit_id_map", "predict_id"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class IdMap:
    """A ridge regression from an item's language coordinates (all d kept) to its trained ID part (d_n).

    ``predict_id(x) = (x - x_mean) @ weights + y_mean``; fitted on trained items only (`fit_id_map`).

    Attributes:
        x_mean: (d,) mean language coordinates of the fitting items.
        weights: (d, d_n) ridge coefficients.
        y_mean: (d_n,) mean ID part of the fitting items (the prediction for x = x_mean).
        ridge: lambda, the chosen ridge strength (on the unnormalised sum of squares).
        heldout_r2: R^2 of the chosen lambda on the held-out share of the items (pooled over the d_n outputs,
            each centred on its held-out mean); NaN when nothing was held out.
    """

    x_mean: Float64Array
    weights: Float64Array
    y_mean: Float64Array
    ridge: float
    heldout_r2: float


def fit_id_map(
    language: ArrayLike,
    id_parts: ArrayLike,
    *,
    ridges: ArrayLike | None = None,
    holdout: float = 0.2,
    seed: int = 0,
) -> IdMap:
    """Fit ridge regressions from language coordinates to ID parts; choose lambda on held-out items.

    The language coordinates of a standardized basis are whitened, so one lambda treats every direction alike and
    no further column scaling is applied. A seeded ``holdout`` share of the items is left out, each lambda of
    ``ridges`` is fitted on the rest and scored by held-out R^2; the best one is refitted on every item.

    Args:
        language: (N, d) language coordinates (``project``) of the trained items.
        id_parts: (N, d_n) their learned ID parts.
        ridges: candidate lambdas (>= 0); default ``logspace(-4, 4, 17)`` times the mean eigenvalue of the centred
            Gram matrix, i.e. from almost least squares to almost the constant ``y_mean``.
        holdout: the share of items held out to choose lambda, in [0, 1); 0 needs exactly one candidate.
        seed: seeds the held-out draw.

    Returns:
        The fitted `IdMap`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X, A = rng.normal(size=(400, 16)), rng.normal(size=(16, 4))
        >>> id_map = fit_id_map(X, X @ A, ridges=[0.0, 1.0])
        >>> id_map.ridge, round(id_map.heldout_r2, 6)
        (0.0, 1.0)
    """
    X, Y = as_matrix(language, "language"), as_matrix(id_parts, "id_parts")
    if len(X) != len(Y):
        raise ValueError(f"language has {len(X)} rows but id_parts has {len(Y)}")
    out, fit = _holdout_split(len(X), holdout, seed)
    n_out = len(out)
    grid = _ridge_grid(X[fit], ridges)
    if n_out == 0 and len(grid) != 1:
        raise ValueError(f"holdout=0 cannot choose among {len(grid)} ridges; give exactly one")
    r2 = (
        [_r2(Y[out], predict_id(X[out], _ridge(X[fit], Y[fit], lam))) for lam in grid]
        if n_out
        else [np.nan]
    )
    best = (
        int(np.nanargmax(r2)) if not np.isnan(r2).all() else len(grid) - 1
    )  # constant targets: max
    chosen = _ridge(X, Y, float(grid[best]))
    logger.info(
        "ID map: N=%d, d=%d, d_n=%d, ridge=%.3g, held-out R2=%.4f",
        len(X),
        X.shape[1],
        Y.shape[1],
        chosen.ridge,
        r2[best],
    )
    return IdMap(chosen.x_mean, chosen.weights, chosen.y_mean, chosen.ridge, float(r2[best]))


def _holdout_split(n: int, holdout: float, seed: int) -> tuple[IntArray, IntArray]:
    """A seeded split of n items: (held-out rows, rows to fit), the first ``round(holdout * n)`` of a permutation."""
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    order = np.random.default_rng(seed).permutation(n)
    n_out = round(holdout * n)
    out, fit = order[:n_out], order[n_out:]
    if len(fit) < 2 or (holdout > 0 and n_out < 1):
        raise ValueError(
            f"{n} items with holdout={holdout} leave {len(fit)} to fit, {n_out} held out"
        )
    return out, fit


def predict_id(language: ArrayLike, id_map: IdMap) -> Float64Array:
    """(N, d) language coordinates -> (N, d_n) predicted ID parts."""
    X = as_matrix(language, "language")
    if X.shape[1] != len(id_map.x_mean):
        raise ValueError(
            f"language has {X.shape[1]} columns, the ID map was fitted on {len(id_map.x_mean)}"
        )
    out: Float64Array = (X - id_map.x_mean) @ id_map.weights + id_map.y_mean  # (N, d_n)
    return out


def _ridge_grid(X: Float64Array, ridges: ArrayLike | None) -> Float64Array:
    if ridges is None:
        centred = X - X.mean(0)
        scale = max(float((centred**2).sum()) / X.shape[1], np.finfo(np.float64).tiny)
        default: Float64Array = np.logspace(-4.0, 4.0, 17) * scale
        return default
    grid = np.asarray(ridges, dtype=np.float64).reshape(-1)
    if len(grid) == 0 or not np.isfinite(grid).all() or (grid < 0).any():
        raise ValueError(f"ridges must be finite, non-negative and not empty, got {grid}")
    return grid


def _ridge(X: Float64Array, Y: Float64Array, lam: float) -> IdMap:
    x_mean, y_mean = X.mean(0), Y.mean(0)
    Xc = X - x_mean  # (n, d)
    U, s, Vt = np.linalg.svd(Xc, full_matrices=False)  # (n, r), (r,), (r, d)
    keep = s > 1e-12 * max(
        float(s[0]), np.finfo(np.float64).tiny
    )  # lam = 0: minimum-norm least squares
    shrink = np.zeros_like(s)
    shrink[keep] = s[keep] / (s[keep] ** 2 + lam)
    weights = Vt.T @ (shrink[:, None] * (U.T @ (Y - y_mean)))  # (d, d_n)
    return IdMap(x_mean, weights, y_mean, float(lam), float("nan"))


def _r2(y: Float64Array, y_hat: Float64Array) -> float:
    total = float(((y - y.mean(0)) ** 2).sum())
    return 1.0 - float(((y - y_hat) ** 2).sum()) / total if total > 0 else float("nan")
