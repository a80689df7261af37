"""What the API promises beyond the happy path: no 5xx for any body, 4xx details that name the problem, the
OpenAPI schema saying what the routes accept and answer, the API key on every write route, the body limit on every
route with a body."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app
from service.routes import READ_ROUTER
from service.settings import Settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def ids(artifact: Path) -> list[str]:
    return json.loads((artifact / "item_ids.json").read_text())  # type: ignore[no-any-return]


def _refused(r: Any, status: int, *needles: str) -> None:
    assert r.status_code == status, r.text
    for needle in needles:
        assert needle in r.text, (needle, r.text)


def test_score_with_no_known_history_anywhere_answers_popularity(
    client: TestClient, ids: list[str]
) -> None:
    body = {
        "requests": [{"history": [], "item_ids": ["1"]}, {"history": ["nope"], "item_ids": ids[:2]}]
    }
    r = client.post("/score", json=body)
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["source"] == second["source"] == "popular"
    assert all(isinstance(s, float) for s in second["scores"])
    empty = client.post("/recommend", json={"history": [], "k": 4}).json()
    assert empty["source"] == "popular"
    assert len(empty["items"]) == 4


@pytest.mark.parametrize(
    ("path", "body", "needles"),
    [
        (
            "/events",
            {"events": [{"user_id": "u", "item_id": "1", "timestamp": False}]},
            ["timestamp", "number"],
        ),
        (
            "/events",
            {"events": [{"user_id": "u", "item_id": "1", "timestamp": "12"}]},
            ["timestamp"],
        ),
        ("/recommend", {"history": ["1"], "k": True}, ["k", "integer"]),
        ("/recommend", {"history": ["1"], "exclude_seen": "yes"}, ["exclude_seen", "boolean"]),
        ("/recommend", {"user_id": None}, ["give user_id"]),
        ("/recommend", {"history": ["1"], "k": 1001}, ["k: 1001 exceeds the limit of 1000"]),
        ("/recommend", {"history": ["x"] * 10_000}, ["history: 10000 exceeds the limit of 1000"]),
        ("/score", {"requests": [{"history": ["1"], "item_ids": []}]}, ["item_ids", "at least 1"]),
        (
            "/events",
            b'{"events": [{"user_id": "\\ud800", "item_id": "1"}]}',
            ["user_id", "unicode"],
        ),
        ("/recommend", b'{"history": ["\\udfff"]}', ["json_invalid"]),
        ("/items", {"items": [{"item_id": "n", "text": "x" * 100_000}]}, ["text length: 100000"]),
        (
            "/items",
            {"items": [{"item_id": "n", "text": "a"}, {"item_id": "n", "text": "b"}]},
            ["duplicate"],
        ),
        ("/items", {"items": [{"item_id": "n"}]}, ["exactly one of text or fields"]),
        ("/recommend", {"history": ["1"], "id": "a" * 300}, ["id", "Extra inputs"]),
        ("/recommend", {"history": ["a" * 257]}, ["history", "at most 256"]),
    ],
)
def test_bad_bodies_get_a_422_naming_the_problem(
    client: TestClient, path: str, body: dict[str, Any] | bytes, needles: list[str]
) -> None:
    if isinstance(body, bytes):  # JSON that Python's encoder would not write
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=body)
    _refused(r, 422, *needles)


def test_odd_but_valid_bodies_are_answered(client: TestClient, ids: list[str]) -> None:
    odd = ["\x00", "\t\n", "é", "\u202e" + ids[0], "😀" * 50, ids[0] + "\x7f"]
    for path, body in [
        ("/recommend", {"history": [*odd, ids[0], ids[0], ids[1]], "k": 1000}),
        ("/recommend", {"history": ids[:1], "k": 1000, "exclude": odd + ids[:500]}),
        ("/recommend", {"user_id": "\x00😀\u202e", "k": 3}),
        ("/score", {"requests": [{"history": odd, "item_ids": [ids[0], ids[0], *odd]}]}),
        ("/events", {"events": [{"user_id": u, "item_id": i} for u in odd for i in odd]}),
        ("/items", {"items": [{"item_id": "\x00😀", "fields": {"title": "é\x00" * 100}}]}),
    ]:
        r = client.post(path, json=body)
        assert r.status_code == 200, (path, r.text)
    everything = client.post("/recommend", json={"history": ids[:1], "k": 1000}).json()
    assert len(everything["items"]) == 1000
    scored = client.post(
        "/score", json={"requests": [{"history": ids[:2], "item_ids": [ids[3]] * 3}]}
    )
    same = scored.json()["results"][0]["scores"]
    assert same == pytest.approx([same[0]] * 3, abs=1e-5)


def test_wrong_content_type_and_broken_json_are_4xx(client: TestClient) -> None:
    for path in ("/recommend", "/score", "/events", "/items", "/admin/reload"):
        for content, ctype in [
            (b"\xff\xfe", "application/json"),
            (b"history=1", "text/plain"),
            (b"[1]", "application/json"),
        ]:
            r = client.post(path, content=content, headers={"content-type": ctype})
            assert 400 <= r.status_code < 500, (path, content, r.status_code, r.text)
            assert r.json()["detail"], r.text


def test_openapi_documents_the_history_rule_errors_and_metrics(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for model in ("RecommendRequest", "ScoreQuery"):
        required = [alt["required"] for alt in schema["components"]["schemas"][model]["anyOf"]]
        assert required == [["user_id"], ["history"]]
    paths = schema["paths"]
    for path, statuses in [
        ("/recommend", {"200", "413", "422", "503"}),
        ("/score", {"200", "413", "422", "503"}),
        ("/events", {"200", "401", "413", "422", "503"}),
        ("/items", {"200", "401", "409", "413", "422", "503"}),
    ]:
        responses = paths[path]["post"]["responses"]
        assert statuses <= set(responses), (path, set(responses))
        assert responses["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }
    assert "Retry-After" in paths["/events"]["post"]["responses"]["503"]["headers"]
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(paths["/readyz"]["get"]["responses"]) >= {"200", "503"}
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    recommend = schema["components"]["schemas"]["RecommendResponse"]["properties"]
    assert recommend["degraded"]["default"] is False


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        included = getattr(
            route, "original_router", None
        )  # FastAPI keeps an included router as one entry
        if included is not None:
            yield from _api_routes(included.routes)
        elif isinstance(route, APIRoute):
            yield route


def _body_routes(app: Any) -> list[APIRoute]:
    """Every route taking a body, found by walking the app's routes; the OpenAPI schema lists none more."""
    found = [r for r in _api_routes(app.routes) if r.methods & {"POST", "PUT", "PATCH"}]
    documented = {
        path for path, ops in app.openapi()["paths"].items() if set(ops) & {"post", "put", "patch"}
    }
    assert documented <= {r.path for r in found}
    return found


