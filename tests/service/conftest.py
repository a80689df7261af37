"""Service fixtures: a real artifact (ml-100k, one short AlphaFuse epoch, exported) and a real Redis server.

Redis must answer on $RECSYS_TEST_REDIS_URL (default redis://127.0.0.1:6379/0; `.ci/run` starts one). Every test
gets its own key prefix, deleted afterwards, so tests never see each other's users or items.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import uvicorn
from fastapi import FastAPI

from core.artifact import resolve_artifact
from service.settings import Settings
from tests.service.faults import FaultyProxy, RedisServer

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("RECSYS_TEST_REDIS_URL", REDIS_URL)
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError as exc:
        pytest.fail(f"service tests need a Redis server at {url} (.ci/run starts one): {exc}")
    return url


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def train_tiny(shared: Path, run_dir: Path, *extra: str) -> Path:
    from training.config import load_config
    from training.experiment import run_experiment

    config = load_config(
        REPO / "training" / "configs" / "ml-100k.toml",
        [
            f'data.source.path="{shared / "ml-100k"}"',
            "data.max_len=20",
            "train.max_epochs=1",
            "train.threads=1",
            'embedding.mode="alphafuse"',
            *extra,
        ],
    )
    run_experiment(config, run_dir)
    return run_dir


@pytest.fixture(scope="session")
def trained_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(shared_data, tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def artifact_root(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from exporter.export import export_run

    root = tmp_path_factory.mktemp("artifacts")
    export_run(trained_run, root, version="v1")
    return root


@pytest.fixture(scope="session")
def artifact(artifact_root: Path) -> Path:
    return resolve_artifact(artifact_root)


@pytest.fixture
def settings(artifact_root: Path, redis_url: str, key_prefix: str) -> Settings:
    return Settings(
        artifact=artifact_root, redis_url=redis_url, key_prefix=key_prefix, cold_sync_seconds=0
    )


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test alone (free port, no persistence): it may be stopped and restarted."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_proxy(private_redis: RedisServer) -> Iterator[FaultyProxy]:
    """A TCP proxy in front of ``private_redis`` that can delay replies or drop connections."""
    proxy = FaultyProxy(private_redis.port)
    proxy.start()
    yield proxy
    proxy.close()


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[int]:
    """Run ``app`` under uvicorn on a free port in a thread; yields the port, stops the server on leaving."""
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield int(srv.servers[0].sockets[0].getsockname()[1])
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
