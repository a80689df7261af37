"""The scenarios of ``benchmarks/faults.py``: each takes the bench and the results so far and returns its row."""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.service.faults import flip, publish_variant, truncate, wrong_checksum

if TYPE_CHECKING:
    from faults import Bench

LEAD_S, TAIL_S = 3.0, 6.0  # load before the fault, and after it ends


def capacity(bench: Bench, _results: dict[str, Any]) -> dict[str, Any]:
    """Closed loop, 16 connections, 15 s, the load mix: the requests/s the soak takes a share of."""
    load = bench.load(bench.mix("cap"), 15.0).result()
    return {"rps": load["rps"], "load": load}


def _outage(
    bench: Bench, tag: str, begin: Callable[[], None], end: Callable[[], None]
) -> dict[str, Any]:
    """Load for LEAD_S, the fault for --outage-seconds (readiness checked in the middle), load for TAIL_S."""
    n = bench.args.outage_seconds
    load = bench.load(bench.mix(tag), LEAD_S + n + TAIL_S, rate=bench.args.rate)
    time.sleep(LEAD_S)
    begin()
    time.sleep(n / 2)
    ready_during = httpx.get(f"{bench.base}/readyz", timeout=5).status_code
    time.sleep(n / 2)
    end()
    recovery = bench.recovery_seconds()
    return {"readyz_during": ready_during, "recovery_s": recovery, "load": load.result()}


def redis_down(bench: Bench, _results: dict[str, Any]) -> dict[str, Any]:
    return _outage(bench, "down", bench.redis.stop, bench.redis.start)


def redis_slow(bench: Bench, _results: dict[str, Any]) -> dict[str, Any]:
    proxy = bench.proxy
    assert proxy is not None

    def slow(delay: float) -> Callable[[], None]:
        return lambda: setattr(proxy, "delay", delay)

    return {"delay_ms": 300, **_outage(bench, "slow", slow(0.3), slow(0.0))}


def redis_flap(bench: Bench, _results: dict[str, Any]) -> dict[str, Any]:
    proxy = bench.proxy
    assert proxy is not None
    row = _outage(bench, "flap", lambda: proxy.start_flapping(0.05), proxy.stop_flapping)
    return {"period_ms": 50, **row}


def _failed_reloads(client: httpx.Client) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("rec_reloads_total{") and 'result="failed"' in line:
            total += float(line.split()[-1])
    return total


def bad_artifacts(bench: Bench, _results: dict[str, Any]) -> dict[str, Any]:
    """Each bad version published to CURRENT under load: one ERROR line naming it, one count, v1 serving."""
    from core.artifact import write_current

    faults = {
        "v1-corrupt": flip("encoder.onnx", 1000),
        "v1-truncated": truncate("items.faiss"),
        "v1-checksum": wrong_checksum,
    }
    load = bench.load(bench.mix("art"), LEAD_S + 8 * len(faults) + TAIL_S, rate=bench.args.rate)
    time.sleep(LEAD_S)
    refusals = {}
    with httpx.Client(base_url=bench.base, timeout=10) as c:
        for version, edit in faults.items():
            publish_variant(bench.root, bench.artifact, version, edit)
            before, t0 = _failed_reloads(c), time.perf_counter()
            write_current(bench.root, version)
            while _failed_reloads(c) == before and time.perf_counter() - t0 < 30:
                time.sleep(0.05)
            lines = [
                line
                for line in bench.log_path.read_text().splitlines()
                if f"reload of {version} refused" in line
            ]
            refusals[version] = {
                "seconds_to_refusal": round(time.perf_counter() - t0, 2),
                "counted": _failed_reloads(c) - before,
                "log_lines": len(lines),
                "log_line": re.sub(r"^.*?reload of", "reload of", lines[0])[:300]
                if lines
                else None,
            }
            time.sleep(5)
        write_current(bench.root, "v1")
        served = c.post("/recommend", json={"user_id": bench.users[0]}).json()["model_version"]
    return {"refusals": refusals, "served_after": served, "load": load.result()}


