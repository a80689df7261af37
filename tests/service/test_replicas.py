"""Two service replicas on one Redis and one artifact root, as the Deployment runs them.

Each replica is its own process (``python -m service.cli``, the command behind ``recsys serve``) on a free port,
with the same ``RECSYS_ARTIFACT`` root, Redis and key prefix. The test shows what makes pods interchangeable
behind a Service: an item added through one is known to the other within ``RECSYS_COLD_SYNC_SECONDS``; an event
posted to one changes the other's recommendations for that user at once; and a version exported once (``CURRENT``
rewritten) is served by both after their poll, with no failed request while they switch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from core.artifact import write_current

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
COLD_SYNC_SECONDS = 0.5
RELOAD_POLL_SECONDS = 0.5
# time allowed beyond a background task's period: one pass of the task on a busy 2-core machine
SLACK_SECONDS = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    """A running ``python -m service.cli`` and where to reach it."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def start_service(env: Mapping[str, str], log: Path) -> ServiceProcess:
    """Start one service process; ``env`` holds its ``RECSYS_*`` settings (the rest of ours is cleared)."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    clean |= {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    argv = [sys.executable, "-m", "service.cli", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "--log-level", "warning"],
            cwd=REPO,
            env=clean,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return ServiceProcess(f"http://127.0.0.1:{port}", port, process, log)


def wait_until_listening(service: ServiceProcess, timeout: float = 90) -> None:
    """Until the process answers /healthz (it loads its model before it listens)."""
    deadline = time.monotonic() + timeout
    while True:
        if service.process.poll() is not None:
            pytest.fail(
                f"service exited with {service.process.returncode}:\n{service.log.read_text()}"
            )
        try:
            if httpx.get(f"{service.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"service did not answer within {timeout} s:\n{service.log.read_text()}")
        time.sleep(0.1)


def stop_service(service: ServiceProcess) -> None:
    service.process.terminate()
    try:
        service.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait(timeout=10)


@contextmanager
def running_services(envs: list[dict[str, str]], log_dir: Path) -> Iterator[list[ServiceProcess]]:
    """Start every service at once (they load in parallel), wait for all, stop all on exit."""
    with ExitStack() as stack:
        services = []
        for i, env in enumerate(envs):
            service = start_service(env, log_dir / f"service-{i}.log")
            stack.callback(stop_service, service)
            services.append(service)
        t0 = time.monotonic()
        for service in services:
            wait_until_listening(service)
        logger.info("%d services listening after %.1f s", len(services), time.monotonic() - t0)
        yield services


@pytest.fixture
def replicas(
    artifact_root: Path, redis_url: str, key_prefix: str, tmp_path: Path
) -> Iterator[tuple[Path, list[ServiceProcess]]]:
    """Two replicas serving v1 from a root of their own (the test publishes v2 into it)."""
    root = tmp_path / "artifacts"
    root.mkdir()
    shutil.copytree(artifact_root / "v1", root / "v1")
    write_current(root, "v1")
    env = {
        "RECSYS_ARTIFACT": str(root),
        "RECSYS_REDIS_URL": redis_url,
        "RECSYS_KEY_PREFIX": key_prefix,
        "RECSYS_COLD_SYNC_SECONDS": str(COLD_SYNC_SECONDS),
        "RECSYS_RELOAD_POLL_SECONDS": str(RELOAD_POLL_SECONDS),
    }
    with running_services([env, env], tmp_path) as services:
        yield root, services


@dataclass
class Hammer:
    """A client loop on one replica: (seconds since start, status, model version) of every request."""

    url: str
    user_id: str
    results: list[tuple[float, int, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        t0 = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.post("/recommend", json={"user_id": self.user_id, "k": 5})
                    version = r.json().get("model_version") if r.status_code == 200 else None
                    self.results.append((time.monotonic() - t0, r.status_code, version))
                except httpx.HTTPError as exc:
                    self.results.append((time.monotonic() - t0, 0, repr(exc)))

    def versions(self) -> list[str | None]:
        return [v for _, _, v in self.results]


def known_to(client: httpx.Client, item_id: str, history: list[str]) -> bool:
    """Whether the replica scores ``item_id`` (for a known history) instead of naming it unknown."""
    query = {"history": history, "item_ids": [item_id]}
    r = client.post("/score", json={"requests": [query]})
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["unknown_items"] == []


def test_two_replicas_share_items_events_and_new_versions(
    replicas: tuple[Path, list[ServiceProcess]], trained_run: Path
) -> None:
    from exporter.export import export_run

    root, (a, b) = replicas
    ids = json.loads((root / "v1" / "item_ids.json").read_text())
    ca = httpx.Client(base_url=a.url, timeout=30)
    cb = httpx.Client(base_url=b.url, timeout=30)
    with ca, cb:
        for c in (ca, cb):
            assert c.get("/readyz").json()["model_version"] == "v1"

        # an item added through A is known to B within RECSYS_COLD_SYNC_SECONDS (plus one sync pass)
        item = f"new-{uuid.uuid4().hex[:8]}"
        assert not known_to(cb, item, ids[:3])
        added = ca.post("/items", json={"items": [{"item_id": item, "text": "Star Wars (1977)"}]})
        assert added.status_code == 200, added.text
        t0 = time.monotonic()
        while not known_to(cb, item, ids[:3]):
            assert time.monotonic() - t0 < COLD_SYNC_SECONDS + SLACK_SECONDS, "B never saw the item"
            time.sleep(0.02)
        logger.info("item added on A known to B after %.2f s", time.monotonic() - t0)
        on_b = cb.post("/recommend", json={"history": [ids[5], item], "k": 5}).json()
        assert on_b["source"] == "model"
        assert on_b["unknown_items"] == []

        # an event posted to A changes B's recommendations for that user on B's next request
        user = "carol"
        before = cb.post("/recommend", json={"user_id": user, "k": 10}).json()
        assert before["source"] == "popular"
        history = ids[40:52]
        events = [{"user_id": user, "item_id": i} for i in history]
        assert ca.post("/events", json={"events": events}).status_code == 200
        after = cb.post("/recommend", json={"user_id": user, "k": 10}).json()
        assert after["source"] == "model"
        assert after["items"] != before["items"]
        assert not {x["item_id"] for x in after["items"]} & set(history)  # seen items left out

        # v2 exported once into the shared root while clients hit both replicas: no failed request, and
        # each replica answers v1 until it switches and v2 from then on
        hammers = [Hammer(a.url, user), Hammer(b.url, user)]
        threads = [threading.Thread(target=h.run, daemon=True) for h in hammers]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            export_run(trained_run, root, version="v2")  # writes v2/, then CURRENT, last
            published = time.monotonic()
            deadline = published + 60
            while not all(h.versions()[-1:] == ["v2"] for h in hammers):
                assert time.monotonic() < deadline, "a replica never served v2"
                time.sleep(0.05)
            switched = time.monotonic() - published
            time.sleep(0.3)
        finally:
            for h in hammers:
                h.stop.set()
            for t in threads:
                t.join(timeout=30)
        logger.info("both replicas served v2 %.2f s after CURRENT changed", switched)
        for h in hammers:
            failed = [r for r in h.results if r[1] != 200]
            assert failed == [], failed[:5]
            versions = h.versions()
            first_v2 = versions.index("v2")
            assert set(versions[:first_v2]) == {"v1"}
            assert set(versions[first_v2:]) == {"v2"}
            assert len(versions) - first_v2 >= 2
            logger.info("%s: %d requests, %d on v1, then v2", h.url, len(versions), first_v2)

        # the item added on v1 comes along to v2 on both replicas, and the user's history stays
        for c in (ca, cb):
            assert c.get("/readyz").json()["model_version"] == "v2"
            assert known_to(c, item, ids[:3])
            assert c.post("/recommend", json={"user_id": user}).json()["source"] == "model"
