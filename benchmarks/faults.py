"""Fault scenarios under load, the long versions of the tests in ``tests/service/test_store_faults.py``,
``test_bad_artifacts.py`` and ``test_shutdown.py``; writes ``benchmarks/results/faults.json`` and prints a table.

Trains (or reuses) a quickstart-size model (ml-100k, one epoch), exports it as ``v1`` into an artifact root of its
own, starts a private ``redis-server`` (append-only file, fsync always) behind the asyncio TCP proxy of the tests
(``tests/service/faults.py``), and starts ``recsys serve`` against the proxy, polling ``CURRENT``. Load comes from
``benchmarks/loadgen.py`` (open loop, a mix of ``/recommend`` by user and by history, ``/score`` and
``POST /events``). Scenarios, in order (``benchmarks/fault_scenarios.py``):

  capacity       closed loop, 16 connections: the request rate the soak is a share of
  redis_down     Redis killed for --outage-seconds and restarted
  redis_slow     every Redis reply held back 300 ms for --outage-seconds
  redis_flap     Redis connections dropped, then refused, in turn every 50 ms for --outage-seconds
  bad_artifacts  a corrupt, a truncated and a checksum-mismatched version published to CURRENT in turn
  events         events posted by 4 clients while Redis is killed and restarted; every acknowledged one looked up
                 in the stream and the user's sequence; the stream exported (``recsys events``) and trained on
  soak           --soak-minutes at --soak-share of the capacity
  sigterm        SIGTERM under load while a reload is in flight: it finishes, the exit status is 0

Each reports requests, status codes, degraded answers, 5xx (every 5xx except a write's 503), p50/p99 and the
recovery time: from the fault's end until a read by user is no longer degraded, a write is accepted and /readyz
answers 200.

    .venv/bin/python benchmarks/faults.py                        # ~15 min; writes benchmarks/results/faults.json
    .venv/bin/python benchmarks/faults.py --soak-minutes 2 --only redis_down soak
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from fault_scenarios import SCENARIOS  # noqa: E402
from results_io import save_json  # noqa: E402

from tests.service.faults import FaultyProxy, RedisServer, free_port  # noqa: E402

WRITES = ("/events", "/items")


def main() -> int:
    args = _args()
    workdir = Path(tempfile.mkdtemp(prefix="faults-bench-"))
    bench = Bench(args, workdir)
    results: dict[str, Any] = {}
    try:
        bench.start()
        for name, scenario in SCENARIOS.items():
            if args.only and name not in args.only and name != "capacity":
                continue
            print(f"--- {name}", flush=True)
            results[name] = scenario(bench, results)
            print(json.dumps(_brief(results[name])), flush=True)
            save_json(
                args.out, _payload(args, results), indent=1
            )  # a run cut short keeps what it has
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    return 0


def _payload(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    return {
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs, no pinning",
        "model": "SASRec-AlphaFuse on ml-100k, 1 epoch, max_len 20 (quickstart size)",
        "settings": {
            "RECSYS_REDIS_TIMEOUT_MS": 50,
            "RECSYS_REDIS_WRITE_TIMEOUT_MS": 1000,
            "RECSYS_RELOAD_POLL_SECONDS": 0.2,
            "RECSYS_COLD_SYNC_SECONDS": 1,
        },
        "load": f"open loop at {args.rate:g}/s on 32 connections during faults; per 8 requests 4 /recommend "
        "by user_id, 2 by history, 1 /score (20 candidates), 1 POST /events (one event); Redis reached "
        "through the asyncio TCP proxy in every scenario",
        "outage_seconds": args.outage_seconds,
        "scenarios": results,
    }


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run-dir", type=Path, help="a trained run to serve (default: train one)")
    p.add_argument("--outage-seconds", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=100.0, help="requests/s of the load during faults")
    p.add_argument("--soak-minutes", type=float, default=10.0)
    p.add_argument("--soak-share", type=float, default=0.8, help="of the measured capacity")
    p.add_argument("--only", nargs="+", choices=list(SCENARIOS), help="run these scenarios")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/faults.json")
    return p.parse_args()


@dataclass
class Load:
    """A ``loadgen.py`` run in a child process."""

    process: subprocess.Popen[str]
    spec_path: Path

    def result(self) -> dict[str, Any]:
        out, err = self.process.communicate(timeout=3600)
        self.spec_path.unlink()
        if self.process.returncode != 0:
            raise RuntimeError(f"loadgen failed: {err[-2000:]}")
        return json.loads(out)  # type: ignore[no-any-return]


class Bench:
    """The service under test, its Redis (behind the proxy), its artifact root, and the load mix."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.root = workdir / "artifacts"
        self.redis = RedisServer(workdir, durable=True)
        self.proxy: FaultyProxy | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.prefix = f"faults-{uuid.uuid4().hex[:8]}"
        self.log_path = workdir / "server.log"
        self.item_ids: list[str] = []
        self.users: list[str] = []

    @property
    def artifact(self) -> Path:
        return self.root / "v1"

    def start(self) -> None:
        from core.artifact import ITEM_IDS_FILE
        from exporter.export import export_run

        run_dir = self.args.run_dir or _train()
        export_run(run_dir, self.root, version="v1")
        self.item_ids = json.loads((self.artifact / ITEM_IDS_FILE).read_text())
        self.redis.start()
        self.proxy = FaultyProxy(self.redis.port)
        self.proxy.start()
        self.server = self.start_server()
        self.users = self.seed_users(200)

    def start_server(self) -> subprocess.Popen[bytes]:
        assert self.proxy is not None
        cmd = [sys.executable, "-m", "service.cli", "--artifact", str(self.root)]
        cmd += ["--redis-url", self.proxy.url, "--key-prefix", self.prefix]
        cmd += ["--port", str(self.port), "--log-level", "info"]
        env = {**os.environ, "RECSYS_RELOAD_POLL_SECONDS": "0.2", "RECSYS_COLD_SYNC_SECONDS": "1"}
        env["PYTHONPATH"] = str(REPO)
        with self.log_path.open("ab") as log:
            server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.ready():
                return server
            time.sleep(0.2)
        server.kill()
        raise RuntimeError("the service did not become ready in 180 s")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def seed_users(self, n: int) -> list[str]:
        users = [f"seed-{u}" for u in range(n)]
        events = [
            {"user_id": user, "item_id": self.item_ids[(7 * u + 3 * j) % len(self.item_ids)]}
            for u, user in enumerate(users)
            for j in range(10)
        ]
        with httpx.Client(base_url=self.base, timeout=30) as c:
            for start in range(0, len(events), 500):
                c.post("/events", json={"events": events[start : start + 500]}).raise_for_status()
        return users

    def mix(self, tag: str, writers: int = 1000) -> list[dict[str, Any]]:
        """The load: per 8 requests, 4 /recommend by user, 2 by history, 1 /score, 1 POST /events."""
        ids, out = self.item_ids, []
        for i in range(writers):
            user = self.users[i % len(self.users)]
            history = [ids[(i + 5 * j) % len(ids)] for j in range(10)]
            for k in range(4):
                out.append(
                    {
                        "path": "/recommend",
                        "body": {"user_id": self.users[(i + k * 50) % len(self.users)], "k": 10},
                    }
                )
            out += [{"path": "/recommend", "body": {"history": history, "k": 10}}] * 2
            score = {"requests": [{"user_id": user, "item_ids": ids[i % 500 : i % 500 + 20]}]}
            out.append({"path": "/score", "body": score})
            event = {"user_id": f"{tag}-{i}", "item_id": ids[(11 * i) % len(ids)]}
            out.append({"path": "/events", "body": {"events": [event]}})
        return out

    def load(
        self,
        requests: list[dict[str, Any]],
        seconds: float,
        rate: float | None = None,
        **extra: Any,
    ) -> Load:
        spec: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "duration": seconds}
        if rate is None:
            spec.update(mode="closed", concurrency=16)
        else:
            spec.update(mode="open", rate=rate, connections=32)
        spec.update(extra, requests=requests)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(spec, f)
        cmd = [sys.executable, str(REPO / "benchmarks/loadgen.py"), f.name]
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return Load(process, Path(f.name))

    def client(self) -> redis.Redis:
        """Straight to Redis, not through the proxy."""
        return self.redis.client()

    def recovery_seconds(self, timeout: float = 60.0) -> float:
        """From now until a read by user is not degraded, a write is accepted and /readyz answers 200."""
        t0, probe = (
            time.perf_counter(),
            {"events": [{"user_id": "probe", "item_id": self.item_ids[0]}]},
        )
        with httpx.Client(base_url=self.base, timeout=5) as c:
            while time.perf_counter() - t0 < timeout:
                try:
                    read = c.post("/recommend", json={"user_id": self.users[0], "k": 10})
                    ok = read.status_code == 200 and not read.json()["degraded"]
                    ok = ok and c.post("/events", json=probe).status_code == 200
                    if ok and c.get("/readyz").status_code == 200:
                        return round(time.perf_counter() - t0, 3)
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        raise RuntimeError(f"not recovered after {timeout} s")

    def stop_server(self) -> int:
        assert self.server is not None
        self.server.send_signal(signal.SIGTERM)
        code = self.server.wait(timeout=120)
        self.server = None
        return code

    def close(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()
        if self.proxy is not None:
            self.proxy.close()
        self.redis.stop()


def _train() -> Path:
    from training.config import load_config
    from training.experiment import run_experiment
    from training.run.rundir import RunDir

    run_dir = REPO / "runs" / "faults-bench-ml-100k"
    if RunDir(run_dir).metrics.exists():
        return run_dir
    config = load_config(
        REPO / "training" / "configs" / "ml-100k.toml",
        ['data.source.path="/work/shared/data/ml-100k"', "data.max_len=20", "train.max_epochs=1"],
    )
    run_experiment(config, run_dir)
    return run_dir


def five_xx(result: dict[str, Any]) -> int:
    """5xx answers other than the intended 503 of a write (which must carry Retry-After)."""
    bad = 0
    for path, row in result["by_path"].items():
        for code, n in row["status"].items():
            if int(code) >= 500 and not (path in WRITES and code == "503"):
                bad += n
    write_503 = sum(r["status"].get("503", 0) for p, r in result["by_path"].items() if p in WRITES)
    return bad + (write_503 - min(write_503, result["retry_after_503"]))


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("load", "windows", "by_path")}


def print_table(results: dict[str, Any]) -> None:
    head = f"{'scenario':<15}{'requests':>9}{'200':>8}{'503':>6}{'degraded':>9}{'5xx':>5}"
    print(
        "\n"
        + head
        + f"{'conn err':>9}{'unanswered':>11}{'p50 ms':>9}{'p99 ms':>9}{'recovery s':>11}"
    )
    for name, row in results.items():
        load = row.get("load")
        if not load:
            continue
        st = load["status"]
        print(
            f"{name:<15}{load['requests']:>9}{st.get('200', 0):>8}{st.get('503', 0):>6}"
            f"{load['degraded']:>9}{five_xx(load):>5}{load['connection_errors']:>9}{load['unanswered']:>11}"
            f"{load['p50_ms'] or 0:>9.1f}{load['p99_ms'] or 0:>9.1f}{row.get('recovery_s', '-')!s:>11}"
        )
    for name, row in results.items():
        print(f"{name}: {json.dumps(_brief(row))}")


if __name__ == "__main__":
    raise SystemExit(main())
