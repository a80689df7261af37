"""One loaded artifact version: item table, FAISS index, ONNX encoder, text path; the compute behind the routes.

Every method that touches ONNX Runtime, FAISS or the item table runs on the runtime's own single worker thread
(``self.executor``): calls never overlap, so index additions need no lock, and the event loop never blocks. The
async routes reach it through ``Batcher`` (micro-batching of /recommend) or ``run`` (everything else).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import faiss
import numpy as np
import onnxruntime as ort

from core.alphafuse import SemanticBasis, cold_start, load_basis
from core.arrays import Float32Array, IntArray
from core.artifact import Manifest, open_artifact
from core.attributes import read_columns
from core.histories import embed_histories
from service import filtered
from service.errors import TrainedItemError
from service.filters import ItemFields, Tests
from service.metrics import ServiceMetrics
from service.text_encoder import OnnxTextEncoder

__all__ = ["Float32Array", "IntArray", "ModelRuntime", "Query", "TrainedItemError"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Query:
    """One /recommend request after id lookup: history rows (oldest first), k, rows never to return, and the
    checked filter (``ItemFields.check``) its answer must pass."""

    rows: IntArray
    k: int
    exclude: frozenset[int] = field(default_factory=frozenset)
    where: Mapping[str, Tests] | None = None


class ModelRuntime:
    """A verified artifact, loaded and ready to serve. Construct with ``ModelRuntime.load`` (blocking I/O)."""

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        threads: int,
        metrics: ServiceMetrics,
    ) -> None:
        self.directory, self.manifest, self.metrics = directory, manifest, metrics
        self.version = manifest.version
        self.max_len = manifest.encoder.max_len
        self.item_ids: list[str] = json.loads((directory / manifest.item_ids_file).read_text())
        self.num_trained = len(self.item_ids)
        if self.num_trained != manifest.num_items:
            raise ValueError(
                f"{directory}: {self.num_trained} item ids, manifest says {manifest.num_items}"
            )
        self.row_of: dict[str, int] = {item: row for row, item in enumerate(self.item_ids)}
        table = np.load(directory / manifest.items_file, allow_pickle=False)
        if table.shape != (self.num_trained, manifest.dims.d) or table.dtype != np.float32:
            raise ValueError(
                f"{directory}: items table {table.shape} {table.dtype}, expected float32"
            )
        self._table: Float32Array = table
        self.size = self.num_trained
        popularity = np.load(directory / manifest.popularity_file, allow_pickle=False)
        self._popularity = popularity.astype(np.float64)  # (N,) training interaction counts
        self.popular_rows: IntArray = np.argsort(-popularity, kind="stable").astype(np.int64)
        self.fields = ItemFields(
            read_columns(directory, manifest.fields, self.num_trained), self.size
        )
        self.cold_texts: dict[str, str] = {}  # item_id -> text, items added after training
        self.dead_rows: set[int] = (
            set()
        )  # rows of cold items replaced by a newer version of themselves
        self.hidden_rows: frozenset[int] = frozenset()  # rows never returned (POST /items/hide)
        self.cold_cursor = "0"
        self.cold_synced = True  # False while the items stored after training could not be loaded
        self.basis: SemanticBasis | None = None
        self.text_encoder: OnnxTextEncoder | None = None
        self.encoder_key = ""
        if manifest.supports_text:
            assert manifest.text_encoder is not None
            assert manifest.basis_file is not None
            te = manifest.text_encoder
            self.basis = load_basis(directory / manifest.basis_file)
            self.text_encoder = OnnxTextEncoder(directory, te, threads=threads)
            self.encoder_key = manifest.files[f"{te.directory}/{te.onnx_file}"][:16]
        self._open_encoder_and_index(threads)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"model-{self.version}")

    def _open_encoder_and_index(self, threads: int) -> None:
        """The ONNX encoder session and the FAISS index (checked against the item table)."""
        directory, manifest = self.directory, self.manifest
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(directory / manifest.encoder.file), options, providers=["CPUExecutionProvider"]
        )
        faiss.omp_set_num_threads(threads)
        self.index = faiss.read_index(str(directory / manifest.index.file))
        if self.index.ntotal != self.num_trained:
            raise ValueError(
                f"{directory}: index holds {self.index.ntotal} items, expected {self.num_trained}"
            )
        for name, value in manifest.index.search_params().items():
            faiss.ParameterSpace().set_index_parameter(self.index, name, value)
        self.refine_factor = manifest.index.params.get("k_factor_rf")  # pq index only

    @classmethod
    def load(cls, path: Path, threads: int, metrics: ServiceMetrics) -> ModelRuntime:
        """Verify the artifact's manifest and checksums, then load it (blocking I/O)."""
        manifest = open_artifact(path, verify=True)
        return cls(path, manifest, threads, metrics)

    @property
    def live_items(self) -> int:
        """Items that can be recommended: trained + added, minus replaced rows."""
        return self.size - len(self.dead_rows)

    def publish_gauges(self) -> None:
        self.metrics.index_items.set(self.live_items)
        self.metrics.cold_items.set(len(self.cold_texts))

    def popularity_of(self, rows: IntArray) -> Float32Array:
        """Training interaction counts of rows (0 for items added after training; rows < 0 read as 0)."""
        known = (rows >= 0) & (rows < self.num_trained)
        out = np.zeros(len(rows), dtype=np.float32)
        out[known] = self._popularity[rows[known]]
        return out

    def warm_up(self) -> None:
        """One encode + search, so the first real request does not pay for lazy initialisation."""
        self.recommend([Query(self.popular_rows[:1], k=10)])

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on this runtime's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        """Stop accepting work; calls already queued still finish (a swapped-out runtime drains in peace)."""
        self.executor.shutdown(wait=False)

    # ---- id <-> row (event loop; plain dict reads) ----

    def lookup(self, item_ids: Sequence[str]) -> tuple[IntArray, list[str]]:
        """Known rows in order, and the ids this version does not know."""
        rows, unknown = [], []
        get = self.row_of.get
        for item in item_ids:
            row = get(item)
            if row is None:
                unknown.append(item)
            else:
                rows.append(row)
        return np.asarray(rows, dtype=np.int64), unknown

    def is_trained(self, item_id: str) -> bool:
        """Whether the id belongs to the trained catalogue (such items cannot be replaced from text)."""
        return self.row_of.get(item_id, self.num_trained) < self.num_trained

    def item_id(self, row: int) -> str:
        return self.item_ids[row]

    def vector_of(self, item_id: str) -> Float32Array:
        """(d,) the fused vector an item is served with (a copy)."""
        return np.array(self._table[self.row_of[item_id]], dtype=np.float32)

    # ---- compute (worker thread only) ----

    def encode(self, histories: Sequence[IntArray]) -> Float32Array:
        """Left-padded gather of each history's last max_len rows -> ONNX encoder -> (B, d) user vectors."""
        t0 = time.perf_counter()
        hist = [h[-self.max_len :] for h in histories]
        if not hist:
            return np.zeros((0, self.manifest.dims.d), dtype=np.float32)
        length = max(len(h) for h in hist)
        if length == 0:
            raise ValueError("encode needs at least one item per history")
        item_emb, mask = embed_histories(self._table, hist, length)  # (B, L, d), (B, L)
        (user,) = self.session.run(None, {"item_emb": item_emb, "mask": mask})
        self.metrics.stage_seconds.labels("encode").observe(time.perf_counter() - t0)
        return np.asarray(user, dtype=np.float32)  # (B, d)

    def recommend(self, queries: Sequence[Query]) -> list[tuple[IntArray, Float32Array]]:
        """Top-k rows and scores per query, excluded, replaced and hidden rows filtered out."""
        users = self.encode([q.rows for q in queries])  # (B, d)
        self.metrics.batch_size.observe(len(queries))
        return self.search(users, queries)

    @property
    def table(self) -> Float32Array:
        """(size, d) the fused vectors of every row (a view)."""
        return self._table[: self.size]

    def search(
        self, users: Float32Array, queries: Sequence[Query]
    ) -> list[tuple[IntArray, Float32Array]]:
        """Top-k rows and scores per (B, d) query vector, its excluded rows and replaced or hidden rows left out,
        only rows that pass its filter if it has one (``service.filtered``)."""
        if all(q.where is None for q in queries):
            return self.search_unfiltered(users, queries)
        return filtered.search(self, users, queries)

    def search_unfiltered(
        self, users: Float32Array, queries: Sequence[Query]
    ) -> list[tuple[IntArray, Float32Array]]:
        """``search`` for queries without a filter: over-fetch, then leave out excluded, replaced, hidden rows."""
        t0 = time.perf_counter()
        ntotal = int(self.index.ntotal)
        skipped = len(self.dead_rows) + len(self.hidden_rows)
        want = min(ntotal, max(q.k + len(q.exclude) for q in queries) + skipped)
        k = max(q.k for q in queries)
        scores, found = self.index.search(users, want, params=self.search_params(k, want))
        out = []
        for b, q in enumerate(queries):
            rows, vals = self._filter(found[b], scores[b], q)
            while len(rows) < q.k and want < ntotal:  # rare: too much was filtered; search deeper
                want = min(ntotal, want * 2)
                s, f = self.index.search(users[b : b + 1], want, params=self.search_params(k, want))
                rows, vals = self._filter(f[0], s[0], q)
            out.append((rows, vals))
        self.metrics.stage_seconds.labels("search").observe(time.perf_counter() - t0)
        return out

    def search_params(self, k: int, want: int) -> faiss.SearchParameters | None:
        """For a pq index: re-score ``k_factor_rf * k`` candidates plus the over-fetch, not ``k_factor_rf * want``.

        The refine factor was tuned for the top ``k``; scaling it by the over-fetch for excluded items (``want - k``,
        mostly the history) would multiply the scan's candidate heap for no recall the answer keeps.
        """
        if self.refine_factor is None:
            return None
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = max(1.0, (self.refine_factor * k + want - k) / want)
        return params

    def _filter(
        self, found: IntArray, scores: Float32Array, q: Query
    ) -> tuple[IntArray, Float32Array]:
        keep = [
            i
            for i, row in enumerate(found.tolist())
            if row >= 0
            and row not in q.exclude
            and row not in self.dead_rows
            and row not in self.hidden_rows
        ][: q.k]
        return found[keep], scores[keep]

    def similar(
        self, row: int, k: int, where: Mapping[str, Tests] | None = None
    ) -> tuple[IntArray, Float32Array]:
        """The k rows nearest (inner product) to ``row``'s fused vector: itself, replaced and hidden rows left out."""
        vector = np.array(self._table[row : row + 1], dtype=np.float32)  # (1, d)
        query = Query(np.zeros(0, dtype=np.int64), k, frozenset({row}), where)
        return self.search(vector, [query])[0]

    def score(
        self, histories: Sequence[IntArray], candidates: Sequence[IntArray]
    ) -> list[Float32Array]:
        """Inner products of each history's user vector with its candidate rows."""
        users = self.encode(histories)  # (B, d)
        return [np.asarray(self._table[c] @ u) for u, c in zip(users, candidates, strict=True)]

    def embed_texts(self, texts: Sequence[str]) -> Float32Array:
        """(B,) texts -> (B, d_l) language embeddings with the artifact's ONNX text encoder."""
        if self.text_encoder is None:
            raise ValueError(f"artifact {self.version} has no text path")
        t0 = time.perf_counter()
        emb = self.text_encoder.encode(list(texts))
        self.metrics.stage_seconds.labels("text_embed").observe(time.perf_counter() - t0)
        return emb

    def add_items(
        self,
        item_ids: Sequence[str],
        texts: Sequence[str],
        text_emb: Float32Array,
        attributes: Sequence[Mapping[str, object]] | None = None,
    ) -> None:
        """Add (or replace) items from their text embeddings: row-space part only, ID part exactly zero; their
        normalized attributes (``ItemFields.normalize_new``; none by default) go to the filter columns."""
        if self.basis is None:
            raise ValueError(f"artifact {self.version} has no text path")
        trained = [i for i in item_ids if self.is_trained(i)]
        if trained:
            raise TrainedItemError(f"items already in the trained catalogue: {trained[:10]}")
        vectors = cold_start(text_emb, self.basis).astype(np.float32)  # (B, d)
        self._grow(self.size + len(vectors))
        first = self.size
        self._table[first : first + len(vectors)] = vectors
        self.index.add(vectors)
        self.size += len(vectors)
        self.fields.append(item_ids, attributes or [{}] * len(item_ids))
        for offset, (item, text) in enumerate(zip(item_ids, texts, strict=True)):
            old = self.row_of.get(item)
            if old is not None:
                self.dead_rows.add(old)
            self.item_ids.append(item)  # row first + offset
            self.row_of[item] = first + offset
            self.cold_texts[item] = text
        self.publish_gauges()

    def _grow(self, needed: int) -> None:
        if needed <= len(self._table):
            return
        capacity = max(needed, 2 * len(self._table))
        grown = np.zeros((capacity, self._table.shape[1]), dtype=np.float32)
        grown[: self.size] = self._table[: self.size]
        self._table = grown
