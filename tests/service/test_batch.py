"""POST /recommend/batch through the real app against a real Redis: each result is the single /recommend answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.faults import RedisServer


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"max_batch": 8}))) as c:
        yield c


def _ids(artifact: Path) -> list[str]:
    return json.loads((artifact / "item_ids.json").read_text())  # type: ignore[no-any-return]


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def _same(batch: dict[str, Any], single: dict[str, Any]) -> None:
    """Equal answers: ids exactly; scores to float32 rounding (a batch encodes at another padded length)."""
    assert {k: v for k, v in batch.items() if k != "items"} == {
        k: v for k, v in single.items() if k != "items"
    }
    assert [x["item_id"] for x in batch["items"]] == [x["item_id"] for x in single["items"]]
    assert [x["score"] for x in batch["items"]] == pytest.approx(
        [x["score"] for x in single["items"]], rel=1e-5, abs=1e-6
    )


def test_batch_answers_equal_the_single_answers(client: TestClient, artifact: Path) -> None:
    ids = _ids(artifact)
    events = [{"user_id": "long", "item_id": i} for i in ids[:30]]
    events += [{"user_id": "short", "item_id": i} for i in [*ids[50:53], "no-such-item"]]
    for start in range(0, len(events), 8):  # RECSYS_MAX_BATCH bounds /events calls too
        chunk = events[start : start + 8]
        assert client.post("/events", json={"events": chunk}).status_code == 200
    requests: list[dict[str, Any]] = [
        {"user_id": "long", "k": 5},
        {"history": ids[3:9], "k": 12, "exclude": ids[100:103]},
        {"user_id": "never-seen", "k": 3},
        {"history": ["x", "y"], "k": 4, "exclude": [ids[0]]},
        {"user_id": "short", "k": 7, "exclude_seen": False},
        {"history": ids[40:42], "k": 1},
        {"user_id": "long", "history": ids[60:61], "k": 9},  # an inline history wins, as alone
    ]
    batches, queries = (
        _metric(client, "rec_batch_size_count"),
        _metric(client, "rec_batch_size_sum"),
    )
    r = client.post("/recommend/batch", json={"requests": requests})
    assert r.status_code == 200, r.text
    # one encode and search for the five requests with a known history
    assert _metric(client, "rec_batch_size_count") == batches + 1
    assert _metric(client, "rec_batch_size_sum") == queries + 5
    results = r.json()["results"]
    assert len(results) == len(requests)
    for request, result in zip(requests, results, strict=True):
        single = client.post("/recommend", json=request)
        assert single.status_code == 200, single.text
        _same(result, single.json())
    assert [x["source"] for x in results] == ["model", "model", "popular", "popular"] + [
        "model"
    ] * 3
    assert results[4]["unknown_items"] == ["no-such-item"]
    assert results[3]["unknown_items"] == ["x", "y"]


@pytest.mark.parametrize(
    ("requests", "needle"),
    [
        ([{"history": ["1"]}] * 9, "requests: 9 exceeds the limit of 8"),
        ([{"history": ["1"]}, {"history": ["1"], "k": 5000}], "requests[1].k: 5000 exceeds"),
        ([{"history": ["1"] * 1001}], "requests[0].history: 1001 exceeds"),
        ([{"user_id": "u", "exclude": ["1"] * 10_001}], "requests[0].exclude: 10001 exceeds"),
        ([], "at least 1 item"),
        ([{"k": 3}], "give user_id"),
    ],
)
def test_limits_and_bad_requests_get_a_422_naming_them(
    client: TestClient, requests: list[dict[str, Any]], needle: str
) -> None:
    r = client.post("/recommend/batch", json={"requests": requests})
    assert r.status_code == 422, r.text
    assert needle in r.text


def test_a_store_fault_degrades_the_stored_users_only(
    artifact_root: Path, artifact: Path, tmp_path: Path
) -> None:
    ids = _ids(artifact)
    server = RedisServer(tmp_path)
    server.start()
    try:
        s = Settings(
            artifact=artifact_root, redis_url=server.url, key_prefix="batch", cold_sync_seconds=0
        )
        with TestClient(create_app(s)) as c:
            events = [{"user_id": "u", "item_id": i} for i in ids[:5]]
            assert c.post("/events", json={"events": events}).status_code == 200
            requests = [{"user_id": "u", "k": 4}, {"history": ids[:5], "k": 4}]
            up = c.post("/recommend/batch", json={"requests": requests}).json()["results"]
            _same(up[0], up[1])  # the stored history is the same five items
            server.stop()
            r = c.post("/recommend/batch", json={"requests": requests})
            assert r.status_code == 200, r.text
            down = r.json()["results"]
            assert (down[0]["source"], down[0]["degraded"]) == ("popular", True)
            assert len(down[0]["items"]) == 4
            assert (down[1]["source"], down[1]["degraded"]) == ("model", False)
            _same(down[1], up[1])
            assert 'rec_degraded_answers_total{reason="unavailable",route="/recommend/batch"}' in (
                c.get("/metrics").text
            )
    finally:
        server.stop()
