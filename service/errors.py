"""Domain errors of the service, the one place that maps them (and invalid bodies) to HTTP answers, and the
mapping of Redis client errors to ``StoreUnavailableError`` (``store_faults``).

Both ways a request is answered use this module: the FastAPI exception handlers (``add_error_handlers``) and the
plain-ASGI read routes of ``service.hotpath``. An answer is ``(status, JSON body, extra headers)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "DOMAIN_ERRORS",
    "STORE_FAULTS",
    "Answer",
    "NotReadyError",
    "RequestError",
    "StoreUnavailableError",
    "TrainedItemError",
    "add_error_handlers",
    "check_limit",
    "detail_answer",
    "error_answer",
    "store_fault",
    "store_faults",
    "validation_answer",
]

Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]
RETRY_AFTER_SECONDS = 1


class RequestError(Exception):
    """A request the service refuses: a 4xx whose detail names the problem."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class NotReadyError(Exception):
    """No model loaded yet (or the configured artifact failed to load)."""


class TrainedItemError(ValueError):
    """An item id that belongs to the trained catalogue was sent as a new item."""


class StoreUnavailableError(Exception):
    """The store (Redis) did not answer in time or refused the call; ``reason`` labels the degraded-answer metric."""

    def __init__(self, detail: str, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")
# what a store call can raise when Redis is down, slow or refusing: redis-py's errors, and OS-level socket errors
STORE_FAULTS = (RedisError, OSError)


def store_fault(exc: BaseException, op: str) -> StoreUnavailableError:
    """``StoreUnavailableError`` for a failed store call; ``reason`` is ``timeout`` or ``unavailable``."""
    reason = "timeout" if isinstance(exc, RedisTimeoutError | TimeoutError) else "unavailable"
    return StoreUnavailableError(f"store unavailable ({op}): {type(exc).__name__}: {exc}", reason)


def store_faults(
    op: str,
) -> Callable[
    [Callable[Concatenate[S, P], Coroutine[Any, Any, R]]],
    Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
]:
    """Decorate a store method so that its store errors raise ``StoreUnavailableError`` naming ``op``."""

    def wrap(
        fn: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
    ) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
        async def call(store: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await fn(store, *args, **kwargs)
            except STORE_FAULTS as exc:
                raise store_fault(exc, op) from exc

        call.__name__, call.__doc__ = fn.__name__, fn.__doc__
        return call

    return wrap


def check_limit(name: str, value: int, limit: int) -> None:
    """``RequestError`` 422 naming the limit when ``value`` exceeds it."""
    if value > limit:
        raise RequestError(422, f"{name}: {value} exceeds the limit of {limit}")


DOMAIN_ERRORS = (RequestError, NotReadyError, TrainedItemError, StoreUnavailableError)


def detail_answer(
    status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> Answer:
    return status, json.dumps({"detail": detail}).encode(), headers or []


def error_answer(exc: Exception) -> Answer:
    """The HTTP answer to a domain error (``DOMAIN_ERRORS``)."""
    if isinstance(exc, RequestError):
        return detail_answer(exc.status, exc.detail)
    if isinstance(exc, TrainedItemError):
        return detail_answer(409, str(exc))
    if isinstance(exc, NotReadyError | StoreUnavailableError):
        return detail_answer(503, str(exc), [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())])
    raise TypeError(f"not a domain error: {exc!r}")


def validation_answer(exc: ValidationError) -> Answer:
    """422 with FastAPI's shape for an invalid body: ``{"detail": [...]}``, each ``loc`` starting at ``"body"``."""
    detail = [
        {**e, "loc": ["body", *e["loc"]]}
        for e in exc.errors(include_url=False, include_context=False)
    ]
    return 422, json.dumps({"detail": detail}, default=str).encode(), []


def _response(answer: Answer) -> Response:
    status, body, headers = answer
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={k.decode(): v.decode() for k, v in headers},
    )


def add_error_handlers(app: FastAPI) -> None:
    """Answer every domain error raised in a FastAPI route with ``error_answer``, and invalid requests with 422.

    The 422 is FastAPI's own shape, written with ASCII escapes: an error echoes its input, and an input such as a
    lone surrogate (``"\\ud800"``, which Python's JSON parser accepts) cannot be written as UTF-8.
    """

    async def domain_error(_: Request, exc: Exception) -> Response:
        return _response(error_answer(exc))

    async def invalid_request(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        detail = jsonable_encoder(exc.errors())
        return _response((422, json.dumps({"detail": detail}, default=str).encode(), []))

    for error in DOMAIN_ERRORS:
        app.add_exception_handler(error, domain_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
