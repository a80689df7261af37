"""POST /recommend/batch against the same requests sent one by one to /recommend, over HTTP, stored histories in Redis.

Starts the service (uvicorn, one process) on an artifact, stores ``--users`` real-length histories of random trained
items through ``POST /events``, then times, for each variant of the batch route (on the fast path, as served, and
through FastAPI's router, for comparison): the ``--users`` requests as concurrent single ``/recommend`` calls
(``--concurrency`` in flight) and as one ``/recommend/batch`` call. Prints the median of ``--repeats`` runs.

    .venv/bin/python benchmarks/recommend_batch.py --artifact artifacts --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]
# the batch route moved off the fast path, to compare: FastAPI validates and answers it
ROUTED = (
    "import service.hotpath as h; h.ROUTED_READS = h.ROUTED_READS | {'/recommend/batch'}; "
    "import uvicorn; uvicorn.run('service.app:create_app', factory=True, port=int(__import__('sys').argv[1]), "
    "log_level='warning')"
)
SERVED = (
    "import uvicorn; uvicorn.run('service.app:create_app', factory=True, "
    "port=int(__import__('sys').argv[1]), log_level='warning')"
)


def main() -> int:
    args = _args()
    prefix = f"bench-batch-{uuid.uuid4().hex[:8]}"
    rows = []
    try:
        for name, code in (("fast path", SERVED), ("FastAPI router", ROUTED)):
            server = _start(code, args, prefix)
            try:
                rows.append(
                    {"batch route": name, **asyncio.run(_measure(args, name == "fast path"))}
                )
            finally:
                server.terminate()
                server.wait(timeout=30)
    finally:
        client = redis.Redis.from_url(args.redis_url)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    print(json.dumps({"users": args.users, "k": args.k, "rows": rows}, indent=2))
    return 0


def _start(code: str, args: argparse.Namespace, prefix: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RECSYS_ARTIFACT": str(args.artifact),
        "RECSYS_REDIS_URL": args.redis_url,
        "RECSYS_KEY_PREFIX": prefix,
        "RECSYS_MAX_BATCH": str(max(512, args.users)),
    }
    server = subprocess.Popen([sys.executable, "-c", code, str(args.port)], env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{args.port}/readyz").status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError("the service did not become ready")


async def _measure(args: argparse.Namespace, store_events: bool) -> dict[str, float]:
    url = f"http://127.0.0.1:{args.port}"
    ids = json.loads((_version(args.artifact) / "item_ids.json").read_text())
    rng = random.Random(0)
    users = [f"user-{i}" for i in range(args.users)]
    requests = [{"user_id": u, "k": args.k} for u in users]
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        if store_events:
            events = [{"user_id": u, "item_id": rng.choice(ids)} for u in users for _ in range(20)]
            for start in range(0, len(events), 512):
                r = await client.post("/events", json={"events": events[start : start + 512]})
                r.raise_for_status()
        single, batch = [], []
        for _ in range(args.repeats):
            single.append(await _singles(client, requests, args.concurrency))
            t0 = time.perf_counter()
            r = await client.post("/recommend/batch", json={"requests": requests})
            r.raise_for_status()
            batch.append(time.perf_counter() - t0)
    return {
        "single calls ms": round(1000 * statistics.median(single), 1),
        "one batch call ms": round(1000 * statistics.median(batch), 1),
    }


async def _singles(
    client: httpx.AsyncClient, requests: list[dict[str, object]], width: int
) -> float:
    gate = asyncio.Semaphore(width)

    async def one(body: dict[str, object]) -> None:
        async with gate:
            (await client.post("/recommend", json=body)).raise_for_status()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(b) for b in requests))
    return time.perf_counter() - t0


def _version(artifact: Path) -> Path:
    current = artifact / "CURRENT"
    return artifact / current.read_text().strip() if current.is_file() else artifact


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifact", type=Path, required=True, help="artifact directory or root")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--users", type=int, default=256)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--port", type=int, default=8791)
    return p.parse_args()


if __name__ == "__main__":
    sys.exit(main())
