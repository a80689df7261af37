"""The product path in one test: train -> export -> serve (real uvicorn, real Redis) -> events -> recommend ->
add an item from text -> recommend it -> hot-swap to a newer version under load with no failed request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.artifact import write_current
from service.app import create_app
from service.settings import Settings
from tests.service.conftest import serving, train_tiny


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    app = create_app(settings.model_copy(update={"max_k": 10_000}))
    with serving(app) as port:
        yield f"http://127.0.0.1:{port}"


def test_serve_recommend_add_item_and_hot_swap_under_load(
    server: str, artifact: Path, artifact_root: Path, shared_data: Path, tmp_path: Path
) -> None:
    from exporter.export import export_run

    ids = json.loads((artifact / "item_ids.json").read_text())
    with httpx.Client(base_url=server, timeout=30) as c:
        events = [{"user_id": "alice", "item_id": i} for i in ids[20:32]]
        assert c.post("/events", json={"events": events}).status_code == 200
        first = c.post("/recommend", json={"user_id": "alice", "k": 10}).json()
        assert first["model_version"] == "v1"
        assert first["source"] == "model"
        assert len(first["items"]) == 10

        # a new item whose text is an existing item's: its row-space vector is that item's language part,
        # so a user whose history is that item finds it among the top of the whole catalogue
        text = "Star Wars (1977)"
        assert c.post("/items", json={"items": [{"item_id": "sw-copy", "text": text}]}).is_success
        everything = c.post(
            "/recommend", json={"history": ids[20:32], "k": len(ids) + 1, "exclude_seen": False}
        ).json()["items"]
        assert "sw-copy" in [x["item_id"] for x in everything]

        # export a second version (another seed), point CURRENT at it, reload while requests run
        run2 = train_tiny(shared_data, tmp_path / "run2", "train.seed=1")
        export_run(run2, artifact_root, version="v2", make_current=False)
        write_current(artifact_root, "v2")
        statuses, versions = asyncio.run(_reload_under_load(server))
    assert statuses == {200}, statuses
    assert {"v1", "v2"} >= versions
    assert "v2" in versions
    with httpx.Client(base_url=server, timeout=30) as c:
        after = c.post("/recommend", json={"user_id": "alice", "k": 10}).json()
        assert after["model_version"] == "v2"
        # the item added on v1 is carried over to v2 (re-projected with v2's basis)
        scored = c.post(
            "/score", json={"requests": [{"user_id": "alice", "item_ids": ["sw-copy"]}]}
        )
        assert scored.json()["results"][0]["unknown_items"] == []
        # a broken reload keeps v2 serving
        bad = c.post("/admin/reload", json={"artifact": str(tmp_path / "missing")})
        assert bad.status_code == 422
        assert "still serving" in bad.text
        assert c.post("/recommend", json={"user_id": "alice"}).json()["model_version"] == "v2"


async def _reload_under_load(base: str) -> tuple[set[int], set[str]]:
    statuses: set[int] = set()
    versions: set[str] = set()
    stop = asyncio.Event()

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def hammer() -> None:
            while not stop.is_set():
                r = await client.post("/recommend", json={"user_id": "alice", "k": 5})
                statuses.add(r.status_code)
                if r.status_code == 200:
                    versions.add(r.json()["model_version"])

        workers = [asyncio.create_task(hammer()) for _ in range(4)]
        await asyncio.sleep(0.2)
        reload = await client.post("/admin/reload", json={})
        statuses.add(reload.status_code)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*workers)
    return statuses, versions
