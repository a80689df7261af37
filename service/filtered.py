"""Search and popularity restricted to the items that pass a filter: the exact top-k among them, never a silently
short list.

Per query, after the filter's mask (``service.filters``) has lost replaced, hidden and excluded rows, the strategy
follows the share of the catalogue that passes:

- at most ``EXACT_FRACTION`` of it for the index kind, or at most k rows: exact scoring of those rows alone
  (``table[rows] @ user``), whatever the index;
- exact index (``flat``): FAISS search with an ``IDSelectorBitmap`` of the mask, exact over the passing rows;
- approximate indexes (``pq``: FAISS's fast-scan PQ takes no selector; ``hnsw``, ``ivf``): the index's own top
  candidates, over-fetched by the inverse of the share that passes and kept where the mask holds; when that
  leaves fewer than k, exact scoring of the passing rows.

The thresholds come from ``benchmarks/filter_strategies.py`` (1e5 rows of 128 dimensions, k=10, one thread;
``benchmarks/results/filter_strategies.json``): exact scoring beats the flat selector up to 10% passing (12.0 ms
against 12.7 ms at 10%, 0.74 against 5.96 at 5%) and the pq over-fetch up to 5% (0.74 ms against 0.80 ms at 5%,
0.23 against 1.04 at 2%). An answer shorter than k means that fewer than k items pass.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import faiss
import numpy as np

from core.arrays import BoolArray, Float32Array, IntArray
from core.artifact import Manifest
from service.filters import ItemFields, Tests
from service.metrics import ServiceMetrics
from service.schemas import Filter

__all__ = [
    "EXACT_FRACTION",
    "allowed_rows",
    "exact_top",
    "overfetch_search",
    "passing_rows",
    "search",
    "selector_search",
]

# at most this share of the catalogue passing: exact scoring of the passing rows (benchmarks/filter_strategies.py)
EXACT_FRACTION = {"flat": 0.10, "pq": 0.05, "hnsw": 0.05, "ivf": 0.05}
MAX_OVERFETCH_ROUNDS = 3
Result = tuple[IntArray, Float32Array]


class Query(Protocol):
    """What this module reads of a ``service.runtime.Query``."""

    @property
    def k(self) -> int: ...
    @property
    def exclude(self) -> frozenset[int]: ...
    @property
    def where(self) -> Mapping[str, Tests] | None: ...


class Runtime(Protocol):
    """What this module reads of a ``service.runtime.ModelRuntime``."""

    manifest: Manifest
    index: Any  # faiss.Index
    fields: ItemFields
    size: int
    dead_rows: set[int]
    hidden_rows: frozenset[int]
    metrics: ServiceMetrics

    @property
    def table(self) -> Float32Array: ...
    def search_params(self, k: int, want: int) -> faiss.SearchParameters | None: ...
    def search_unfiltered(self, users: Float32Array, queries: Sequence[Any]) -> list[Result]: ...


def passing_rows(rt: Runtime, where: Filter) -> BoolArray:
    """(rt.size,) True at the rows whose attributes pass ``where`` (hidden, replaced and excluded rows included).

    ``RequestError`` 422 naming an unknown field or a condition that does not fit its field."""
    return rt.fields.mask(rt.fields.check(where), rt.size)


def allowed_rows(rt: Runtime, where: Mapping[str, Tests], exclude: frozenset[int]) -> BoolArray:
    """The rows that pass ``where`` and are neither replaced, hidden nor excluded."""
    mask = rt.fields.mask(where, rt.size)
    skip = np.fromiter(itertools.chain(rt.dead_rows, rt.hidden_rows, exclude), np.int64)
    mask[skip[(skip >= 0) & (skip < len(mask))]] = False
    return mask


def search(rt: Runtime, users: Float32Array, queries: Sequence[Query]) -> list[Result]:
    """Top-k rows and scores per (B, d) query vector; queries with a filter answered by ``_search_one``."""
    out: list[Result | None] = [None] * len(queries)
    plain = [b for b, q in enumerate(queries) if q.where is None]
    if plain:
        answers = rt.search_unfiltered(users[plain], [queries[b] for b in plain])
        for b, answer in zip(plain, answers, strict=True):
            out[b] = answer
    t0 = time.perf_counter()
    for b, q in enumerate(queries):
        if q.where is not None:
            out[b] = _search_one(rt, users[b], q.k, allowed_rows(rt, q.where, q.exclude))
    rt.metrics.stage_seconds.labels("search").observe(time.perf_counter() - t0)
    return [answer for answer in out if answer is not None]


def _search_one(rt: Runtime, user: Float32Array, k: int, allowed: BoolArray) -> Result:
    rows = np.flatnonzero(allowed)
    fraction = len(rows) / max(1, len(allowed))
    found = None
    if len(rows) > k and fraction > EXACT_FRACTION[rt.manifest.index.kind]:
        if rt.manifest.index.kind == "flat":
            found = selector_search(rt, user, k, allowed)
        else:
            found = overfetch_search(rt, user, k, allowed, fraction)
    if found is None or len(found[0]) < min(k, len(rows)):
        found = exact_top(rt.table, user, rows, k)
    return found


def exact_top(table: Float32Array, user: Float32Array, rows: IntArray, k: int) -> Result:
    """The k of ``rows`` with the largest ``table[row] @ user``, best first (ties: lower row first)."""
    scores = np.asarray(table[rows] @ user, dtype=np.float32)
    top = np.argpartition(-scores, k - 1)[:k] if len(rows) > k else np.arange(len(rows))
    order = top[np.lexsort((rows[top], -scores[top]))]
    return rows[order], scores[order]


def selector_search(rt: Runtime, user: Float32Array, k: int, allowed: BoolArray) -> Result:
    """Exact search of a flat index restricted to ``allowed`` by a bitmap selector."""
    ntotal = int(rt.index.ntotal)
    bits = np.packbits(allowed[:ntotal], bitorder="little")
    selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))  # its size in bytes
    params = faiss.SearchParameters()
    params.sel = selector
    scores, found = rt.index.search(user[None], k, params=params)
    keep = found[0] >= 0
    return found[0][keep].astype(np.int64), scores[0][keep]


def overfetch_search(
    rt: Runtime, user: Float32Array, k: int, allowed: BoolArray, fraction: float
) -> Result | None:
    """The index's top candidates that pass, fetching ~2k/fraction of them (more, up to a few rounds)."""
    ntotal = int(rt.index.ntotal)
    want = min(ntotal, int(2 * k / fraction) + 16)
    for _ in range(MAX_OVERFETCH_ROUNDS):
        scores, found = rt.index.search(user[None], want, params=rt.search_params(k, want))
        rows = found[0]
        keep = np.flatnonzero((rows >= 0) & allowed[np.maximum(rows, 0)])[:k]
        if len(keep) == k or want == ntotal:
            return rows[keep].astype(np.int64), scores[0][keep]
        want = min(ntotal, want * 4)
    return None
