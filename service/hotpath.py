"""The read routes (``POST /recommend``, ``POST /score``) served as plain ASGI in front of FastAPI's router.

They carry the service's load, and FastAPI's per-request machinery (dependency solving, route context, generic body
handling) is a fixed cost on every call: in-process on an idle core, a ``/recommend``-shaped call through a FastAPI
route took ~130-160 µs against ~11-16 µs for the same validation and JSON in plain ASGI. This layer keeps every
contract of those routes: the body is validated by the same pydantic models (in Rust, ``model_validate_json``), the
same ``ServiceState`` methods answer, the response is the same model's JSON, and errors have FastAPI's shapes (422
``{"detail": [...]}`` with ``loc`` starting at ``"body"`` for an invalid body, ``{"detail": "..."}`` for a
``RequestError``, 503 with ``Retry-After`` before a model is loaded). The FastAPI routes stay declared, so ``/docs``
and the OpenAPI schema describe these routes, and ``scope["route"]`` is set to them so the latency middleware labels
requests by the same route template.

Anything else (another path or method) passes through to FastAPI untouched.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from service.schemas import RecommendRequest, ScoreRequest
from service.state import NotReadyError, RequestError, ServiceState

__all__ = ["HOT_ROUTES", "HotRoute", "HotRoutes"]

Handler = Callable[[ServiceState, Any], Awaitable[BaseModel]]


@dataclass(frozen=True)
class HotRoute:
    body: type[BaseModel]
    handler: Handler


HOT_ROUTES: dict[str, HotRoute] = {
    "/recommend": HotRoute(RecommendRequest, lambda state, body: state.recommend(body)),
    "/score": HotRoute(ScoreRequest, lambda state, body: state.score(body)),
}

_JSON = (b"content-type", b"application/json")


class HotRoutes:
    """ASGI middleware answering ``POST`` on ``HOT_ROUTES`` itself; bodies above ``max_body_bytes`` get 413."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute], max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        # the FastAPI route objects, so metrics label these requests with the same route template
        self.declared = {getattr(r, "path", None): r for r in routes if getattr(r, "path", None)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = HOT_ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.declared.get(scope["path"])
        status, payload, headers = await self._answer(scope, receive, route)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", str(len(payload)).encode()), *headers],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _answer(
        self, scope: Scope, receive: Receive, route: HotRoute
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        body = await self._read_body(receive)
        if body is None:
            return _detail(413, f"request body exceeds {self.max_body_bytes} bytes")
        try:
            request = route.body.model_validate_json(body)
        except ValidationError as exc:
            errors = [
                {**e, "loc": ["body", *e["loc"]]}
                for e in exc.errors(include_url=False, include_context=False)
            ]
            return 422, json.dumps({"detail": errors}, default=str).encode(), []
        state: ServiceState | None = getattr(scope["app"].state, "service", None)
        try:
            if state is None:
                raise NotReadyError("the service is starting")
            answer = await route.handler(state, request)
        except RequestError as exc:
            return _detail(exc.status, exc.detail)
        except NotReadyError as exc:
            status, payload, _ = _detail(503, str(exc))
            return status, payload, [(b"retry-after", b"1")]
        return 200, answer.model_dump_json().encode(), []

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _detail(status: int, detail: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return status, json.dumps({"detail": detail}).encode(), []
