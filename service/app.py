"""The FastAPI app: ``create_app()`` factory, lifespan, routes, error mapping.

Run with ``uvicorn service.app:create_app --factory`` (settings from ``RECSYS_*`` environment variables) or
``recsys serve``. Routes are async: they await the store and hand ONNX/FAISS work to the runtime's worker thread.
The loaded model lives in ``ServiceState.runtime``; a reload builds and warms the next runtime beside it, then
swaps that one reference, so requests in flight finish on the version they started with.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.hotpath import HotRoutes
from service.metrics import ServiceMetrics
from service.middleware import MetricsMiddleware
from service.runtime import TrainedItemError
from service.schemas import (
    EventsRequest,
    EventsResponse,
    ItemsRequest,
    ItemsResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
    ScoreRequest,
    ScoreResponse,
)
from service.settings import Settings
from service.state import NotReadyError, RequestError, ServiceState
from service.store import open_store

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Without ``settings`` they are read from the environment (``RECSYS_*``)."""
    settings = settings or Settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.redis_url, settings.key_prefix, settings.events_stream_maxlen)
        state = ServiceState(settings, store, metrics)
        app.state.service = state
        try:
            if settings.artifact is not None:
                await state.reload(settings.artifact)
            state.start_background_tasks()
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="AlphaFuse recommendation service",
        summary="Sequential top-K recommendation over a fused language + ID item table",
        lifespan=lifespan,
    )
    _add_error_handlers(app)
    _add_routes(app, settings, metrics)
    # the hot read routes skip FastAPI's per-request machinery; the metrics middleware stays outermost
    app.add_middleware(HotRoutes, routes=app.router.routes, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _state(request: Request) -> ServiceState:
    return request.app.state.service  # type: ignore[no-any-return]


StateDep = Annotated[ServiceState, Depends(_state)]


def _json(body: object) -> Response:
    """Serialise a response model once, in Rust (faster than FastAPI's generic encoder)."""
    return Response(body.model_dump_json(), media_type="application/json")  # type: ignore[attr-defined]


def _add_routes(app: FastAPI, settings: Settings, metrics: ServiceMetrics) -> None:
    async def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        expected = settings.api_key
        if expected is not None and not secrets.compare_digest(
            (x_api_key or "").encode(), expected.get_secret_value().encode()
        ):
            raise RequestError(401, "missing or wrong X-API-Key header")

    write = [Depends(require_key)]

    # /recommend and /score are answered by service.hotpath.HotRoutes with the same models and state methods;
    # these declarations document them in /docs and answer if that layer is taken out
    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(body: RecommendRequest, state: StateDep) -> Response:
        """Top-k items for a user's stored history or for a given history."""
        return _json(await state.recommend(body))

    @app.post("/score", response_model=ScoreResponse)
    async def score(body: ScoreRequest, state: StateDep) -> Response:
        """Scores of given candidate items, per request in a batch (for downstream rankers)."""
        return _json(await state.score(body))

    @app.post("/events", response_model=EventsResponse, dependencies=write)
    async def events(body: EventsRequest, state: StateDep) -> Response:
        """Append interactions to users' sequences and to the event stream."""
        return _json(await state.append_events(body))

    @app.post("/items", response_model=ItemsResponse, dependencies=write)
    async def items(body: ItemsRequest, state: StateDep) -> Response:
        """Add items from their text alone (row-space part, ID part zero); searchable when this returns."""
        return _json(await state.add_items(body))

    @app.post("/admin/reload", response_model=ReloadResponse, dependencies=write)
    async def reload(state: StateDep, body: ReloadRequest | None = None) -> Response:
        """Load, verify and warm an artifact beside the current one, then swap. On failure the old one stays."""
        target = body.artifact if body and body.artifact else None
        return _json(await state.reload_request(target))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(state: StateDep) -> JSONResponse:
        """Readiness: a model is loaded and the store answers."""
        ready, detail = await state.readiness()
        return JSONResponse(detail, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(NotReadyError)
    async def not_ready(_: Request, exc: NotReadyError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(TrainedItemError)
    async def trained_item(_: Request, exc: TrainedItemError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)
