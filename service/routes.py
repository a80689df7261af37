"""The HTTP API, declared once: FastAPI routers for reads, writes, admin and probes.

``READ_ROUTER`` holds the routes that carry the load (``POST /recommend``, ``/recommend/batch``, ``/score``) and
``POST /similar``, the read routes that need no API key. The declarations of those not named in ``ROUTED_READS`` are
also the table of the plain-ASGI fast path (``service.hotpath.hot_table`` reads path, method, body model and endpoint
from them), so each route is declared here and nowhere else. A read route's endpoint takes exactly ``(body, state)``
and returns its response model; it may have no other dependency.

The service's state is reached through ``service_of(app)``, a typed accessor of what the lifespan stored.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette

from service.errors import NotReadyError, RequestError
from service.recommend import recommend_batch as answer_batch
from service.schemas import (
    ErrorBody,
    EventsRequest,
    EventsResponse,
    HiddenResponse,
    HideRequest,
    ItemsRequest,
    ItemsResponse,
    ReadyResponse,
    RecommendBatchRequest,
    RecommendBatchResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
    RestoreRequest,
    ScoreRequest,
    ScoreResponse,
    SimilarRequest,
    SimilarResponse,
)
from service.state import ServiceState

__all__ = [
    "ADMIN_ROUTER",
    "PROBE_ROUTER",
    "READ_ROUTER",
    "ROUTED_READS",
    "ROUTERS",
    "WRITE_ROUTER",
    "StateDep",
    "current_state",
    "service_of",
]


def service_of(app: Starlette) -> ServiceState:
    """The app's ``ServiceState`` (set by the lifespan); ``NotReadyError`` before it is."""
    state = getattr(app.state, "service", None)
    if not isinstance(state, ServiceState):
        raise NotReadyError("the service is starting")
    return state


def current_state(request: Request) -> ServiceState:
    """The dependency giving a route the app's ``ServiceState``."""
    return service_of(request.app)


StateDep = Annotated[ServiceState, Depends(current_state)]


async def require_key(state: StateDep, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """When an API key is configured, the request must carry it in ``X-API-Key``."""
    expected = state.settings.api_key
    if expected is not None and not secrets.compare_digest(
        (x_api_key or "").encode(), expected.get_secret_value().encode()
    ):
        raise RequestError(401, "missing or wrong X-API-Key header")


def _error(description: str, retry: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {"model": ErrorBody, "description": description}
    if retry:
        doc["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
    return doc


_BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    413: _error("the body exceeds RECSYS_MAX_BODY_BYTES"),
    422: _error("invalid body, or a size limit exceeded (the detail names it)"),
}
_READ_ERRORS = {**_BODY_ERRORS, 503: _error("no model loaded yet", retry=True)}
_WRITE_ERRORS = {
    **_BODY_ERRORS,
    401: _error("missing or wrong X-API-Key (when an API key is configured)"),
    409: _error("the item conflicts with the model (trained id, or no text path)"),
    503: _error("no model loaded yet, or the store is unavailable: nothing was written", True),
}

# read routes FastAPI's router serves, not the fast path: /similar (one search per call) does not carry the load.
# /recommend/batch is on the fast path: it has the (body, state) shape and carries /recommend's load in bulk, so it
# gets the same handling (its large bodies validated in Rust from the bytes, no per-call FastAPI machinery);
# benchmarks/recommend_batch.py times it both ways
ROUTED_READS = frozenset({"/similar"})
READ_ROUTER = APIRouter(tags=["read"], responses=_READ_ERRORS)
WRITE_ROUTER = APIRouter(
    tags=["write"], dependencies=[Depends(require_key)], responses=_WRITE_ERRORS
)
ADMIN_ROUTER = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_key)], responses=_WRITE_ERRORS
)
PROBE_ROUTER = APIRouter(tags=["probes"])


@READ_ROUTER.post("/recommend")
async def recommend(body: RecommendRequest, state: StateDep) -> RecommendResponse:
    """Top-k items for a user's stored history or for a given history."""
    return await state.recommend(body)


@READ_ROUTER.post("/recommend/batch")
async def recommend_batch(body: RecommendBatchRequest, state: StateDep) -> RecommendBatchResponse:
    """Top-k items for each of several users or histories (up to RECSYS_MAX_BATCH), e.g. to precompute lists.

    Each result is what /recommend answers for that request alone. The stored histories are read in one store round
    trip and every request with a known history is encoded and searched in one call.
    """
    return await answer_batch(state, body)


@READ_ROUTER.post("/score")
async def score(body: ScoreRequest, state: StateDep) -> ScoreResponse:
    """Scores of given candidate items, per request in a batch (for downstream rankers)."""
    return await state.score(body)


_UNKNOWN_ID: dict[int | str, dict[str, Any]] = {404: _error("the item_id is unknown to the model")}


@READ_ROUTER.post("/similar", responses=_UNKNOWN_ID)
async def similar(body: SimilarRequest, state: StateDep) -> SimilarResponse:
    """Items nearest to an item's fused embedding (trained, or added from text), itself and hidden items left out."""
    return await state.similar(body)


_UNKNOWN_IDS: dict[int | str, dict[str, Any]] = {
    404: _error("some item ids are unknown (the detail names them); nothing was changed")
}


@WRITE_ROUTER.post("/items/hide", responses=_UNKNOWN_IDS)
async def hide_items(body: HideRequest, state: StateDep) -> HiddenResponse:
    """Hide items (trained or added) from /recommend on every pod, until ``hidden_until`` or a restore.

    Persisted in the store before it applies here; other pods apply it within RECSYS_COLD_SYNC_SECONDS. /score still
    scores hidden items and lists them in ``hidden``.
    """
    return await state.hide_items(body)


@WRITE_ROUTER.post("/items/restore", responses=_UNKNOWN_IDS)
async def restore_items(body: RestoreRequest, state: StateDep) -> HiddenResponse:
    """Recommend hidden items again (ids not hidden are accepted and left as they are)."""
    return await state.restore_items(body)


@WRITE_ROUTER.post("/events")
async def events(body: EventsRequest, state: StateDep) -> EventsResponse:
    """Append interactions to users' sequences and to the event stream."""
    return await state.append_events(body)


@WRITE_ROUTER.post("/items")
async def items(body: ItemsRequest, state: StateDep) -> ItemsResponse:
    """Add items from their text alone (row-space part, ID part zero); searchable when this returns."""
    return await state.add_items(body)


@ADMIN_ROUTER.post("/reload")
async def reload(state: StateDep, body: ReloadRequest | None = None) -> ReloadResponse:
    """Load, verify and warm an artifact beside the current one, then swap. On failure the old one stays."""
    target = body.artifact if body and body.artifact else None
    return await state.reload_request(target)


@PROBE_ROUTER.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@PROBE_ROUTER.get(
    "/readyz",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "not ready (yet)"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    """Readiness: a model is loaded and the store answers."""
    ready, detail = await state.readiness()
    return JSONResponse(detail, status_code=200 if ready else 503)


@PROBE_ROUTER.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format"}},
)
async def metrics(state: StateDep) -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


ROUTERS = (READ_ROUTER, WRITE_ROUTER, ADMIN_ROUTER, PROBE_ROUTER)
