"""AlphaFuse math, once, in numpy float64: fit the semantic basis, project, fuse, cold-start.

AlphaFuse (SIGIR'25) decomposes the language embeddings E (N x D) of the item texts with an SVD of their
covariance. The top directions, PCA-whitened ("standardized"), form a frozen language table; trainable ID
embeddings are added in the last ``null_dim`` coordinates (the clipped null space). A new item's embedding is its
projected text with the ID part exactly zero, or, with a `core.id_map.IdMap` (a ridge regression from the language
coordinates to the trained items' ID parts), with the ID part predicted from that same text.

Coordinate layout of every fused vector (d = ``basis.dim``)::

    [ semantic part (d_s = d - d_n columns) | null part (d_n columns, ID embedding added here) ]

With ``cover=False`` (the paper's default) the null part also holds the whitened language components of those
directions; with ``cover=True`` it holds only the ID embedding (the language columns there are zero).

Every trainer, exporter and service path calls these functions; nothing else re-derives the math.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from core.arrays import Float64Array, as_matrix
from core.id_map import IdMap, predict_id

__all__ = [
    "SemanticBasis",
    "cold_start",
    "fit_semantic_basis",
    "fuse",
    "load_basis",
    "map_language",
    "project",
    "save_basis",
]

logger = logging.getLogger(__name__)


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
    E = as_matrix(embeddings, "embeddings") * float(scale)  # (N, D)
    N, D = E.shape
    if N < 2:
        raise ValueError(f"need at least 2 items to fit a semantic basis, got N={N}")
    k = D if dim is None else int(dim)
    if not 1 <= k <= D:
        raise ValueError(f"dim must be in [1, D={D}], got dim={dim}")
    mean, eigenvectors, eigenvalues = _principal_directions(E, weights)
    d_n = _choose_null_dim(eigenvalues[:k], k, null_dim, null_threshold)
    columns = eigenvectors[:, :k].copy()  # (D, k)
    if standardize:
        _whiten(columns, eigenvalues, rtol, N)
    if cover and d_n > 0:
        columns[:, k - d_n :] = 0.0
    logger.info("semantic basis: D=%d, d=%d, d_s=%d, d_n=%d, cover=%s", D, k, k - d_n, d_n, cover)
    return SemanticBasis(mean, columns, eigenvalues, d_n, float(scale), standardize, cover)


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
    E = as_matrix(E[None, :] if single else E, "embeddings")
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
    L = as_matrix(language, "language")
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


def map_language(basis: SemanticBasis, matrix: ArrayLike) -> SemanticBasis:
    """The basis whose projection is followed by a (d, d) linear map of the language coordinates.

    A model that learns one map shared by every item's language part (``embedding.language_map``) serves new items
    through this basis: ``project(E, map_language(basis, M)) == project(E, basis) @ M`` for trained and new items
    alike, so a new item's row still comes from its text alone. The eigenvalues keep describing the fitted text.

    Raises:
        ValueError: ``matrix`` is not (d, d).
    """
    M = np.asarray(matrix, dtype=np.float64)
    if M.shape != (basis.dim, basis.dim):
        raise ValueError(f"the language map must be ({basis.dim}, {basis.dim}), got {M.shape}")
    return replace(basis, projection=basis.projection @ M)


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


def _principal_directions(
    E: Float64Array, weights: ArrayLike | None
) -> tuple[Float64Array, Float64Array, Float64Array]:
    """The (weighted) mean (D,), and the eigenvectors (D, D) and eigenvalues (D,) of the covariance of E (N, D),
    eigenvalues descending and clipped at 0."""
    N = len(E)
    p = _item_distribution(weights, N)  # (N,)
    mean = p @ E  # (D,)
    centred = E - mean  # (N, D)
    # (D, D): unbiased as np.cov when uniform, sum_v p_v (e_v - mu)(e_v - mu)^T when weighted
    cov = centred.T @ centred / (N - 1) if weights is None else (centred * p[:, None]).T @ centred
    eigenvectors, eigenvalues, _ = np.linalg.svd(cov, hermitian=True)  # descending
    return mean, eigenvectors, np.clip(eigenvalues, 0.0, None)


def _whiten(columns: Float64Array, eigenvalues: Float64Array, rtol: float, n_items: int) -> None:
    """Divide the k kept directions ``columns`` (D, k) by the square root of their eigenvalue, in place; a
    direction whose eigenvalue is below ``rtol`` times the largest (N = ``n_items`` <= D) becomes a zero column."""
    D, k = columns.shape
    positive = eigenvalues[:k] > rtol * max(float(eigenvalues[0]), np.finfo(np.float64).tiny)
    inv_std = np.zeros(k)
    inv_std[positive] = 1.0 / np.sqrt(eigenvalues[:k][positive])
    columns *= inv_std  # (D, k)
    if not positive.all():
        logger.warning(
            "%d of %d kept directions have zero variance (N=%d, D=%d): their columns are zero",
            int((~positive).sum()),
            k,
            n_items,
            D,
        )


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
