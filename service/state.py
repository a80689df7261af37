"""What the routes do: the service's state (settings, store, the runtime being served) and its operations.

Routes in ``service.routes`` are thin; each calls one method here. Domain errors (``service.errors``) are
``RequestError`` (a 4xx with a message naming the problem) and ``NotReadyError`` (503 until a model is loaded),
mapped to HTTP in ``service.errors.error_answer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from core.arrays import Float32Array, IntArray
from core.artifact import CURRENT_FILE, ArtifactError, resolve_artifact
from service import catalogue, items
from service.batcher import Batcher
from service.errors import NotReadyError, RequestError, StoreUnavailableError, check_limit
from service.metrics import ServiceMetrics
from service.popularity import Popularity
from service.recommend import answer_requests, check_request, read_histories
from service.runtime import ModelRuntime
from service.schemas import (
    EventsRequest,
    EventsResponse,
    HiddenResponse,
    HideRequest,
    ItemsRequest,
    ItemsResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadResponse,
    RestoreRequest,
    ScoreRequest,
    ScoreResponse,
    ScoreResult,
    SimilarRequest,
    SimilarResponse,
)
from service.settings import Settings
from service.store import Event, HistoryStore

__all__ = ["NotReadyError", "RequestError", "ServiceState"]

logger = logging.getLogger(__name__)
# a swapped-out runtime keeps its worker this long for requests still in flight
RETIRE_AFTER_SECONDS = 30.0


class ServiceState:
    def __init__(self, settings: Settings, store: HistoryStore, metrics: ServiceMetrics) -> None:
        self.settings, self.store, self.metrics = settings, store, metrics
        self.runtime: ModelRuntime | None = None
        self._reload_lock = asyncio.Lock()
        self.items_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._failed_version: str | None = None
        self._refused_version: str | None = (
            None  # the version the last failed reload resolved, if any
        )
        self.draining = False
        self.hidden = catalogue.HiddenItems(store, metrics, settings.max_candidates)
        self.popularity = Popularity(store, settings)
        self.batcher: Batcher[RecommendRequest, RecommendResponse | RequestError] = Batcher(
            self._recommend_micro_batch, settings.max_micro_batch
        )

    # ---- lifecycle ----

    def start_background_tasks(self) -> None:
        s = self.settings
        if s.reload_poll_seconds > 0 and s.artifact is not None:
            self._tasks.append(
                asyncio.create_task(self._every(s.reload_poll_seconds, self._poll_current))
            )
        if s.cold_sync_seconds > 0:
            self._tasks.append(
                asyncio.create_task(self._every(s.cold_sync_seconds, self.sync_catalogue))
            )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.runtime is not None:
            self.runtime.close()
        await self.store.close()

    async def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready: a model is loaded with every stored item, the store answers, and no shutdown has begun."""
        store_ok = await self.store.ping()
        rt = self.runtime
        if rt is not None and store_ok and not rt.cold_synced:
            with contextlib.suppress(StoreUnavailableError):
                await self.sync_items()
        detail: dict[str, object] = {
            "model_version": rt.version if rt else None,
            "store": "ok" if store_ok else "unreachable",
            "draining": self.draining,
        }
        ready = rt is not None and rt.cold_synced and store_ok and not self.draining
        return ready, detail

    def begin_drain(self) -> None:
        """Shutdown has begun: readiness answers 503 from now on; requests are still answered."""
        if not self.draining:
            logger.info("shutdown: draining, /readyz now answers 503")
        self.draining = True

    def require_runtime(self) -> ModelRuntime:
        if self.runtime is None:
            raise NotReadyError("no model loaded yet")
        return self.runtime

    @property
    def history_length(self) -> int:
        if self.settings.history_length is not None:
            return self.settings.history_length
        return self.runtime.max_len if self.runtime is not None else 200

    # ---- /recommend and /score ----

    async def recommend(self, body: RecommendRequest) -> RecommendResponse:
        """Answered in a micro-batch with the calls that arrive while the previous one runs: their stored histories
        in one pipelined read, one encode and one search (``service.recommend.answer_requests``)."""
        self.require_runtime()
        check_request(self.settings, body)
        answer = await self.batcher.submit(body)
        if isinstance(answer, RequestError):
            raise answer
        return answer

    async def _recommend_micro_batch(
        self, bodies: list[RecommendRequest]
    ) -> list[RecommendResponse | RequestError]:
        rt = self.require_runtime()
        self.hidden.expire(rt)
        return await answer_requests(self, rt, bodies, "/recommend")

    async def score(self, body: ScoreRequest) -> ScoreResponse:
        rt = self.require_runtime()
        s = self.settings
        check_limit("requests", len(body.requests), s.max_batch)
        self.hidden.expire(rt)
        for i, q in enumerate(body.requests):
            check_limit(f"requests[{i}].item_ids", len(q.item_ids), s.max_candidates)
            if q.history is not None:
                check_limit("history", len(q.history), s.max_history)
        # every stored history of the call in one round trip; a store fault: those requests get the fallback
        ids_of, degraded = await read_histories(self, body.requests, rt.max_len, "/score")
        histories, candidates, unknowns, known = [], [], [], []
        for i, (q, ids) in enumerate(zip(body.requests, ids_of, strict=True)):
            rows, unknown = rt.lookup(ids)
            cand = np.fromiter(
                (rt.row_of.get(c, -1) for c in q.item_ids), np.int64, len(q.item_ids)
            )
            unknowns.append(unknown + [c for c, r in zip(q.item_ids, cand, strict=True) if r < 0])
            histories.append(rows)
            candidates.append(cand)
            if len(rows):
                known.append(i)
        scored = await self._score_known(
            rt, [histories[i] for i in known], [candidates[i] for i in known]
        )
        by_request = dict(zip(known, scored, strict=True))
        results = []
        for i, cand in enumerate(candidates):
            if i in by_request:
                vals: list[float | None] = by_request[i].tolist()
                source = "model"
            else:  # no known history: the popularity fallback's scores, so a ranker still gets an order
                vals, source = self.popularity.scores_of(rt, cand).tolist(), "popular"
            rows = cand.tolist()
            scores = [v if r >= 0 else None for v, r in zip(vals, rows, strict=True)]
            hidden = catalogue.hidden_among(rt, body.requests[i].item_ids, rows)
            results.append(
                ScoreResult(scores=scores, unknown_items=unknowns[i], source=source, hidden=hidden)
            )
        return ScoreResponse(results=results, model_version=rt.version, degraded=degraded)

    async def similar(self, body: SimilarRequest) -> SimilarResponse:
        rt = self.require_runtime()
        check_limit("k", body.k, self.settings.max_k)
        self.hidden.expire(rt)
        return await catalogue.similar(rt, body.item_id, body.k, body.filter)

    @staticmethod
    async def _score_known(
        rt: ModelRuntime, histories: list[IntArray], candidates: list[IntArray]
    ) -> list[Float32Array]:
        """Model scores of the requests with a known history (none: no encoder call at all)."""
        if not histories:
            return []
        return await rt.run(rt.score, histories, [np.maximum(c, 0) for c in candidates])

    # ---- /events, /items, /items/hide, /items/restore ----

    async def append_events(self, body: EventsRequest) -> EventsResponse:
        check_limit("events", len(body.events), self.settings.max_batch)
        events = [Event(e.user_id, e.item_id, e.timestamp) for e in body.events]
        update = self.popularity.update(events)  # counted with the events, in the same transaction
        await self.store.append_events(events, keep=self.history_length, popularity=update)
        unknown: list[str] = []
        if self.runtime is not None:
            _, unknown = self.runtime.lookup([e.item_id for e in events])
            if unknown:
                self.metrics.unknown_items.inc(len(unknown))
        return EventsResponse(accepted=len(events), unknown_items=sorted(set(unknown)))

    async def add_items(self, body: ItemsRequest) -> ItemsResponse:
        answer = await items.add_items(self, body)
        self.hidden.apply(self.runtime)  # a replaced item has a new row
        return answer

    async def sync_items(self) -> None:
        """Add items that other pods stored since this runtime last looked (idempotent)."""
        await items.sync_items(self)
        self.hidden.apply(self.runtime)

    async def sync_catalogue(self) -> None:
        """What runs every RECSYS_COLD_SYNC_SECONDS: recent popularity, items other pods added, the hidden set."""
        await self.popularity.sync(self.runtime)  # a store fault: training counts, and on
        await self.sync_items()
        await self.hidden.sync(self.runtime)

    async def hide_items(self, body: HideRequest) -> HiddenResponse:
        return await self.hidden.hide(self.require_runtime(), body.item_ids, body.hidden_until)

    async def restore_items(self, body: RestoreRequest) -> HiddenResponse:
        return await self.hidden.restore(self.require_runtime(), body.item_ids)

    # ---- reload ----

    async def reload_request(self, target: str | None) -> ReloadResponse:
        path = Path(target) if target else self.settings.artifact
        if path is None:
            raise RequestError(422, "no artifact given and RECSYS_ARTIFACT is not set")
        try:
            return await self.reload(path)
        except Exception as exc:
            # logged and counted by reload (ONNX Runtime's errors are no RuntimeError)
            raise RequestError(
                422, f"reload failed, still serving the previous model: {exc}"
            ) from exc

    async def reload(self, path: Path) -> ReloadResponse:
        """Load, verify and warm ``path`` beside the current runtime, then swap the reference."""
        async with self._reload_lock:
            t0 = time.perf_counter()
            logger.info("loading %s", path)
            directory: Path | None = (
                None  # resolved once: CURRENT may name another version by the end
            )
            try:
                directory = resolve_artifact(path)
                new = await asyncio.to_thread(self._load, directory)
                if new.manifest.supports_text:
                    await self._load_stored_items(new)
                await self.hidden.load_into(new)
                await self.popularity.sync(new)  # ranked before it serves
                await new.run(new.warm_up)
            except Exception as exc:
                self._refused_version = directory.name if directory else None
                self._refused(directory.name if directory else str(path), exc)
                raise
            old, self.runtime = self.runtime, new
            self.metrics.set_model(
                new.version, new.manifest.model_kind, new.manifest.embedding_mode
            )
            new.publish_gauges()
            self.metrics.reloads.labels("ok", "").inc()
            if old is None:
                self._settle_heap()
            else:
                asyncio.get_running_loop().call_later(RETIRE_AFTER_SECONDS, self._retire, old)
            seconds = time.perf_counter() - t0
            logger.info(
                "serving %s (was %s), loaded in %.2fs", new.version, old and old.version, seconds
            )
            return ReloadResponse(
                model_version=new.version, previous_version=old and old.version, seconds=seconds
            )

    def _refused(self, version: str, exc: Exception) -> None:
        """One log line and one count for a version that could not be loaded (the previous one keeps serving).

        ``reason`` is ``invalid`` for an artifact ``core.artifact`` refuses (manifest schema or fields, checksums,
        file names outside the artifact) and ``unloadable`` for files that pass those checks but cannot be
        loaded or run (a corrupt ONNX graph or FAISS index, a pickled or misshapen array). ``version`` is the
        directory that was resolved before loading, not what ``CURRENT`` names by now.
        """
        reason = "invalid" if isinstance(exc, ArtifactError) else "unloadable"
        self.metrics.reloads.labels("failed", reason).inc()
        rt = self.runtime
        logger.error(
            "reload of %s refused (%s): %s: %s; still serving %s",
            version,
            reason,
            type(exc).__name__,
            " ".join(str(exc).split()),
            rt and rt.version,
        )
        logger.debug("reload of %s failed", version, exc_info=exc)

    async def _load_stored_items(self, rt: ModelRuntime) -> None:
        """The items added after training, into a runtime being loaded. If the store fails, ``rt`` starts without
        them (``rt.cold_synced`` False: not ready) and ``sync_items`` adds them once the store answers."""
        try:
            await items.catch_up(self, rt)
        except StoreUnavailableError as exc:
            logger.warning(
                "%s starts without its added items until the store answers: %s", rt.version, exc
            )

    def _settle_heap(self) -> None:
        """Collect once, then freeze what is alive (the model's tables and id maps, imported modules) for good.

        A full collection walks every tracked object: with a loaded 1e5-item model it took 64-150 ms in the service
        process (84,000 tracked objects, 2-core machine under load), and CPython runs one whenever enough objects
        outlive the young generations, stalling every request in flight. Frozen objects are never walked again.
        Unfreezing first lets a retired runtime's reference cycles be collected instead of frozen for ever.
        """
        if self.settings.freeze_heap:
            gc.unfreeze()
            gc.collect()
            gc.freeze()

    def _retire(self, old: ModelRuntime) -> None:
        """Close a swapped-out runtime; settle the heap once the loop has dropped its last reference to it."""
        old.close()
        asyncio.get_running_loop().call_soon(self._settle_heap)

    def _load(self, directory: Path) -> ModelRuntime:
        s = self.settings
        return ModelRuntime.load(directory, s.threads, self.metrics)

    async def _poll_current(self) -> None:
        root = self.settings.artifact
        assert root is not None
        current = root / CURRENT_FILE
        if not current.is_file():
            return
        version = current.read_text().strip()
        rt = self.runtime
        if version in (self._failed_version, rt and rt.version):
            return
        try:
            await self.reload(root)
            self._failed_version = None
        except Exception:  # logged and counted by reload; not retried until CURRENT changes
            self._failed_version = self._refused_version or version

    async def _every(self, seconds: float, fn: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await fn()
            except StoreUnavailableError as exc:
                logger.warning("background task %s: %s", getattr(fn, "__name__", fn), exc)
            except Exception:
                logger.exception("background task %s failed", getattr(fn, "__name__", fn))