def events(bench: Bench, _results: dict[str, Any]) -> dict[str, Any]:
    """4 clients post 3 events per request (a user of their own) while Redis is killed and restarted."""
    answers: dict[int, int] = {}
    counter = iter(range(10**9))
    stop = threading.Event()

    def post() -> None:
        with httpx.Client(base_url=bench.base, timeout=10) as c:
            while not stop.is_set():
                i = next(counter)
                evs = [
                    {
                        "user_id": f"ev-{i}",
                        "item_id": bench.item_ids[(i + 97 * j) % len(bench.item_ids)],
                    }
                    for j in range(3)
                ]
                try:
                    answers[i] = c.post("/events", json={"events": evs}).status_code
                except httpx.HTTPError:
                    answers[i] = 0

    posters = [threading.Thread(target=post) for _ in range(4)]
    for t in posters:
        t.start()
    time.sleep(LEAD_S)
    bench.redis.stop()
    time.sleep(bench.args.outage_seconds)
    bench.redis.start()
    recovery = bench.recovery_seconds()
    time.sleep(TAIL_S)
    stop.set()
    for t in posters:
        t.join()
    row = _check_events(bench, answers)
    row["recovery_s"] = recovery
    row.update(_round_trip(bench, answers))
    return row


def _expected(bench: Bench, i: int) -> list[str]:
    return [bench.item_ids[(i + 97 * j) % len(bench.item_ids)] for j in range(3)]


def _check_events(bench: Bench, answers: dict[int, int]) -> dict[str, Any]:
    client = bench.client()
    stream = {
        (f[b"user_id"].decode(), f[b"item_id"].decode())
        for _, f in client.xrange(f"{bench.prefix}:events", "-", "+")
    }
    acked = [i for i, s in answers.items() if s == 200]
    lost_stream = lost_seq = partial = 0
    for i, status in answers.items():
        expected = _expected(bench, i)
        stored = [b.decode() for b in client.lrange(f"{bench.prefix}:seq:ev-{i}", 0, -1)]
        in_stream = [(f"ev-{i}", item) in stream for item in expected]
        if status == 200:
            lost_stream += 3 - sum(in_stream)
            lost_seq += stored != expected
        else:
            partial += stored not in ([], expected) or len(set(in_stream)) != 1
    statuses: dict[str, int] = {}
    for s in answers.values():
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    return {
        "requests": len(answers),
        "events_per_request": 3,
        "status": statuses,
        "acknowledged_events": 3 * len(acked),
        "lost_from_stream": lost_stream,
        "users_whose_sequence_differs": lost_seq,
        "unacknowledged_stored_half_way": partial,
    }


def _round_trip(bench: Bench, answers: dict[int, int]) -> dict[str, Any]:
    """``recsys events`` to CSV: every acknowledged event is there; then one short training run on it."""
    from exporter.cli import main as recsys
    from training.config import load_config
    from training.experiment import run_experiment

    out = Path(tempfile.mkdtemp(dir=bench.workdir)) / "events.csv"
    argv = ["events", str(out), "--redis-url", bench.redis.url, "--key-prefix", bench.prefix]
    assert recsys(argv) == 0
    rows = {tuple(line.split(",")[:2]) for line in out.read_text().splitlines()[1:]}
    missing = sum(
        (f"ev-{i}", item) not in rows
        for i, s in answers.items()
        if s == 200
        for item in _expected(bench, i)
    )
    overrides = [
        f'data.source={{format="canonical", path="{out}"}}',
        "data.max_len=20",
        "data.min_user_interactions=3",
        'embedding.mode="id"',
        "train.max_epochs=1",
        "train.threads=1",
    ]
    config = load_config(
        Path(__file__).resolve().parents[1] / "training/configs/ml-100k.toml", overrides
    )
    t0 = time.perf_counter()
    run_dir = bench.workdir / "events-run"
    run_experiment(config, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "exported_rows": len(rows),
        "acknowledged_missing_from_export": missing,
        "training_seconds": round(time.perf_counter() - t0, 1),
        "training_users": metrics["dataset"]["users"],
        "training_interactions": metrics["dataset"]["interactions"],
        "training_test_ndcg_at_10": round(metrics["test"]["NDCG@10"], 4),
    }


