"""Floor-relative serving benchmark: what the service answers, as a share of what its parts allow, in one run.

On the same pinned core (core 0; the load generator on core 1), one after the other:

- ``bare``: the bare-HTTP floor, a minimal ASGI app under the service's own uvicorn settings (``bare_asgi.py``);
- ``compute``: the in-process compute floor, ``ModelRuntime.recommend`` on one micro-batch (history rows gathered,
  ONNX encode, index search), no HTTP, at batch 1 and at batch ``max(--concurrency)``;
- ``inline``: ``POST /recommend`` with the history in the body (``--history-len`` ids);
- ``redis``: ``POST /recommend`` by ``user_id``, the same histories stored in Redis through ``POST /events``;
  every user is read again and again and never written during the rows, so after its first read each history
  comes from the service's history cache (the cache's best case; the hit rate is recorded);
- ``inline@cache off``, ``redis@cache off``: the same two rows from a second service started with the history cache
  off (``RECSYS_HISTORY_CACHE_USERS=0``): every history read goes to Redis (the cache's worst case is this plus a
  dictionary lookup per read);
- the load generator's own ceiling: requests per CPU second of ``loadgen.py`` during each row (``cpu_rps``); a row
  whose generator was busy for most of its wall time measured the generator, not the server.

The rows (and the compute floor) are measured in turn, ``--rounds`` times. Each HTTP row is reported as a ratio to
the bare floor at the same concurrency, the service rows also to the compute floor, and ``redis`` to ``inline``;
a ratio is the median over the rounds of the ratio within one round, so a shared machine whose pace drifts during
the run still gives comparable figures. Every run is appended to ``--out`` with the machine's description.

    .venv/bin/python benchmarks/serve_floors.py --artifact runs/quickstart/artifacts    # ~2 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from numpy.typing import NDArray
from prometheus_client.parser import text_string_to_metric_families
from results_io import load_records, save_json
from serve_load import drive_level, drop_prefix, start_pinned

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    args = _args()
    if args.compute_only:
        grow = None if args.grow_from is None else (np.load(args.grow_from), args.grow_to)
        floor = compute_floor(args.artifact, _histories(args), args.batches, args.duration, grow)
        print(json.dumps(floor))
        return 0
    histories = _histories(args)
    with ExitStack() as stack:
        targets = {"bare": _bare_target(args, stack)}
        targets.update(_service_targets(args, stack, histories, REPO, 1, ""))
        if args.baseline is not None:  # another version of the service, side by side
            targets.update(_service_targets(args, stack, histories, args.baseline, 2, "@baseline"))
        off = {"RECSYS_HISTORY_CACHE_USERS": "0"}
        targets.update(_service_targets(args, stack, histories, REPO, 3, "@cache off", off))
        rows, compute = measure(args, targets)
        cache = history_cache_lookups(args.port + 1)
    record = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(args.machine_note),
        "artifact": _artifact_summary(args.artifact),
        "settings": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "history_len": args.history_len,
            "users": args.users,
        },
        "baseline": None if args.baseline is None else str(args.baseline),
        "rows": {name: list(levels.values()) for name, levels in rows.items()},
        "compute": compute,
        "history_cache": cache,
        "ratios": ratios(rows, compute),
    }
    save_json(args.out, [*load_records(args.out), record], indent=1)
    print_table(record)
    return 0


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--artifact", type=Path, default=REPO / "runs/quickstart/artifacts")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    p.add_argument("--port", type=int, default=8393)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per load level")
    p.add_argument(
        "--rounds", type=int, default=3, help="each row and level measured this many times"
    )
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--history-len", type=int, default=10)
    p.add_argument(
        "--baseline",
        type=Path,
        help="a directory holding another version's service/ and core/ packages (e.g. `git archive main service "
        "core | tar -x -C DIR`): its inline and redis rows are measured in the same run",
    )
    p.add_argument("--machine-note", default="", help="appended to the machine description")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/serve_floors.json")
    p.add_argument("--compute-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32], help=argparse.SUPPRESS)
    p.add_argument(
        "--grow-from",
        type=Path,
        help="--compute-only: an (M, d_l) .npy of text embeddings; the catalogue grows to --grow-to items from "
        "them (as POST /items would) before the compute floor is measured",
    )
    p.add_argument("--grow-to", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.artifact = args.artifact.resolve()
    return args


def _histories(args: argparse.Namespace) -> dict[str, list[str]]:
    """``--users`` users, each ``--history-len`` trained items drawn at random (seeded)."""
    from core.artifact import ITEM_IDS_FILE, resolve_artifact

    items = json.loads((resolve_artifact(args.artifact) / ITEM_IDS_FILE).read_text())
    rng = random.Random(0)
    return {f"floor-user-{u}": rng.sample(items, args.history_len) for u in range(args.users)}


Target = tuple[
    int, list[dict[str, Any]], int
]  # a server's port, the bodies of a row, the server's pid


def _bare_target(args: argparse.Namespace, stack: ExitStack) -> Target:
    cmd = [sys.executable, str(REPO / "benchmarks/bare_asgi.py"), "--port", str(args.port)]
    server = stack.enter_context(_running(start_pinned(cmd, args.port, {})))
    return args.port, [{"history": ["1", "2"], "k": 10}], server.pid


def _service_targets(
    args: argparse.Namespace,
    stack: ExitStack,
    histories: dict[str, list[str]],
    code: Path,
    offset: int,
    suffix: str,
    env: dict[str, str] | None = None,
) -> dict[str, Target]:
    """Start the service whose packages are in ``code`` on ``--port + offset``, its histories stored in Redis
    under a key prefix of its own (dropped on exit); its ``inline`` and ``redis`` rows."""
    port, prefix = args.port + offset, f"floors-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "service.cli", "--artifact", str(args.artifact)]
    cmd += ["--port", str(port), "--redis-url", args.redis_url, "--key-prefix", prefix]
    env = {"RECSYS_COLD_SYNC_SECONDS": "0", "PYTHONPATH": str(code), **(env or {})}
    stack.callback(drop_prefix, args.redis_url, prefix)
    server = start_pinned([*cmd, "--log-level", "warning"], port, env, code)
    stack.enter_context(_running(server))
    inline = [{"history": h, "k": 10} for h in histories.values()]
    by_user = [{"user_id": u, "k": 10} for u in histories]
    _store(port, histories)
    _warm(port, inline[:100] + by_user[:100])
    return {
        f"inline{suffix}": (port, inline, server.pid),
        f"redis{suffix}": (port, by_user, server.pid),
    }


@contextmanager
def _running(server: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield server
    finally:
        server.terminate()
        server.wait(timeout=30)


def measure(
    args: argparse.Namespace, targets: dict[str, Target]
) -> tuple[dict[str, dict[int, dict[str, Any]]], dict[int, dict[str, Any]]]:
    """Every row at every concurrency, then the compute floor, interleaved, ``--rounds`` times: the rows and the
    compute floor, per level the round with the median req/s and every round's req/s (``rps_rounds``); for the
    HTTP rows also the server's CPU microseconds per request in each round (``cpu_us_rounds``)."""
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {name: {} for name in targets}
    runs["compute"] = {}
    for _ in range(args.rounds):
        for c in args.concurrency:
            for name, (port, bodies, pid) in targets.items():
                level = {"mode": "closed", "concurrency": c}
                cpu = _process_cpu(pid)
                result = drive_level(port, args.duration, "/recommend", level, bodies)
                cpu = _process_cpu(pid) - cpu
                result["server_cpu_us_per_request"] = round(cpu / result["requests"] * 1e6, 1)
                runs[name].setdefault(c, []).append(result)
        for b, result in _compute_rows(args).items():
            runs["compute"].setdefault(b, []).append(result)
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    for name, levels in runs.items():
        rows[name] = {}
        for c, results in levels.items():
            ranked = sorted(results, key=lambda r: r["rps"])
            rows[name][c] = {**ranked[len(ranked) // 2], "rps_rounds": [r["rps"] for r in results]}
            if name != "compute":
                rows[name][c]["cpu_us_rounds"] = [r["server_cpu_us_per_request"] for r in results]
    return rows, rows.pop("compute")


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of process ``pid`` so far, from ``/proc/<pid>/stat``.

    A server's CPU per request depends far less on what else runs on its core than its requests per second do.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _store(port: int, histories: dict[str, list[str]]) -> None:
    events = [{"user_id": u, "item_id": i} for u, h in histories.items() for i in h]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        for start in range(0, len(events), 500):
            client.post("/events", json={"events": events[start : start + 500]}).raise_for_status()
        got = client.post("/recommend", json={"user_id": next(iter(histories)), "k": 10}).json()
        assert got["source"] == "model", got
        assert not got["degraded"], got


def history_cache_lookups(port: int) -> dict[str, float]:
    """The service's history-cache lookups so far, by result, and the hit rate (from its ``/metrics``)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    counts = {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "rec_history_cache_lookups"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    total = sum(counts.values())
    return {**counts, "hit_rate": round(counts.get("hit", 0) / total, 4) if total else 0.0}


def _warm(port: int, bodies: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        for body in bodies:
            client.post("/recommend", json=body).raise_for_status()


def _compute_rows(args: argparse.Namespace) -> dict[int, dict[str, Any]]:
    """The compute floor, measured in a child process pinned to core 0 (where the service ran)."""
    cmd = ["taskset", "-c", "0", sys.executable, str(Path(__file__).resolve()), "--compute-only"]
    cmd += ["--artifact", str(args.artifact), "--users", str(args.users)]
    cmd += ["--history-len", str(args.history_len), "--duration", str(args.duration)]
    cmd += ["--batches", *(str(b) for b in sorted({1, max(args.concurrency)}))]
    out = json.loads(
        subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    )
    return {int(k): v for k, v in out.items()}


def compute_floor(
    artifact: Path,
    histories: dict[str, list[str]],
    batches: list[int],
    seconds: float,
    grow: tuple[NDArray[np.float32], int] | None = None,
) -> dict[int, dict[str, Any]]:
    """Requests per second of ``ModelRuntime.recommend`` on micro-batches of each size (one thread, as served).

    ``grow`` = (text embeddings E, n): first add new items until the catalogue holds n, each a row of E drawn at
    random plus a little noise (a catalogue grown through ``POST /items`` from variants of the same texts), so the
    index search costs what it costs on the grown catalogue.
    """
    from core.artifact import resolve_artifact
    from service.metrics import ServiceMetrics
    from service.runtime import ModelRuntime, Query

    rt = ModelRuntime.load(resolve_artifact(artifact), 1, ServiceMetrics())
    if grow is not None:
        _grow(rt, *grow)
    queries = [Query(rt.lookup(h)[0], 10, frozenset()) for h in histories.values()]
    out = {}
    for b in batches:
        rt.recommend(queries[:b])  # warm
        done, i, t0 = 0, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            batch = [queries[(i + j) % len(queries)] for j in range(b)]
            rt.recommend(batch)
            done, i = done + b, i + b
        elapsed = time.perf_counter() - t0
        out[b] = {
            "batch": b,
            "rps": round(done / elapsed, 1),
            "ms_per_batch": round(elapsed / done * b * 1e3, 4),
        }
    rt.close()
    return out


def _grow(rt: Any, text: NDArray[np.float32], target: int) -> None:
    rng = np.random.default_rng(0)
    spread = 0.05 * float(text.std())
    for start in range(rt.size, target, 4096):
        n = min(4096, target - start)
        emb = text[rng.integers(len(text), size=n)] + rng.normal(0, spread, (n, text.shape[1]))
        ids = [f"grown-{start + i}" for i in range(n)]
        rt.add_items(ids, [""] * n, emb.astype(np.float32))


def ratios(
    rows: dict[str, dict[int, dict[str, Any]]], compute: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    """Per concurrency, each a median over the rounds of the ratio within the round (rows of one round are
    measured seconds apart, so a machine whose pace drifts between rounds still gives comparable ratios): each
    row's req/s over the bare floor's, the service rows' over the compute floor's (batch 1 at c=1, the largest
    batch otherwise), ``redis`` over ``inline``; and each row's generator CPU share (``loadgen_busy``)."""
    out: dict[str, Any] = {}
    for c, bare in rows["bare"].items():
        floor = compute[1 if c == 1 else max(compute)]
        level: dict[str, float] = {}
        for name in rows:
            row = rows[name][c]
            level[f"{name}_over_bare"] = _paired(row, bare)
            level[f"{name}_loadgen_busy"] = round(row["cpu_s"] / row["seconds"], 3)
            if "server_cpu_us_per_request" in row:
                level[f"{name}_server_cpu_us_per_request"] = row["server_cpu_us_per_request"]
            if name != "bare":
                level[f"{name}_over_compute"] = _paired(row, floor)
        for suffix in ("", "@baseline", "@cache off"):
            if f"redis{suffix}" in rows:
                redis, inline = rows[f"redis{suffix}"][c], rows[f"inline{suffix}"][c]
                level[f"redis_over_inline{suffix}"] = _paired(redis, inline)
                if "cpu_us_rounds" in redis:
                    level[f"redis_cpu_over_inline{suffix}"] = _paired(
                        redis, inline, "cpu_us_rounds"
                    )
        level["loadgen_ceiling_rps"] = bare["cpu_rps"]
        out[f"c={c}"] = level
    return out


def _paired(row: dict[str, Any], floor: dict[str, Any], key: str = "rps_rounds") -> float:
    """The median over rounds of ``row``'s req/s (or ``key``) over ``floor``'s in the same round."""
    shares = sorted(a / b for a, b in zip(row[key], floor[key], strict=True))
    mid = len(shares) // 2
    median = shares[mid] if len(shares) % 2 else (shares[mid - 1] + shares[mid]) / 2
    return round(median, 3)


def machine(note: str) -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        model = names[0] if names else ""
    desc = f"{platform.machine()} {model}, {os.cpu_count()} cores; service on core 0, load generator on core 1"
    return f"{desc}; {note}" if note else desc


def _artifact_summary(artifact: Path) -> dict[str, Any]:
    from core.artifact import MANIFEST_FILE, resolve_artifact

    manifest = json.loads((resolve_artifact(artifact) / MANIFEST_FILE).read_text())
    return {
        "items": manifest["num_items"],
        "index": manifest["index"]["kind"],
        "model": manifest["model_kind"],
    }


def print_table(record: dict[str, Any]) -> None:
    print(
        f"\n{record['machine']}\n{'row':<18}{'load':>6}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'gen busy':>10}"
        f"{'server us/req':>15}"
    )
    for name, levels in record["rows"].items():
        for r in levels:
            busy = r["cpu_s"] / r["seconds"]
            print(
                f"{name:<18}{'c=' + str(r['concurrency']):>6}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}",
                end="",
            )
            print(f"{r['p99_ms']:>9.2f}{busy:>10.2f}{r.get('server_cpu_us_per_request', 0):>15.0f}")
    for b, r in record["compute"].items():
        print(f"compute   b={b:<4}{r['rps']:>9.0f}   ({r['ms_per_batch']} ms per batch)")
    print(json.dumps(record["ratios"], indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
