"""Shutdown: ``recsys serve`` (``python -m service.cli``) answers SIGTERM by draining (readiness false), finishing
the requests in flight and exiting 0, also under load; the Deployment gives it the time to do so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml

from tests.service.faults import free_port

REPO = Path(__file__).resolve().parents[2]


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited while starting"
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become ready")


class Clients:
    """Threads calling /recommend until the server goes away: every status they got (no answer: a connection the
    server refused or closed after SIGTERM, not counted)."""

    def __init__(self, base: str, threads: int = 4) -> None:
        self.base, self.statuses, self.stop = base, list[int](), threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as client:
            while not self.stop.is_set():
                try:
                    r = client.post("/recommend", json={"user_id": "someone", "k": 5})
                except httpx.TransportError:
                    time.sleep(0.01)
                    continue
                self.statuses.append(r.status_code)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_sigterm_finishes_requests_in_flight_and_exits_0(
    artifact_root: Path, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RECSYS_COLD_SYNC_SECONDS": "0"}
    cmd = [sys.executable, "-m", "service.cli", "--port", str(port), "--log-level", "info"]
    cmd += ["--artifact", str(artifact_root), "--redis-url", redis_url, "--key-prefix", key_prefix]
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            _wait_ready(base, proc)
            clients = Clients(base)
            answers: list[httpx.Response] = []

            def reload() -> (
                None
            ):  # loads, verifies and warms the artifact again: a request that takes a while
                answers.append(httpx.post(f"{base}/admin/reload", json={}, timeout=60))

            for _ in range(20):  # until SIGTERM can be sent while a reload is still unanswered
                started = log_path.read_text().count("loading ")
                slow = threading.Thread(target=reload)
                slow.start()
                # the server has the request once it logs the load (a busy machine may take a while)
                deadline = time.monotonic() + 30
                while log_path.read_text().count("loading ") == started and slow.is_alive():
                    assert time.monotonic() < deadline, "the reload never reached the server"
                    time.sleep(0.005)
                if slow.is_alive():
                    break
                slow.join()
            in_flight = slow.is_alive()
            proc.send_signal(signal.SIGTERM)
            slow.join(timeout=60)
            assert proc.wait(timeout=60) == 0
            clients.join()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = log_path.read_text()
    assert in_flight  # the client had sent the reload and had no answer when SIGTERM went out
    answer = answers[-1]
    assert answer.status_code == 200, answer.text
    version = (artifact_root / "CURRENT").read_text().strip()  # other tests may have moved it on
    assert answer.json()["model_version"] == version
    assert "draining, /readyz now answers 503" in log
    assert len(clients.statuses) > 0
    assert set(clients.statuses) == {200}, sorted(set(clients.statuses))


def test_the_deployment_grace_period_covers_prestop_and_the_drain() -> None:
    deployment = yaml.safe_load((REPO / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    sleep_s = float(pre_stop.split("time.sleep(")[1].split(")")[0])
    cmd = container["command"]
    drain_s = float(cmd[cmd.index("--timeout-graceful-shutdown") + 1])
    assert (
        sleep_s >= 5
    )  # endpoint removal reaches the load balancers before the server stops accepting
    assert pod["terminationGracePeriodSeconds"] >= sleep_s + drain_s + 5