def _key_groups(bench: Bench) -> dict[str, int]:
    """Keys of the bench's prefix: user sequences (``seq``) and the rest."""
    groups = {"seq": 0, "other": 0}
    for key in bench.client().scan_iter(f"{bench.prefix}:*", count=10_000):
        groups["seq" if key.decode().split(":")[1] == "seq" else "other"] += 1
    return groups


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def soak(bench: Bench, results: dict[str, Any]) -> dict[str, Any]:
    """--soak-minutes of open-loop load at --soak-share of the capacity (measured again just before: the machine is
    shared): errors, p99 and resident memory in the first and the last minute, and the growth of the key count
    against the users the events introduced. Slots more than 5 s late are dropped and counted (``not_sent``)."""
    assert bench.server is not None
    capacity_now = bench.load(bench.mix("cap2"), 15.0).result()[
        "rps"
    ]  # the machine is shared: again, now
    rate = round(bench.args.soak_share * capacity_now, 1)
    seconds, writers = bench.args.soak_minutes * 60, 2000
    keys_before, stream_before = _key_groups(bench), bench.client().xlen(f"{bench.prefix}:events")
    load = bench.load(bench.mix("soak", writers), seconds, rate=rate, window=60.0, max_lag=5.0)
    t0, rss = time.perf_counter(), []
    while load.process.poll() is None:
        rss.append((time.perf_counter() - t0, _rss_mb(bench.server.pid)))
        time.sleep(5)
    result = load.result()
    keys_after, stream_after = _key_groups(bench), bench.client().xlen(f"{bench.prefix}:events")
    events_ok = result["by_path"]["/events"]["status"].get("200", 0)
    first = [m for t, m in rss if t < 60]
    last = [m for t, m in rss if t >= seconds - 60]
    windows = result["windows"]
    return {
        "minutes": bench.args.soak_minutes,
        "capacity_at_start_rps": results["capacity"]["rps"],
        "capacity_before_rps": capacity_now,
        "rate": rate,
        "achieved_rps": result["rps"],
        "not_sent": result["not_sent"],
        "p99_first_minute_ms": windows[0]["p99_ms"],
        "p99_last_minute_ms": windows[-1]["p99_ms"],
        "rss_first_minute_mb": round(sum(first) / len(first), 1),
        "rss_last_minute_mb": round(sum(last) / len(last), 1),
        "rss_max_mb": round(max(m for _, m in rss), 1),
        "keys_before": keys_before,
        "keys_after": keys_after,
        "new_users_from_events": min(events_ok, writers),  # soak-0..soak-1999, in order
        "acknowledged_events": events_ok,
        "stream_growth": stream_after - stream_before,
        "windows": [
            {k: w[k] for k in ("start_s", "requests", "errors", "p50_ms", "p99_ms")}
            for w in windows
        ],
        "load": result,
    }


def sigterm(bench: Bench, _results: dict[str, Any]) -> dict[str, Any]:
    """SIGTERM under load while a POST /admin/reload (a request that takes a while) is unanswered."""
    load = bench.load(bench.mix("term"), LEAD_S + 5.0, rate=bench.args.rate)
    time.sleep(LEAD_S)
    answers: list[int] = []

    def reload() -> None:
        answers.append(httpx.post(f"{bench.base}/admin/reload", json={}, timeout=120).status_code)

    for _ in range(20):  # until SIGTERM goes out while the reload is unanswered
        started = bench.log_path.read_text().count("loading ")
        slow = threading.Thread(target=reload)
        slow.start()
        while bench.log_path.read_text().count("loading ") == started and slow.is_alive():
            time.sleep(0.002)
        if slow.is_alive():
            break
        slow.join()
    in_flight, t0 = slow.is_alive(), time.perf_counter()
    code = bench.stop_server()
    exit_s = round(time.perf_counter() - t0, 2)
    slow.join()
    return {
        "reload_in_flight_at_sigterm": in_flight,
        "reload_answer": answers[-1],
        "exit_status": code,
        "exit_seconds": exit_s,
        "load": load.result(),
    }


SCENARIOS: dict[str, Callable[[Bench, dict[str, Any]], dict[str, Any]]] = {
    "capacity": capacity,
    "redis_down": redis_down,
    "redis_slow": redis_slow,
    "redis_flap": redis_flap,
    "bad_artifacts": bad_artifacts,
    "events": events,
    "soak": soak,
    "sigterm": sigterm,
}
