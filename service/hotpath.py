"""The read routes served as plain ASGI in front of FastAPI's router, from the routes' own declarations.

They carry the service's load, and FastAPI's per-request machinery (dependency solving, route context, generic body
handling) is a fixed cost on every call: in-process on an idle core, a ``/recommend``-shaped call through a FastAPI
route took ~130-160 µs against ~11-16 µs for the same validation and JSON in plain ASGI. This layer keeps every
contract of those routes because it reads them from ``service.routes.READ_ROUTER`` (``hot_table``): the body is
validated by the declared pydantic model (in Rust, ``model_validate_json``), the declared endpoint answers, the
response is its model's JSON, and errors come from ``service.errors`` as in the FastAPI handlers (422
``{"detail": [...]}`` with ``loc`` starting at ``"body"`` for an invalid body, ``{"detail": "..."}`` for a domain
error, 503 with ``Retry-After`` before a model is loaded). ``scope["route"]`` is set to the declared route so the
latency middleware labels requests by the same route template.

Anything else (another path or method) passes through to FastAPI untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import DOMAIN_ERRORS, Answer, detail_answer, error_answer, validation_answer
from service.routes import ROUTED_READS, current_state, service_of
from service.state import ServiceState

__all__ = ["HotRoute", "HotRoutes", "hot_table"]

Endpoint = Callable[[BaseModel, ServiceState], Awaitable[BaseModel]]


@dataclass(frozen=True)
class HotRoute:
    route: APIRoute
    method: str
    body: type[BaseModel]
    endpoint: Endpoint


def hot_table(routes: Iterable[BaseRoute]) -> dict[str, HotRoute]:
    """path -> ``HotRoute`` for declared routes of one method whose endpoint is ``(body, state) -> model``.

    Routes whose path is in ``service.routes.ROUTED_READS`` are left to FastAPI's router.
    """
    table = {}
    for route in routes:
        if isinstance(route, APIRoute) and route.path in ROUTED_READS:
            continue
        methods = sorted(route.methods or ()) if isinstance(route, APIRoute) else []
        if not isinstance(route, APIRoute) or len(methods) != 1:
            raise ValueError(f"{route}: a fast-path route has one method")
        bodies = [p.field_info.annotation for p in route.dependant.body_params]
        body = bodies[0] if len(bodies) == 1 else None
        deps = [d.call for d in route.dependant.dependencies]
        if deps != [current_state] or not (isinstance(body, type) and issubclass(body, BaseModel)):
            raise ValueError(f"{route.path}: a fast-path endpoint takes (body model, state) only")
        table[route.path] = HotRoute(route, methods[0], body, route.endpoint)
    return table


class HotRoutes:
    """ASGI middleware answering the routes of ``table`` itself; any body above ``max_body_bytes`` gets 413.

    The body limit holds for every route: a request to another route with a body is read here (up to the limit)
    and handed on to FastAPI whole.
    """

    def __init__(self, app: ASGIApp, table: dict[str, HotRoute], max_body_bytes: int) -> None:
        self.app, self.table, self.max_body_bytes = app, table, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.table.get(scope["path"])
        if route is not None and scope["method"] == route.method:
            scope["route"] = route.route
            await _send(send, await self._answer(scope, receive, route))
        elif scope["method"] in _BODY_METHODS:
            body = await self._read_body(receive)
            if body is None:
                await _send(send, self._too_large())
                return
            await self.app(scope, _replay(body, receive), send)
        else:
            await self.app(scope, receive, send)

    def _too_large(self) -> Answer:
        return detail_answer(413, f"request body exceeds {self.max_body_bytes} bytes")

    async def _answer(self, scope: Scope, receive: Receive, route: HotRoute) -> Answer:
        body = await self._read_body(receive)
        if body is None:
            return self._too_large()
        try:
            request = route.body.model_validate_json(body)
        except ValidationError as exc:
            return validation_answer(exc)
        try:
            answer = await route.endpoint(request, service_of(scope["app"]))
        except DOMAIN_ERRORS as exc:
            return error_answer(exc)
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


_JSON = (b"content-type", b"application/json")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _send(send: Send, answer: Answer) -> None:
    status, payload, headers = answer
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(payload)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body already read, then whatever the client sends next (a disconnect)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
