"""The FAISS inner-product index over the item table, with its recall measured against exact search.

``build_index`` picks exact search (``IndexFlatIP``) for catalogues below ``exact_threshold`` items and ``pq``
above (or the kind asked for: flat, pq, hnsw, ivf), then tunes the one search-time knob (the refine factor, HNSW
``efSearch`` or IVF ``nprobe``) by doubling it until recall@10 against exact search on the given queries reaches the
target. The returned ``IndexSpec.params`` record what the service needs to search the same way after
``faiss.read_index`` (which keeps none of these knobs):

- flat: ``{}`` (recall 1.0)
- pq:   ``{"pq_m", "k_factor_rf"}``: 4-bit product-quantisation fast scan (``PQ{d/2}x4fs``) finds
  ``k_factor_rf * k`` candidates, which are re-scored exactly (``RFlat``, the float vectors kept beside the codes).
  ``benchmarks/index_sweep.py`` measured it on a 1e5-item AlphaFuse catalogue, one core: recall@10 0.998 at about a
  third of HNSW's time per query at recall 0.93; a new item is added in microseconds (HNSW: a graph insertion).
  The refine factor is set to ``HEADROOM`` (4) times the first that reaches the target on the exported items, because
  the catalogue grows after export and more new items crowd each neighbourhood: on a sports catalogue grown 5.4x
  through ``POST /items`` (``serve_load.py``) twice the first factor (16) served recall@10 0.983 and four times it
  (64, another model) 1.0. On that catalogue the sweep (``index_sweep_refine.json``, one thread) measured recall@10
  0.954 / 0.986 / 0.998 at 16 / 32 / 64, the search taking 1.41x as long at 64 as at 16. The scan is linear in the
  catalogue, so for catalogues of many millions ask for ``hnsw``.
- hnsw: ``{"M", "ef_construction", "ef_search"}``
- ivf:  ``{"nlist", "nprobe"}``

Recall counts ties as hits: a returned item whose exact score reaches the exact 10th score is correct, so
duplicate item vectors (items with the same text and no ID part) do not read as misses. The exact reference runs
on a GPU when FAISS sees one; the index returned (and written) is always a CPU index.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import faiss
import numpy as np
from numpy.typing import ArrayLike

from core.arrays import Float32Array, IntArray
from core.artifact import IndexSpec

__all__ = ["IndexKind", "build_index", "recall_at_k"]

logger = logging.getLogger(__name__)

IndexKind = Literal["auto", "flat", "pq", "hnsw", "ivf"]

K = 10
EF_SEARCH = (64, 1024)  # first and last efSearch tried
NPROBE_START = 8
K_FACTOR = (4, 64)  # first and last refine factor tried
# the exported refine factor over the first that reaches the target (capped at K_FACTOR[1])
HEADROOM = 4


def build_index(
    items: ArrayLike,
    *,
    kind: IndexKind = "auto",
    exact_threshold: int = 20_000,
    queries: ArrayLike | None = None,
    hnsw_m: int = 32,
    ef_construction: int = 200,
    target_recall: float = 0.99,
    num_queries: int = 1_000,
    seed: int = 0,
) -> tuple[faiss.Index, IndexSpec]:
    """Build an inner-product index over ``items`` and measure its recall@10.

    Args:
        items: (N, d) item vectors, row i = item row i (the index's ids are the row numbers).
        kind: ``auto`` (flat below ``exact_threshold`` items, else pq, or hnsw where pq misses
            ``target_recall`` and hnsw does better), ``flat``, ``pq``, ``hnsw`` or ``ivf``.
        exact_threshold: the catalogue size from which ``auto`` builds the ``pq`` index.
        queries: (Q, d) vectors to tune and measure recall on (the export passes user vectors); None draws
            ``num_queries`` item rows at random (seeded).
        hnsw_m: HNSW graph degree M.
        ef_construction: HNSW build-time beam width.
        target_recall: stop raising the refine factor / efSearch / nprobe once recall@10 reaches this.
        num_queries: how many item rows to use when ``queries`` is None.
        seed: the query draw's seed.

    Returns:
        (index, spec): a CPU index with the tuned search parameter set, and its ``IndexSpec``.

    Example:
        >>> index, spec = build_index(np.eye(4, dtype=np.float32))
        >>> spec.kind, spec.recall_at_10
        ('flat', 1.0)
    """
    x = _matrix(items, "items")  # (N, d)
    n, d = x.shape
    if kind not in ("auto", "flat", "pq", "hnsw", "ivf"):
        raise ValueError(f"index kind must be auto, flat, pq, hnsw or ivf, got {kind!r}")
    chosen = ("flat" if n < exact_threshold else "pq") if kind == "auto" else kind
    if chosen == "flat":
        return _flat(x)
    q = _queries(x, queries, num_queries, seed)  # (Q, d)
    k = min(K, n)
    exact_scores, _ = _exact_search(x, q, k)  # (Q, k)
    kth = exact_scores[:, -1]  # (Q,)
    if chosen == "pq":
        index, params, recall = _pq_refine(x, q, kth, k, target_recall)
        if kind == "auto" and recall < target_recall:  # e.g. DreamRec's generated queries, d = 384
            logger.warning("pq recall@%d %.4f < %.2f: trying hnsw", k, recall, target_recall)
            hnsw = _hnsw(x, q, kth, k, hnsw_m, ef_construction, target_recall)
            if hnsw[2] > recall:
                (index, params, recall), chosen = hnsw, "hnsw"
    elif chosen == "hnsw":
        index, params, recall = _hnsw(x, q, kth, k, hnsw_m, ef_construction, target_recall)
    else:
        index, params, recall = _ivf(x, q, kth, k, target_recall)
    logger.info("%s index over %d x %d items: %s, recall@%d %.4f", chosen, n, d, params, k, recall)
    return index, IndexSpec(kind=chosen, params=params, recall_at_10=recall)


def _flat(x: Float32Array) -> tuple[faiss.Index, IndexSpec]:
    """Exact search: recall 1 by construction, nothing to tune."""
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    return flat, IndexSpec(kind="flat", params={}, recall_at_10=1.0)


def recall_at_k(
    items: Float32Array, queries: Float32Array, found: IntArray, kth_scores: Float32Array
) -> float:
    """Share of returned ids (Q, k) whose exact score reaches the exact k-th score of their query (ties count)."""
    valid = found >= 0  # (Q, k), FAISS pads with -1
    scores = np.einsum("qkd,qd->qk", items[np.where(valid, found, 0)], queries)  # (Q, k)
    tolerance = 1e-5 * np.maximum(1.0, np.abs(kth_scores))[:, None]  # (Q, 1) float32 rounding
    hits = valid & (scores >= kth_scores[:, None] - tolerance)
    return float(hits.sum() / found.size)


def _pq_refine(
    x: Float32Array, q: Float32Array, kth: Float32Array, k: int, target: float
) -> tuple[faiss.Index, dict[str, int], float]:
    n, d = x.shape
    pq_m = d // 2 if d % 2 == 0 else d  # two dimensions per 4-bit sub-quantiser (one when d is odd)
    if n < 39 * 16:  # k-means wants >= 39 points for each of the 16 centroids
        raise ValueError(f"a pq index needs at least {39 * 16} items, got {n}; use flat")
    index = faiss.index_factory(d, f"PQ{pq_m}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    k_factor, recall = K_FACTOR[0], 0.0
    while True:
        faiss.ParameterSpace().set_index_parameter(index, "k_factor_rf", k_factor)
        recall = recall_at_k(x, q, index.search(q, k)[1], kth)
        if recall >= target or k_factor >= K_FACTOR[1]:
            break
        k_factor *= 2
    if recall < target:
        logger.warning(
            "pq recall@%d %.4f < %.2f even at k_factor_rf=%d", k, recall, target, k_factor
        )
    elif k_factor < K_FACTOR[1]:  # headroom for the items POST /items adds after export
        k_factor = min(k_factor * HEADROOM, K_FACTOR[1])
        faiss.ParameterSpace().set_index_parameter(index, "k_factor_rf", k_factor)
        recall = recall_at_k(x, q, index.search(q, k)[1], kth)
    return index, {"pq_m": pq_m, "k_factor_rf": k_factor}, recall


def _hnsw(
    x: Float32Array,
    q: Float32Array,
    kth: Float32Array,
    k: int,
    m: int,
    ef_construction: int,
    target: float,
) -> tuple[faiss.Index, dict[str, int], float]:
    index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(x)
    ef, recall = EF_SEARCH[0], 0.0
    while True:
        index.hnsw.efSearch = ef
        recall = recall_at_k(x, q, index.search(q, k)[1], kth)
        if recall >= target or ef >= EF_SEARCH[1]:
            break
        ef *= 2
    if recall < target:
        logger.warning("HNSW recall@%d %.4f < %.2f even at efSearch=%d", k, recall, target, ef)
    return index, {"M": m, "ef_construction": ef_construction, "ef_search": ef}, recall


def _ivf(
    x: Float32Array, q: Float32Array, kth: Float32Array, k: int, target: float
) -> tuple[faiss.Index, dict[str, int], float]:
    n, d = x.shape
    nlist = max(1, min(round(4 * math.sqrt(n)), n // 39))  # k-means wants >= 39 points per list
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    nprobe, recall = min(NPROBE_START, nlist), 0.0
    while True:
        index.nprobe = nprobe
        recall = recall_at_k(x, q, index.search(q, k)[1], kth)
        if recall >= target or nprobe >= nlist:
            break
        nprobe = min(2 * nprobe, nlist)
    return index, {"nlist": nlist, "nprobe": nprobe}, recall


def _exact_search(x: Float32Array, q: Float32Array, k: int) -> tuple[Float32Array, IntArray]:
    """Exact top-k by inner product, on the GPU when FAISS has one."""
    exact: faiss.Index
    if faiss.get_num_gpus() > 0:
        resources = faiss.StandardGpuResources()
        exact = faiss.GpuIndexFlatIP(resources, x.shape[1])
    else:
        exact = faiss.IndexFlatIP(x.shape[1])
    exact.add(x)
    scores, found = exact.search(q, k)  # (Q, k) each
    return scores, found


def _queries(x: Float32Array, queries: ArrayLike | None, count: int, seed: int) -> Float32Array:
    if queries is not None:
        q = _matrix(queries, "queries")
        if q.shape[1] != x.shape[1]:
            raise ValueError(f"queries have dimension {q.shape[1]}, items {x.shape[1]}")
        return q
    rows = np.random.default_rng(seed).choice(len(x), size=min(count, len(x)), replace=False)
    return np.ascontiguousarray(x[np.sort(rows)])  # (Q, d)


def _matrix(values: ArrayLike, name: str) -> Float32Array:
    x = np.ascontiguousarray(values, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (rows, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has {int((~np.isfinite(x)).sum())} non-finite values")
    return x