def test_every_write_and_admin_route_needs_the_api_key(settings: Settings) -> None:
    """Enumerates the app's routes: every POST except the read routes refuses a missing or wrong key."""
    keyed = settings.model_copy(update={"api_key": SecretStr("s3cret")})
    app = create_app(keyed)
    reads = {r.path for r in READ_ROUTER.routes if isinstance(r, APIRoute)}
    guarded = [r.path for r in _body_routes(app) if r.path not in reads]
    assert {"/events", "/items", "/admin/reload"} <= set(guarded)
    with TestClient(app) as c:
        for path in guarded:
            for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
                _refused(c.post(path, json={}, headers=headers), 401, "X-API-Key")
            assert c.post(path, json={}, headers={"X-API-Key": "s3cret"}).status_code != 401
        for path in reads:
            assert c.post(path, json={}).status_code == 422  # no key needed, the body is checked


def test_the_body_limit_holds_on_every_route_with_a_body(settings: Settings) -> None:
    small = settings.model_copy(update={"max_body_bytes": 1000})
    app = create_app(small)
    with TestClient(app) as c:
        for route in _body_routes(app):
            r = c.post(route.path, content=b'{"x": "' + b"a" * 2000 + b'"}')
            _refused(r, 413, "exceeds 1000 bytes")
            chunks = iter([b'{"events": [', b" " * 600, b" " * 600, b"]}"])  # no content-length
            _refused(c.post(route.path, content=chunks), 413, "exceeds 1000 bytes")
        assert (
            c.post("/events", content=b'{"events": []}').status_code == 422
        )  # small bodies go through
