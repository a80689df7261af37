"""AlphaFuse math, once, in numpy float64: fit the semantic basis, project, fuse, cold-start.

AlphaFuse (SIGIR'25) decomposes the language embeddings E (N x D) of the item texts with an SVD of their
covariance. The top directions, PCA-whitened ("standardized"), form a frozen language table; trainable ID
embeddings are added in the last ``null_dim`` coordinates (the clipped null space). A new item's embedding is its
projected text with the ID part exactly zero, or, with an `IdMap` (a ridge regression from the language coordinates
to the trained items' ID parts, `fit_id_map`), with the ID part predicted from that same text.

Coordinate layout of every fused vector (d = ``basis.dim``)::

    [ semantic part (d_s = d - d_n columns) | null part (d_n columns, ID embedding added here) ]

With ``cover=False`` (the paper's default) the null part also holds the whitened language components of those
directions; with ``cover=True`` it holds only the ID embedding (the language columns there are zero).

Every trainer, exporter and service path calls these functions; nothing else re-derives the math.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "IdMap",
    "SemanticBasis",
    "cold_start",
    "fit_id_map",
    "fit_semantic_basis",
    "fuse",
    "load_basis",
    "predict_id",
    "project",
    "save_basis",
]

logger = logging.getLogger(__name__)

Float64Array = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class SemanticBasis:
    """A fitted language-space decomposition.

    Attributes:
        mean: (D,) the (weighted) mean of the scaled language embeddings.
        projection: (D, d) maps centred scaled embeddings to fused coordinates; with ``cover=True`` its last
            ``null_dim`` columns are zero.
        eigenvalues: (D,) all eigenvalues of the scaled covariance, descending.
        null_dim: d_n, the number of trailing coordinates that host the ID embedding.
        scale: gamma, the factor applied to raw embeddings before everything else (40 in the paper).
        standardize: whether the kept directions were whitened.
        cover: whether the language components of the null coordinates were dropped.
    """

    mean: Float64Array
    projection: Float64Array
    eigenvalues: Float64Array
    null_dim: int
    scale: float
    standardize: bool
    cover: bool

    @property
    def input_dim(self) -> int:
        """D, the language-embedding dimension."""
        return int(self.projection.shape[0])

    @property
    def dim(self) -> int:
        """d = d_s + d_n, the fused item-embedding dimension."""
        return int(self.projection.shape[1])

    @property
    def semantic_dim(self) -> int:
        """d_s, the coordinates that never receive an ID embedding."""
        return self.dim - self.null_dim


def fit_semantic_basis(
    embeddings: ArrayLike,
    *,
    dim: int | None = None,
    null_dim: int | None = None,
    null_threshold: float | None = None,
    weights: ArrayLike | None = None,
    scale: float = 40.0,
    standardize: bool = True,
    cover: bool = False,
    rtol: float = 1e-10,
) -> SemanticBasis:
    """Fit the AlphaFuse semantic basis of language embeddings.

    Args:
        embeddings: (N, D) language embeddings of the training catalogue.
        dim: d, the number of principal directions kept ("clipping"); None keeps all D (DreamRec form).
        null_dim: d_n, the number of trailing kept directions that host the ID embedding (SASRec form).
        null_threshold: alternatively, d_n = the number of kept directions whose eigenvalue of cov(scale * E) is
            at most this value (DreamRec form). Exactly one of ``null_dim`` / ``null_threshold`` is given.
        weights: (N,) non-negative item weights (e.g. popularity) defining the item distribution of the mean and
            covariance; None means uniform. The weighted covariance is sum_v p_v (e_v - mu)(e_v - mu)^T with p
            normalised to sum 1, so whitened columns have unit p-weighted variance.
        scale: gamma, multiplies E first; it cancels under standardization but moves ``null_threshold``.
        standardize: whiten the kept directions (divide by sqrt of their eigenvalue).
        cover: drop the language components of the d_n null coordinates instead of adding the ID onto them.
        rtol: eigenvalues below ``rtol * largest`` are treated as exactly zero (rank-deficient covariance when
            N <= D); their whitened columns are zero instead of blowing up.

    Returns:
        The fitted SemanticBasis.

    Example:
        >>> E = np.random.default_rng(0).normal(size=(500, 32))
        >>> basis = fit_semantic_basis(E, dim=16, null_dim=8)
        >>> project(E, basis).shape
        (500, 16)
    """
    E = _as_matrix(embeddings, "embeddings") * float(scale)  # (N, D)
    N, D = E.shape
    if N < 2:
        raise ValueError(f"need at least 2 items to fit a semantic basis, got N={N}")
    k = D if dim is None else int(dim)
    if not 1 <= k <= D:
        raise ValueError(f"dim must be in [1, D={D}], got dim={dim}")
    p = _item_distribution(weights, N)  # (N,)
    mean = p @ E  # (D,)
    centred = E - mean  # (N, D)
    # (D, D): unbiased as np.cov when uniform, sum_v p_v (e_v - mu)(e_v - mu)^T when weighted
    cov = centred.T @ centred / (N - 1) if weights is None else (centred * p[:, None]).T @ centred
    eigenvectors, eigenvalues, _ = np.linalg.svd(cov, hermitian=True)  # descending
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    d_n = _choose_null_dim(eigenvalues[:k], k, null_dim, null_threshold)
    columns = eigenvectors[:, :k].copy()  # (D, k)
    if standardize:
        positive = eigenvalues[:k] > rtol * max(float(eigenvalues[0]), np.finfo(np.float64).tiny)
        inv_std = np.zeros(k)
        inv_std[positive] = 1.0 / np.sqrt(eigenvalues[:k][positive])
        columns *= inv_std  # (D, k)
        if not positive.all():
            logger.warning(
                "%d of %d kept directions have zero variance (N=%d, D=%d): their columns are zero",
                int((~positive).sum()),
                k,
                N,
                D,
            )
    if cover and d_n > 0:
        columns[:, k - d_n :] = 0.0
    logger.info("semantic basis: D=%d, d=%d, d_s=%d, d_n=%d, cover=%s", D, k, k - d_n, d_n, cover)
    return SemanticBasis(
        mean=mean,
        projection=columns,
        eigenvalues=eigenvalues,
        null_dim=d_n,
        scale=float(scale),
        standardize=standardize,
        cover=cover,
    )


def project(embeddings: ArrayLike, basis: SemanticBasis) -> Float64Array:
    """Project raw language embeddings onto the basis: the frozen language part of each item.

    Args:
        embeddings: (N, D) or (D,) raw (unscaled) language embeddings.
        basis: the fitted basis.

    Returns:
        (N, d) or (d,) language coordinates; with ``cover=True`` the last d_n columns are zero.
    """
    E = np.asarray(embeddings, dtype=np.float64)
    single = E.ndim == 1
    E = _as_matrix(E[None, :] if single else E, "embeddings")
    if E.shape[1] != basis.input_dim:
        raise ValueError(
            f"embeddings have dimension {E.shape[1]}, the basis was fitted on D={basis.input_dim}"
        )
    out: Float64Array = (E * basis.scale - basis.mean) @ basis.projection  # (N, d)
    return out.reshape(-1) if single else out


def fuse(language: ArrayLike, id_embeddings: ArrayLike, basis: SemanticBasis) -> Float64Array:
    """Add ID embeddings onto the null coordinates of language coordinates.

    Args:
        language: (N, d) output of ``project``.
        id_embeddings: (N, d_n) trainable ID part.
        basis: the basis that produced ``language``.

    Returns:
        (N, d) fused item embeddings; only the last d_n columns differ from ``language``.
    """
    L = _as_matrix(language, "language")
    ids = np.asarray(id_embeddings, dtype=np.float64)
    if L.shape[1] != basis.dim:
        raise ValueError(f"language has {L.shape[1]} columns, basis.dim={basis.dim}")
    if ids.shape != (L.shape[0], basis.null_dim):
        raise ValueError(
            f"id_embeddings must have shape {(L.shape[0], basis.null_dim)}, got {ids.shape}"
        )
    fused = L.copy()
    fused[:, basis.semantic_dim :] += ids
    return fused


def cold_start(
    embeddings: ArrayLike, basis: SemanticBasis, id_map: IdMap | None = None
) -> Float64Array:
    """Embed items never seen in training from their text alone.

    Args:
        embeddings: (N, D) or (D,) raw language embeddings of the new items.
        basis: the fitted basis.
        id_map: None: the ID part is exactly zero (the row-space part alone, identical to ``project``); else the
            ID part is ``predict_id`` of the item's own language coordinates.

    Returns:
        (N, d) or (d,) fused embeddings; only the last d_n coordinates depend on ``id_map``.
    """
    language = project(embeddings, basis)  # (N, d) or (d,)
    if id_map is None:
        return language
    rows = language.reshape(-1, basis.dim)  # (N, d)
    return fuse(rows, predict_id(rows, id_map), basis).reshape(language.shape)


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
    X, Y = _as_matrix(language, "language"), _as_matrix(id_parts, "id_parts")
    if len(X) != len(Y):
        raise ValueError(f"language has {len(X)} rows but id_parts has {len(Y)}")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    order = np.random.default_rng(seed).permutation(len(X))
    n_out = round(holdout * len(X))
    out, fit = order[:n_out], order[n_out:]
    if len(fit) < 2 or (holdout > 0 and n_out < 1):
        raise ValueError(
            f"{len(X)} items with holdout={holdout} leave {len(fit)} to fit, {n_out} held out"
        )
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


def predict_id(language: ArrayLike, id_map: IdMap) -> Float64Array:
    """(N, d) language coordinates -> (N, d_n) predicted ID parts."""
    X = _as_matrix(language, "language")
    if X.shape[1] != len(id_map.x_mean):
        raise ValueError(
            f"language has {X.shape[1]} columns, the ID map was fitted on {len(id_map.x_mean)}"
        )
    out: Float64Array = (X - id_map.x_mean) @ id_map.weights + id_map.y_mean  # (N, d_n)
    return out


def save_basis(basis: SemanticBasis, path: Path) -> None:
    """Write the basis as an ``.npz`` (no pickles)."""
    np.savez(
        path,
        mean=basis.mean,
        projection=basis.projection,
        eigenvalues=basis.eigenvalues,
        null_dim=np.int64(basis.null_dim),
        scale=np.float64(basis.scale),
        standardize=np.bool_(basis.standardize),
        cover=np.bool_(basis.cover),
    )


def load_basis(path: Path) -> SemanticBasis:
    """Read a basis written by ``save_basis`` (allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as z:
        return SemanticBasis(
            mean=z["mean"].astype(np.float64),
            projection=z["projection"].astype(np.float64),
            eigenvalues=z["eigenvalues"].astype(np.float64),
            null_dim=int(z["null_dim"]),
            scale=float(z["scale"]),
            standardize=bool(z["standardize"]),
            cover=bool(z["cover"]),
        )


def _as_matrix(x: ArrayLike, name: str) -> Float64Array:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


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


def _item_distribution(weights: ArrayLike | None, n: int) -> Float64Array:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {w.shape}")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    p: Float64Array = w / w.sum()
    return p


def _choose_null_dim(
    kept_eigenvalues: Float64Array, k: int, null_dim: int | None, null_threshold: float | None
) -> int:
    if (null_dim is None) == (null_threshold is None):
        raise ValueError(
            f"give exactly one of null_dim or null_threshold, got {null_dim=}, {null_threshold=}"
        )
    if null_dim is not None:
        if not 0 <= null_dim <= k:
            raise ValueError(f"null_dim must be in [0, dim={k}], got null_dim={null_dim}")
        return int(null_dim)
    assert null_threshold is not None
    if null_threshold < 0:
        raise ValueError(f"null_threshold must be >= 0, got {null_threshold}")
    return int((kept_eigenvalues <= null_threshold).sum())
