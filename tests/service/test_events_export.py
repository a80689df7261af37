"""Events posted to the service come back, in order, as the trainer's canonical interaction log (recsys events)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from exporter.cli import main
from service.app import create_app
from service.settings import Settings
from service.store import Event, RedisStore
from training.config import load_config
from training.data.readers.canonical import read_canonical
from training.experiment import run_experiment
from training.run.rundir import RunDir

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "ml-100k.toml"


def test_posted_events_become_a_training_log(
    settings: Settings, artifact: Path, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    ids: list[str] = json.loads((artifact / "item_ids.json").read_text())
    posted = {"u1": ids[:5], "u2": ids[10:13], "u3": ids[3:4] + ids[20:22]}
    events = [
        {"user_id": user, "item_id": item, "timestamp": 1_700_000_000 + 10 * step + k}
        for k, (user, items) in enumerate(posted.items())
        for step, item in enumerate(items)
    ]
    with TestClient(create_app(settings)) as client:
        assert client.post("/events", json={"events": events[:7]}).is_success
        assert client.post("/events", json={"events": events[7:]}).is_success
    out = tmp_path / "log" / "events.csv"
    argv = ["events", str(out), "--redis-url", redis_url, "--key-prefix", key_prefix]
    assert main(argv) == 0
    assert out.read_text().splitlines()[0] == "user_id,item_id,timestamp"
    dataset = read_canonical(out)
    assert dataset.num_interactions == len(events)
    for user, items in posted.items():
        seq = dataset.sequence(dataset.user_ids.index(user))
        assert [dataset.item_ids[i] for i in seq] == items  # time order kept


def test_an_empty_stream_is_an_error_and_writes_nothing(
    redis_url: str, key_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "events.csv"
    assert main(["events", str(out), "--redis-url", redis_url, "--key-prefix", key_prefix]) == 2
    assert f"no events in the Redis stream {key_prefix}:events" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_stream_is_read_in_pages_without_gaps_or_repeats(
    redis_url: str, key_prefix: str
) -> None:

    async def scenario() -> list[list[str]]:
        store = RedisStore.from_url(redis_url, key_prefix)
        await store.append_events(
            [Event(f"u{i % 3}", f"i{i}", float(i)) for i in range(10)], keep=20
        )
        pages = [[e.item_id for e in page] async for page in store.iter_events(page=3)]
        await store.close()
        return pages

    pages = asyncio.run(scenario())
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert [item for page in pages for item in page] == [f"i{i}" for i in range(10)]


def test_the_exported_stream_trains_a_model(
    settings: Settings, artifact: Path, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """Events posted through the service, exported by ``recsys events``, are a training set: a short run on them
    reads every event and writes its test metrics."""
    ids: list[str] = json.loads((artifact / "item_ids.json").read_text())
    events = [
        {"user_id": f"u{u}", "item_id": ids[(7 * u + 3 * j) % 200], "timestamp": 1_700_000_000 + j}
        for u in range(60)
        for j in range(6)
    ]
    with TestClient(create_app(settings)) as client:
        for start in range(0, len(events), 120):
            assert client.post("/events", json={"events": events[start : start + 120]}).is_success
    out = tmp_path / "events.csv"
    argv = ["events", str(out), "--redis-url", redis_url, "--key-prefix", key_prefix]
    assert main(argv) == 0
    overrides = [f'data.source={{format="canonical", path="{out}"}}', 'embedding.mode="id"']
    overrides += [
        "data.max_len=10",
        "train.max_epochs=1",
        "train.threads=1",
        "train.num_negatives=8",
    ]
    run_dir = tmp_path / "run"
    run_experiment(load_config(CONFIG, overrides), run_dir)
    assert read_canonical(out).num_interactions == len(events)
    metrics = json.loads(RunDir(run_dir).metrics.read_text())
    assert metrics, "the run wrote no test metrics"
