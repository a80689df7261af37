"""The Grafana dashboard's queries, evaluated by a real Prometheus scraping real service processes.

Two service processes (``python -m service.cli``) on free ports: one serving a small artifact, one without a model
(it answers 503 on /score, so the 5xx panels have errors to show). A Prometheus (Debian's ``prometheus`` package,
installed by scripts/setup.sh) scrapes both every second into a temporary storage directory. After a few seconds of
load, every PromQL expression of k8s/grafana/dashboard.json is evaluated through ``/api/v1/query`` and must return
finite values, and the p99 of the latency panel agrees with the load generator's own p99 of the same requests
within the resolution of the histogram's buckets.
"""

from __future__ import annotations

import bisect
import http.client
import json
import logging
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.metrics import LATENCY_BUCKETS
from tests.k8s.test_manifests import DASHBOARD, dashboard_exprs
from tests.service.test_replicas import ServiceProcess, free_port, running_services

logger = logging.getLogger(__name__)

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="no prometheus binary: scripts/setup.sh installs Debian's package where apt-get is available",
)
SCRAPE_SECONDS = 1
LOAD_SECONDS = 4.0
LATENCY_P99 = "Latency p99 by route"


@pytest.fixture
def services(
    artifact_root: Path, redis_url: str, key_prefix: str, tmp_path: Path
) -> Iterator[list[ServiceProcess]]:
    """A replica serving v1, one with no model (every /score is a 503), and one serving v1 whose Redis does not
    answer (every /recommend by user_id is a degraded answer)."""
    ready = {
        "RECSYS_ARTIFACT": str(artifact_root / "v1"),
        "RECSYS_REDIS_URL": redis_url,
        "RECSYS_KEY_PREFIX": key_prefix,
    }
    no_store = {**ready, "RECSYS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with running_services([ready, {}, no_store], tmp_path) as started:
        yield started


@pytest.fixture
def prometheus(services: list[ServiceProcess], tmp_path: Path) -> Iterator[str]:
    """A Prometheus scraping both services every second; its base URL."""
    assert PROMETHEUS is not None
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_SECONDS}s",
            "scrape_timeout": f"{SCRAPE_SECONDS}s",
            "evaluation_interval": f"{SCRAPE_SECONDS}s",
        },
        "scrape_configs": [
            {
                "job_name": "recsys",
                "static_configs": [{"targets": [f"127.0.0.1:{s.port}" for s in services]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"prometheus exited:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"prometheus not ready:\n{log.read_text()}"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200, f"{expr}: {r.text}"
    body = r.json()
    assert body["status"] == "success", body
    assert body["data"]["resultType"] == "vector", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def wait_for(prometheus: str, expr: str, want: float, timeout: float = 20) -> None:
    """Until ``expr`` evaluates to one sample equal to ``want`` (the scrapes have caught up)."""
    deadline = time.monotonic() + timeout
    while True:
        result = query(prometheus, expr)
        if len(result) == 1 and float(result[0]["value"][1]) == want:
            return
        assert time.monotonic() < deadline, f"{expr} is {result}, not {want}"
        time.sleep(0.2)


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's ``$name`` / ``${name}`` / ``[[name]]`` variables replaced; none may be left over."""

    def value(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        assert name in variables, f"dashboard variable ${name} has no value in this test"
        return variables[name]

    out = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", value, expr)
    assert "$" not in out
    return out


def test_substitute_fills_grafana_variables_and_refuses_unknown_ones() -> None:
    variables = {"__rate_interval": "30s", "job": "recsys"}
    assert substitute('rate(x{job="$job"}[$__rate_interval])', variables) == (
        'rate(x{job="recsys"}[30s])'
    )
    assert substitute("rate(x[${__rate_interval}])", variables) == "rate(x[30s])"
    with pytest.raises(AssertionError, match="instance"):
        substitute('x{instance="$instance"}', variables)


class Client:
    """A plain keep-alive HTTP/1.1 client (http.client): little time of its own in the measured latency."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: object) -> tuple[int, float]:
        """(status, seconds from sending the request to reading the whole response)."""
        payload = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        t0 = time.perf_counter()
        self.connection.request("POST", path, payload, headers)
        response = self.connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - t0

    def close(self) -> None:
        self.connection.close()


def bucket(seconds: float) -> int:
    """Index of the histogram bucket holding ``seconds`` (the one whose upper bound is the first >= it)."""
    return bisect.bisect_left(LATENCY_BUCKETS, seconds)


def test_every_dashboard_query_returns_data_and_the_p99_matches_the_client(
    services: list[ServiceProcess], prometheus: str, artifact_root: Path
) -> None:
    started = time.monotonic()
    ready, not_ready, no_store = services
    instance = f"127.0.0.1:{ready.port}"
    wait_for(prometheus, 'count(up{job="recsys"} == 1)', 3)

    ids = json.loads((artifact_root / "v1" / "item_ids.json").read_text())
    users = [f"user-{i}" for i in range(20)]
    client, failing, degraded = Client(ready.port), Client(not_ready.port), Client(no_store.port)
    try:
        # eight stored events per user, so /recommend by user_id reads a history from Redis
        events = [
            {"user_id": u, "item_id": ids[(13 * (8 * i + j)) % len(ids)]}
            for i, u in enumerate(users)
            for j in range(8)
        ]
        assert client.post("/events", {"events": events})[0] == 200

        def side_requests(n: int) -> None:
            """One request to every other route that has a panel: /events, /score (200 and 503), /items."""
            event = {"user_id": users[n % len(users)], "item_id": ids[n % len(ids)]}
            assert client.post("/events", {"events": [event]})[0] == 200
            score = {"requests": [{"user_id": users[0], "item_ids": ids[n % 1000 : n % 1000 + 20]}]}
            assert client.post("/score", score)[0] == 200
            assert failing.post("/score", score)[0] == 503
            assert degraded.post("/recommend", {"user_id": users[0]})[0] == 200  # degraded panel
            item = {"item_id": f"new-{n}", "text": f"A new movie, number {n}"}  # text_embed stage
            assert client.post("/items", {"items": [item]})[0] == 200

        # every series the panels read exists in Prometheus before the load, so rate() counts the load alone
        assert client.post("/recommend", {"user_id": users[0]})[0] == 200
        side_requests(0)
        routes = 'route!~"/metrics|/healthz|/readyz"'
        wait_for(prometheus, f"count(http_request_duration_seconds_count{{{routes}}})", 6)
        recommend_count = (
            f'http_request_duration_seconds_count{{route="/recommend",instance="{instance}"}}'
        )
        wait_for(prometheus, recommend_count, 1)

        latencies = []
        t_end = time.monotonic() + LOAD_SECONDS
        n = 0
        while time.monotonic() < t_end:
            n += 1
            body: dict[str, Any] = {"user_id": users[n % len(users)], "k": 10}
            if n % 25 == 0:  # a history with an unknown id, for the unknown-items panel
                body = {"history": [*ids[n % 800 : n % 800 + 5], f"gone-{n}"], "k": 10}
            status, seconds = client.post("/recommend", body)
            assert status == 200
            latencies.append(seconds)
            if n % 100 == 1:
                side_requests(n)
    finally:
        client.close()
        failing.close()
        degraded.close()
    wait_for(prometheus, recommend_count, len(latencies) + 1)

    window = f"{math.ceil(time.monotonic() - started) + 10}s"  # the whole test's samples
    variables = {"__rate_interval": window, "__interval": f"{SCRAPE_SECONDS}s", "__range": window}
    dashboard = json.loads(DASHBOARD.read_text())
    results = {}
    for title, expr in dashboard_exprs(dashboard):
        result = query(prometheus, substitute(expr, variables))
        assert result, f"{title}: no data for {expr}"
        values = [float(sample["value"][1]) for sample in result]
        assert all(math.isfinite(v) for v in values), f"{title}: {expr} -> {result}"
        results.setdefault(title, []).append(result)
    assert len(results) == len({title for title, _ in dashboard_exprs(dashboard)})

    (p99_result,) = results[LATENCY_P99]
    by_route = {s["metric"]["route"]: float(s["value"][1]) for s in p99_result}
    server_p99 = by_route["/recommend"]
    client_p99 = float(np.quantile(latencies, 0.99))
    logger.info(
        "%d /recommend requests in %.1f s, client p50 %.2f ms: p99 from Prometheus %.2f ms (bucket %d),"
        " load generator %.2f ms (bucket %d); test ran %.1f s",
        len(latencies),
        LOAD_SECONDS,
        float(np.quantile(latencies, 0.5)) * 1e3,
        server_p99 * 1e3,
        bucket(server_p99),
        client_p99 * 1e3,
        bucket(client_p99),
        time.monotonic() - started,
    )
    # Each request's server time is part of its client time, so the server's p99 is at most the client's: at most
    # the upper bound of the client's bucket (the histogram interpolates inside a bucket). The client's own share
    # (sending, reading, Python's pauses on a shared 2-core machine) has reached a third of its p99 (server 1.47 ms
    # against client 2.13 ms, 3.90 against 5.93), so the server's p99 is only held to at least half the client's:
    # enough to catch a wrong unit, route or histogram, not machine noise.
    assert client_p99 / 2 <= server_p99 <= LATENCY_BUCKETS[bucket(client_p99)], (
        server_p99,
        client_p99,
    )
    assert server_p99 <= LATENCY_BUCKETS[-1]  # inside the histogram, not in +Inf
