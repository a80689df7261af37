"""Catalogue control through the real app against a real Redis: hiding and restoring items, and POST /similar."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.settings import Settings
from service.state import ServiceState
from tests.service.faults import RedisServer


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"max_k": 10_000}))) as c:
        yield c


def _items(artifact: Path) -> list[str]:
    return json.loads((artifact / "item_ids.json").read_text())  # type: ignore[no-any-return]


def _state(client: TestClient) -> ServiceState:
    state = client.app.state.service  # type: ignore[attr-defined]
    assert isinstance(state, ServiceState)
    return state


def _recommend(client: TestClient, **body: Any) -> list[str]:
    r = client.post("/recommend", json=body)
    assert r.status_code == 200, r.text
    return [x["item_id"] for x in r.json()["items"]]


def _hide(client: TestClient, ids: list[str], until: float | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"item_ids": ids}
    if until is not None:
        body["hidden_until"] = until
    r = client.post("/items/hide", json=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _hidden_gauge(client: TestClient) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("rec_hidden_items "):
            return float(line.split()[1])
    raise AssertionError("rec_hidden_items not exported")


def test_hidden_items_are_never_recommended_and_come_back_when_restored(
    client: TestClient, artifact: Path
) -> None:
    ids = _items(artifact)
    history = ids[:5]
    top = _recommend(client, history=history, k=10)
    popular = _recommend(client, history=[], k=10)
    hidden = [top[0], top[3], popular[0]]
    answer = _hide(client, hidden)
    assert answer == {"item_ids": hidden, "hidden_items": 3}
    assert _hidden_gauge(client) == 3
    after = _recommend(client, history=history, k=10)
    assert len(after) == 10
    assert not set(after) & set(hidden)
    assert [i for i in top if i not in hidden] == after[:8]  # the rest keeps its order
    fallback = _recommend(client, history=[], k=10)
    assert len(fallback) == 10
    assert popular[0] not in fallback
    # /score still scores hidden items, and names them
    scored = client.post(
        "/score", json={"requests": [{"history": history, "item_ids": [top[0], top[1]]}]}
    ).json()["results"][0]
    assert scored["hidden"] == [top[0]]
    assert all(s is not None for s in scored["scores"])
    # restored: recommended again, in the same answer as before
    r = client.post("/items/restore", json={"item_ids": hidden})
    assert r.status_code == 200, r.text
    assert r.json()["hidden_items"] == 0
    assert _recommend(client, history=history, k=10) == top
    assert _hidden_gauge(client) == 0


def test_hidden_until_in_the_past_hides_nothing_and_a_future_one_expires(
    client: TestClient, artifact: Path
) -> None:
    history = _items(artifact)[:5]
    top = _recommend(client, history=history, k=5)
    assert _hide(client, [top[0]], until=time.time() - 60)["hidden_items"] == 0
    assert _recommend(client, history=history, k=5) == top
    _hide(client, [top[0]], until=time.time() + 1.0)
    assert top[0] not in _recommend(client, history=history, k=5)
    time.sleep(1.1)
    assert _recommend(client, history=history, k=5) == top
    assert _hidden_gauge(client) == 0


def test_unknown_ids_are_named_and_nothing_is_hidden(client: TestClient, artifact: Path) -> None:
    known = _items(artifact)[0]
    r = client.post("/items/hide", json={"item_ids": [known, "no-such-item"]})
    assert r.status_code == 404
    assert "no-such-item" in r.json()["detail"]
    assert _state(client).hidden.until == {}
    r = client.post("/items/restore", json={"item_ids": ["no-such-item"]})
    assert r.status_code == 404
    assert "no-such-item" in r.json()["detail"]
    assert client.post("/items/hide", json={"item_ids": []}).status_code == 422
    nan = f'{{"item_ids": ["{known}"], "hidden_until": NaN}}'.encode()
    r = client.post("/items/hide", content=nan, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text


def test_a_hidden_added_item_is_left_out_and_another_pod_and_a_reload_see_the_hide(
    settings: Settings, artifact: Path
) -> None:
    ids = _items(artifact)
    wide = settings.model_copy(update={"max_k": 10_000})
    n = len(ids) + 1
    with TestClient(create_app(wide)) as a, TestClient(create_app(wide)) as b:
        item = {"item_id": "cat-new", "text": "A space adventure movie"}
        assert a.post("/items", json={"items": [item]}).status_code == 200
        _hide(a, ["cat-new", ids[7]])
        everything = _recommend(a, history=ids[:3], k=n, exclude_seen=False)
        assert len(everything) == n - 2
        assert not {"cat-new", ids[7]} & set(everything)
        # the other pod sees the item and the hide once it synced
        assert ids[7] in _recommend(b, history=ids[:3], k=n, exclude_seen=False)
        b.portal.call(_state(b).sync_catalogue)
        assert _recommend(b, history=ids[:3], k=n, exclude_seen=False) == everything
        # a reload (same artifact, a new runtime) keeps the hidden set
        assert b.post("/admin/reload", json={}).status_code == 200
        assert _recommend(b, history=ids[:3], k=n, exclude_seen=False) == everything
    with TestClient(create_app(wide)) as c:  # a restart reads the hidden set from the store
        assert _recommend(c, history=ids[:3], k=n, exclude_seen=False) == everything
        assert _hidden_gauge(c) == 2


def test_hide_answers_503_when_the_store_is_down(artifact_root: Path, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        s = Settings(
            artifact=artifact_root, redis_url=server.url, key_prefix="cat", cold_sync_seconds=0
        )
        with TestClient(create_app(s)) as c:
            known = _items(_state(c).require_runtime().directory)[0]
            server.stop()
            for path in ("/items/hide", "/items/restore"):
                r = c.post(path, json={"item_ids": [known]})
                assert r.status_code == 503, r.text
                assert "Retry-After" in r.headers
            assert _state(c).hidden.until == {}
            assert known in _recommend(c, history=[], k=50)
    finally:
        server.stop()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_property_no_hidden_or_excluded_item_is_ever_returned(
    client: TestClient, artifact: Path, data: st.DataObject
) -> None:
    ids = _items(artifact)
    pick = st.lists(st.sampled_from(ids), max_size=40, unique=True)
    hidden = data.draw(pick, "hidden")
    exclude = data.draw(pick, "exclude")
    history = data.draw(st.lists(st.sampled_from(ids), max_size=8), "history")
    k = data.draw(st.integers(1, len(ids)), "k")
    if hidden:
        _hide(client, hidden)
    try:
        got = _recommend(client, history=history, k=k, exclude=exclude)
        assert not set(got) & (set(hidden) | set(exclude))
        left = len(set(ids) - set(hidden) - set(exclude) - set(history))
        assert len(got) == min(k, left)  # still k items while enough remain
        assert len(set(got)) == len(got)
    finally:
        if hidden:
            assert client.post("/items/restore", json={"item_ids": hidden}).status_code == 200


def _brute_force(state: ServiceState, item_id: str, k: int) -> list[str]:
    rt = state.require_runtime()
    table = rt._table[: rt.size]
    row = rt.row_of[item_id]
    scores = table @ table[row]
    order = [
        r
        for r in np.argsort(-scores, kind="stable").tolist()
        if r != row and r not in rt.dead_rows and r not in rt.hidden_rows
    ]
    return [rt.item_id(r) for r in order[:k]]


def test_similar_matches_numpy_for_a_trained_and_an_added_item(
    client: TestClient, artifact: Path
) -> None:
    ids = _items(artifact)
    item = {"item_id": "sim-new", "fields": {"title": "Toy Story (1995)"}}
    assert client.post("/items", json={"items": [item]}).status_code == 200
    state = _state(client)
    for item_id in (ids[10], "sim-new"):
        r = client.post("/similar", json={"item_id": item_id, "k": 20})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["model_version"] == state.require_runtime().version
        found = [x["item_id"] for x in got["items"]]
        assert item_id not in found
        expected = _brute_force(state, item_id, 20)
        assert found[:15] == expected[:15]  # the tail may swap near-ties
        assert set(found) <= set(expected) | set(_brute_force(state, item_id, 25))
        rt = state.require_runtime()
        table = rt._table
        want = [float(table[rt.row_of[i]] @ table[rt.row_of[item_id]]) for i in found]
        assert [x["score"] for x in got["items"]] == pytest.approx(want, rel=1e-4, abs=1e-4)
    # hidden items are left out, and the answer still has k items
    first = client.post("/similar", json={"item_id": ids[10], "k": 5}).json()["items"]
    _hide(client, [first[0]["item_id"]])
    again = [
        x["item_id"]
        for x in client.post("/similar", json={"item_id": ids[10], "k": 5}).json()["items"]
    ]
    assert len(again) == 5
    assert first[0]["item_id"] not in again
    assert again == _brute_force(state, ids[10], 5)
    r = client.post("/similar", json={"item_id": "no-such-item"})
    assert r.status_code == 404
    assert "no-such-item" in r.json()["detail"]


def test_openapi_documents_the_catalogue_routes_and_fields(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths, models = schema["paths"], schema["components"]["schemas"]
    for path, statuses in [
        ("/items/hide", {"200", "401", "404", "422", "503"}),
        ("/items/restore", {"200", "401", "404", "422", "503"}),
        ("/similar", {"200", "404", "422", "503"}),
    ]:
        assert statuses <= set(paths[path]["post"]["responses"]), path
    assert "hidden_until" in models["HideRequest"]["properties"]
    assert set(models["SimilarRequest"]["properties"]) == {"item_id", "k", "filter"}
    assert "description" in models["ScoreResult"]["properties"]["hidden"]
    assert "hidden" not in models["ScoreResult"].get("required", [])
