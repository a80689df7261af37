"""The popularity fallback through the real app against a real Redis: training counts blended with decayed events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.state import ServiceState
from tests.service.faults import RedisServer

HALF_LIFE = 3600.0
T0 = 1_700_000_000.0


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    s = settings.model_copy(update={"max_k": 10_000, "popularity_half_life_seconds": HALF_LIFE})
    with TestClient(create_app(s)) as c:
        yield c


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _state(client: TestClient) -> ServiceState:
    state = client.app.state.service  # type: ignore[attr-defined]
    assert isinstance(state, ServiceState)
    return state


def _clock(client: TestClient) -> Clock:
    clock = Clock()
    _state(client).popularity.clock = clock
    return clock


def _ids(artifact: Path) -> list[str]:
    return json.loads((artifact / "item_ids.json").read_text())  # type: ignore[no-any-return]


def _training_order(artifact: Path) -> tuple[list[str], np.ndarray]:
    counts = np.load(artifact / "popularity.npy").astype(np.float64)
    ids = _ids(artifact)
    order = np.argsort(-counts, kind="stable")
    return [ids[i] for i in order], counts / counts.sum()


def _fallback(client: TestClient, **body: Any) -> list[tuple[str, float]]:
    r = client.post("/recommend", json={"history": [], **body})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["source"] == "popular"
    return [(x["item_id"], x["score"]) for x in answer["items"]]


def _events(client: TestClient, item: str, n: int, user: str = "fan") -> None:
    events = [{"user_id": f"{user}-{i}", "item_id": item} for i in range(n)]
    r = client.post("/events", json={"events": events})
    assert r.status_code == 200, r.text


def _sync(client: TestClient) -> None:
    client.portal.call(_state(client).sync_catalogue)


def _check_scores(answer: list[tuple[str, float]]) -> None:
    scores = [s for _, s in answer]
    assert all(s > 0 for s in scores)
    assert scores == sorted(scores, reverse=True)


def test_before_any_event_the_fallback_is_the_training_counts(
    client: TestClient, artifact: Path
) -> None:
    order, share = _training_order(artifact)
    answer = _fallback(client, k=20)
    assert [i for i, _ in answer] == order[:20]
    ids = _ids(artifact)
    expected = [0.5 * share[ids.index(i)] for i, _ in answer]  # blend 0.5: half the training share
    assert [s for _, s in answer] == pytest.approx(expected, rel=1e-6)
    _check_scores(answer)


def test_the_order_follows_events_and_scores_are_the_documented_blend(
    client: TestClient, artifact: Path
) -> None:
    order, share = _training_order(artifact)
    ids = _ids(artifact)
    x, y = order[200], order[300]  # two items far down the training order
    _clock(client)  # every event at the same time: no decay between them
    _events(client, x, 3)
    assert x not in [
        i for i, _ in _fallback(client, k=10)
    ]  # read on the sync loop, not per request
    _sync(client)
    answer = _fallback(client, k=10)
    assert answer[0][0] == x
    assert answer[0][1] == pytest.approx(0.5 * share[ids.index(x)] + 0.5 * 1.0, rel=1e-6)
    _check_scores(answer)
    _events(client, y, 5)
    _sync(client)
    answer = _fallback(client, k=10)
    assert [i for i, _ in answer[:2]] == [y, x]
    assert answer[1][1] == pytest.approx(0.5 * share[ids.index(x)] + 0.5 * 3 / 8, rel=1e-6)
    assert [i for i, _ in answer[2:]] == [i for i in order if i not in (x, y)][:8]
    _check_scores(answer)
    # a user with no stored history gets the same answer, and /score gives the same numbers
    by_user = client.post("/recommend", json={"user_id": "nobody", "k": 10}).json()
    assert [(i["item_id"], i["score"]) for i in by_user["items"]] == answer
    scored = client.post("/score", json={"requests": [{"history": [], "item_ids": [y, x]}]})
    assert scored.json()["results"][0]["scores"] == pytest.approx([s for _, s in answer[:2]])
    # a reloaded version is ranked from the store before it serves
    assert client.post("/admin/reload", json={}).status_code == 200
    assert _fallback(client, k=10) == answer


def test_older_events_decay_with_the_half_life(client: TestClient, artifact: Path) -> None:
    order, share = _training_order(artifact)
    ids = _ids(artifact)
    clock = _clock(client)
    a, b = order[500], order[600]
    _events(client, a, 4, "early")
    _events(client, b, 1, "early")
    _sync(client)
    assert [i for i, _ in _fallback(client, k=2)] == [a, b]
    clock.now += (
        3 * HALF_LIFE
    )  # the four early events of a are now worth half of one new event of b
    _events(client, b, 1, "late")
    _sync(client)
    answer = dict(_fallback(client, k=2))
    assert list(answer) == [b, a]
    recent = {a: 4 / 13, b: 9 / 13}  # in units of an early event: a 4, b 1 + 8
    for item in (a, b):
        assert answer[item] == pytest.approx(0.5 * share[ids.index(item)] + 0.5 * recent[item])
    # an event stamped in the future counts as arriving now (worth 8 early ones), not as an outsized weight
    _events_at(client, a, T0 + 100 * HALF_LIFE)
    _sync(client)
    answer = dict(_fallback(client, k=2))
    assert answer[a] == pytest.approx(0.5 * share[ids.index(a)] + 0.5 * 12 / 21)


def _events_at(client: TestClient, item: str, timestamp: float) -> None:
    event = {"user_id": "stamped", "item_id": item, "timestamp": timestamp}
    assert client.post("/events", json={"events": [event]}).status_code == 200


def test_hidden_and_excluded_items_are_never_returned(client: TestClient, artifact: Path) -> None:
    order, _ = _training_order(artifact)
    x, y = order[100], order[0]
    _events(client, x, 2)
    _sync(client)
    assert [i for i, _ in _fallback(client, k=2)] == [x, y]
    assert client.post("/items/hide", json={"item_ids": [x]}).status_code == 200
    answer = _fallback(client, k=50, exclude=[y])
    assert len(answer) == 50
    assert not {x, y} & {i for i, _ in answer}
    _check_scores(answer)
    assert client.post("/items/restore", json={"item_ids": [x]}).status_code == 200
    assert [i for i, _ in _fallback(client, k=1)] == [x]


def test_an_item_added_after_training_becomes_popular_through_events(
    client: TestClient, artifact: Path
) -> None:
    r = client.post("/items", json={"items": [{"item_id": "pop-new", "text": "A space movie"}]})
    assert r.status_code == 200, r.text
    n = len(_ids(artifact))
    assert "pop-new" not in [i for i, _ in _fallback(client, k=n)]  # no count, no event: last
    _events(client, "pop-new", 2)
    _sync(client)
    answer = _fallback(client, k=5)
    assert answer[0] == ("pop-new", pytest.approx(0.5))  # no training share: the recent share alone
    _check_scores(answer)


def test_a_store_fault_falls_back_to_the_training_counts(
    artifact_root: Path, artifact: Path, tmp_path: Path
) -> None:
    order, _ = _training_order(artifact)
    server = RedisServer(tmp_path)
    server.start()
    try:
        s = Settings(
            artifact=artifact_root, redis_url=server.url, key_prefix="pop", cold_sync_seconds=0
        )
        with TestClient(create_app(s)) as c:
            _events(c, order[300], 2)
            _sync(c)
            assert _fallback(c, k=1)[0][0] == order[300]
            server.stop()
            state = _state(c)
            c.portal.call(state.popularity.sync, state.runtime)  # the sync loop's read fails
            assert [i for i, _ in _fallback(c, k=10)] == order[:10]
            by_user = c.post("/recommend", json={"user_id": "u", "k": 10})
            assert by_user.status_code == 200
            assert by_user.json()["degraded"] is True
            assert [x["item_id"] for x in by_user.json()["items"]] == order[:10]
            assert (
                c.post("/events", json={"events": [{"user_id": "u", "item_id": "1"}]}).status_code
                == 503
            )
    finally:
        server.stop()
