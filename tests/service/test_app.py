"""The service through its real app (TestClient runs the lifespan) against a real Redis and a real artifact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core.alphafuse import cold_start, load_basis
from service.app import create_app
from service.settings import Settings
from training.items.text_embeddings import TextEmbeddingConfig, embed_item_texts


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _items(artifact: Path) -> list[str]:
    return json.loads((artifact / "item_ids.json").read_text())  # type: ignore[no-any-return]


def test_recommend_from_a_given_history(client: TestClient, artifact: Path) -> None:
    ids = _items(artifact)
    history = ids[:5]
    r = client.post("/recommend", json={"history": history, "k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    got = [x["item_id"] for x in body["items"]]
    assert len(got) == 7
    assert not set(got) & set(history)
    scores = [x["score"] for x in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert body["source"] == "model"
    assert body["model_version"] == "v1"

    kept = client.post(
        "/recommend", json={"history": history, "k": 7, "exclude_seen": False}
    ).json()
    assert next(x["score"] for x in kept["items"]) >= scores[0]
    excluded = client.post(
        "/recommend", json={"history": history, "k": 7, "exclude": got[:3]}
    ).json()
    assert not set(got[:3]) & {x["item_id"] for x in excluded["items"]}


def test_recommend_matches_numpy_over_the_item_table(client: TestClient, artifact: Path) -> None:
    """Top-k from the service equals brute-force top-k of the /score scores over every item."""
    ids = _items(artifact)
    history = ids[10:18]
    top = client.post("/recommend", json={"history": history, "k": 10}).json()["items"]
    scored = client.post(
        "/score", json={"requests": [{"history": history, "item_ids": ids}]}
    ).json()
    scores = np.array(scored["results"][0]["scores"], dtype=np.float64)
    scores[[ids.index(h) for h in history]] = -np.inf
    expected = [ids[i] for i in np.argsort(-scores, kind="stable")[:10]]
    assert [x["item_id"] for x in top] == expected
    assert [x["score"] for x in top] == pytest.approx(sorted(scores, reverse=True)[:10], abs=1e-4)


def test_events_feed_the_stored_history(client: TestClient, artifact: Path) -> None:
    ids = _items(artifact)
    events = [{"user_id": "u1", "item_id": i} for i in ids[:30]] + [
        {"user_id": "u1", "item_id": "no-such-item"}
    ]
    r = client.post("/events", json={"events": events})
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 31, "unknown_items": ["no-such-item"]}
    by_user = client.post("/recommend", json={"user_id": "u1", "k": 5}).json()
    # the stored history is trimmed to the model's length (20): the last 19 known items + the unknown one
    given = client.post("/recommend", json={"history": ids[11:30], "k": 5}).json()
    assert by_user["items"] == given["items"]
    assert by_user["unknown_items"] == ["no-such-item"]


def test_empty_or_unknown_history_falls_back_to_popular(client: TestClient) -> None:
    r = client.post("/recommend", json={"user_id": "never-seen", "k": 3}).json()
    assert r["source"] == "popular"
    assert len(r["items"]) == 3
    r = client.post("/recommend", json={"history": ["x", "y"], "k": 3}).json()
    assert r["source"] == "popular"
    assert r["unknown_items"] == ["x", "y"]


def test_score_batch_reports_unknown_candidates(client: TestClient, artifact: Path) -> None:
    ids = _items(artifact)
    body = {
        "requests": [
            {"history": ids[:4], "item_ids": [ids[5], "nope", ids[6]]},
            {"user_id": "nobody", "item_ids": [ids[0]]},
        ]
    }
    r = client.post("/score", json=body)
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["scores"][1] is None
    assert first["unknown_items"] == ["nope"]
    assert all(isinstance(s, float) for s in first["scores"][::2])
    assert second["source"] == "popular"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"history": ["1"], "k": 100_000}, "k: 100000 exceeds the limit"),
        ({"k": 3}, "give user_id"),
        ({"history": ["1"], "k": 0}, "greater than or equal to 1"),
        ({"history": ["1"], "colour": "red"}, "colour"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem(
    client: TestClient, body: dict[str, object], needle: str
) -> None:
    r = client.post("/recommend", json=body)
    assert r.status_code == 422
    assert needle in r.text


def test_invalid_bodies_on_the_hot_routes_keep_fastapi_error_shapes(
    artifact: Path, settings: Settings
) -> None:
    small = settings.model_copy(update={"max_body_bytes": 2_000})
    with TestClient(create_app(small)) as client:
        bad_json = client.post(
            "/recommend", content=b'{"history": [', headers={"content-type": "application/json"}
        )
        assert bad_json.status_code == 422
        assert bad_json.json()["detail"][0]["type"] == "json_invalid"
        wrong_type = client.post("/score", json={"requests": [{"history": ["1"], "item_ids": 5}]})
        assert wrong_type.status_code == 422
        assert wrong_type.json()["detail"][0]["loc"][:3] == ["body", "requests", 0]
        huge = client.post("/recommend", json={"history": _items(artifact)[:10] * 100})
        assert huge.status_code == 413
        assert "2000 bytes" in huge.json()["detail"]
        assert client.get("/recommend").status_code == 405  # other methods still reach FastAPI
        assert "/recommend" in client.get("/openapi.json").json()["paths"]


def test_new_item_from_text_is_searchable_with_id_part_zero(
    artifact: Path, settings: Settings
) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_k": 10_000}))) as client:
        _check_new_item(client, artifact)


def _check_new_item(client: TestClient, artifact: Path) -> None:
    ids = _items(artifact)
    r = client.post(
        "/items", json={"items": [{"item_id": "new-1", "fields": {"title": "Toy Story (1995)"}}]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["added"] == ["new-1"]
    n = len(ids) + 1
    everything = client.post(
        "/recommend", json={"history": ids[:3], "k": n, "exclude_seen": False}
    ).json()["items"]
    assert "new-1" in [x["item_id"] for x in everything]
    assert len(everything) == n
    # a known item as history, the new item as a candidate: scored like its text's row-space vector
    scored = client.post(
        "/score", json={"requests": [{"history": ids[:3], "item_ids": ["new-1"]}]}
    ).json()
    assert scored["results"][0]["unknown_items"] == []
    # its vector is the trainer's text embedding of the same string, projected, ID part zero
    runtime = client.app.state.service.runtime  # type: ignore[union-attr]
    served = runtime.vector_of("new-1")
    basis = load_basis(artifact / "semantic_basis.npz")
    offline = cold_start(embed_item_texts(["Toy Story (1995)"], TextEmbeddingConfig()), basis)[0]
    assert np.abs(served - offline).max() <= 1e-3 * np.abs(offline).max()
    # a trained id is refused, and so is an empty text
    assert (
        client.post("/items", json={"items": [{"item_id": ids[0], "text": "x"}]}).status_code == 409
    )
    assert client.post("/items", json={"items": [{"item_id": "e", "text": " "}]}).status_code == 422


def test_new_items_survive_a_restart_and_reach_other_pods(
    settings: Settings, artifact: Path
) -> None:
    ids = _items(artifact)
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        assert a.post(
            "/items", json={"items": [{"item_id": "n2", "text": "A space movie"}]}
        ).is_success
        a_scores = a.post("/score", json={"requests": [{"history": ids[:2], "item_ids": ["n2"]}]})
        b_before = b.post("/score", json={"requests": [{"history": ids[:2], "item_ids": ["n2"]}]})
        assert b_before.json()["results"][0]["unknown_items"] == ["n2"]
        b.portal.call(b.app.state.service.sync_items)  # type: ignore[union-attr]
        b_after = b.post("/score", json={"requests": [{"history": ids[:2], "item_ids": ["n2"]}]})
        assert b_after.json()["results"][0]["scores"] == pytest.approx(
            a_scores.json()["results"][0]["scores"], abs=1e-5
        )
    with TestClient(create_app(settings)) as c:
        again = c.post("/score", json={"requests": [{"history": ids[:2], "item_ids": ["n2"]}]})
        assert again.json()["results"][0]["scores"] == pytest.approx(
            a_scores.json()["results"][0]["scores"], abs=1e-5
        )


def test_api_key_guards_write_routes_only(settings: Settings, artifact: Path) -> None:
    keyed = settings.model_copy(update={"api_key": SecretStr("s3cret")})
    ids = _items(artifact)
    with TestClient(create_app(keyed)) as c:
        events = {"events": [{"user_id": "u", "item_id": ids[0]}]}
        assert c.post("/events", json=events).status_code == 401
        assert c.post("/events", json=events, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/events", json=events, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.post("/recommend", json={"user_id": "u"}).status_code == 200


def test_health_readiness_and_metrics(client: TestClient, artifact: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model_version"] == "v1"
    client.post("/recommend", json={"history": _items(artifact)[:3]})
    text = client.get("/metrics").text
    assert (
        'http_request_duration_seconds_count{method="POST",route="/recommend",status="200"}' in text
    )
    assert 'rec_model_info{embedding_mode="alphafuse",model_kind="sasrec",version="v1"} 1.0' in text
    assert 'rec_stage_duration_seconds_count{stage="encode"}' in text


def test_not_ready_without_an_artifact(redis_url: str, key_prefix: str) -> None:
    with TestClient(create_app(Settings(redis_url=redis_url, key_prefix=key_prefix))) as c:
        assert c.get("/readyz").status_code == 503
        r = c.post("/recommend", json={"history": ["1"]})
        assert r.status_code == 503
        assert "no model" in r.text
