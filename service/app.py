"""The FastAPI app: ``create_app()`` factory and lifespan; the routes are declared in ``service.routes``.

Run with ``uvicorn service.app:create_app --factory`` (settings from ``RECSYS_*`` environment variables) or
``recsys serve``. Routes are async: they await the store and hand ONNX/FAISS work to the runtime's worker thread.
The loaded model lives in ``ServiceState.runtime``; a reload builds and warms the next runtime beside it, then
swaps that one reference, so requests in flight finish on the version they started with.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType

from fastapi import FastAPI

from service.errors import add_error_handlers
from service.hotpath import HotRoutes, hot_table
from service.metrics import ServiceMetrics
from service.middleware import MetricsMiddleware
from service.routes import READ_ROUTER, ROUTERS
from service.settings import Settings
from service.state import ServiceState
from service.store import RedisStore, open_store

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Without ``settings`` they are read from the environment (``RECSYS_*``)."""
    settings = settings or Settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings
        store = open_store(
            s.redis_url,
            s.key_prefix,
            s.events_stream_maxlen,
            read_timeout=s.redis_timeout_ms / 1000,
            write_timeout=s.redis_write_timeout_ms / 1000,
            history_cache=s.history_cache_users,
        )
        if isinstance(store, RedisStore) and store.histories.cache is not None:
            metrics.watch_history_cache(store.histories.cache)
        state = ServiceState(settings, store, metrics)
        app.state.service = state  # read back through service.routes.service_of
        try:
            if settings.artifact is not None:
                await state.reload(settings.artifact)
            state.start_background_tasks()
            _drain_on_shutdown_signals(state)
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="AlphaFuse recommendation service",
        summary="Sequential top-K recommendation over a fused language + ID item table",
        lifespan=lifespan,
    )
    add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    # the read routes skip FastAPI's per-request machinery; the metrics middleware stays outermost
    table = hot_table(READ_ROUTER.routes)
    app.add_middleware(HotRoutes, table=table, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _drain_on_shutdown_signals(state: ServiceState) -> None:
    """On SIGTERM/SIGINT, mark the state draining (readiness 503), then let the server's handler shut down.

    The server (uvicorn) installs its handlers before the lifespan starts and restores its predecessors when it
    stops; this chains in front of them. Off the main thread (an in-process test client) signals are not ours.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(
            signum: int,
            frame: FrameType | None,
            previous: Callable[[int, FrameType | None], object] = previous,
        ) -> None:
            state.begin_drain()
            previous(signum, frame)

        signal.signal(sig, handler)
