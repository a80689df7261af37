"""What one history read costs the service's Redis client (redis-py asyncio with hiredis, on uvloop), by access
pattern: sequential from the pool, from the service's request-path reader (the same pool with its timeouts), from a
single-connection client, on a bare connection, 32 in flight at once,
and pipelined by 32. Each pattern reads 10-item lists as ``LRANGE key -50 -1``; wall and client-CPU microseconds per
read, the median of ``--reps`` interleaved repetitions. Run it pinned where the service runs:

    taskset -c 0 .venv/bin/python benchmarks/redis_reads.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import uvloop
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

Pattern = Callable[[list[str]], Awaitable[object]]


async def main(url: str, reads: int, reps: int) -> dict[str, dict[str, float]]:
    pool = Redis.from_url(url, decode_responses=False)
    single = Redis.from_url(url, decode_responses=False, single_connection_client=True)
    # the service's request-path reader: 50 ms socket timeouts, no retry (service.store._client)
    reader = Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=0.05,
        socket_connect_timeout=0.05,
        retry=Retry(NoBackoff(), 0),
    )
    conn = pool.connection_pool.make_connection()
    await conn.connect()
    prefix = f"redis-reads-{uuid.uuid4().hex[:8]}"
    keys = [f"{prefix}:seq:{u}" for u in range(64)]
    for key in keys:
        await pool.rpush(key, *[str(100 + i) for i in range(10)])

    async def bare(key: str) -> object:
        await conn.send_command("LRANGE", key, -50, -1)
        return await conn.read_response()

    async def pipelined(batch: list[str]) -> object:
        pipe = pool.pipeline(transaction=False)
        for key in batch:
            pipe.lrange(key, -50, -1)
        return await pipe.execute()

    patterns: dict[str, tuple[int, Pattern]] = {
        "sequential, pool": (1, lambda b: pool.lrange(b[0], -50, -1)),
        "sequential, service's reader (50 ms timeouts)": (
            1,
            lambda b: reader.lrange(b[0], -50, -1),
        ),
        "sequential, single connection": (1, lambda b: single.lrange(b[0], -50, -1)),
        "sequential, bare connection": (1, lambda b: bare(b[0])),
        "32 in flight, pool": (32, lambda b: asyncio.gather(*(pool.lrange(k, -50, -1) for k in b))),
        "pipelined by 32": (32, pipelined),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in patterns}
    for _ in range(reps):
        for name, (size, call) in patterns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(reads // size):
                await call([keys[(i * size + j) % len(keys)] for j in range(size)])
            n = reads // size * size
            runs[name].append(((time.perf_counter() - t0) / n, (time.process_time() - c0) / n))
    await pool.delete(*keys)
    await conn.disconnect()
    await single.aclose()
    await reader.aclose()
    await pool.aclose()
    return {
        name: {
            "wall_us": round(statistics.median(w for w, _ in r) * 1e6, 1),
            "client_cpu_us": round(statistics.median(c for _, c in r) * 1e6, 1),
        }
        for name, r in runs.items()
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    p.add_argument("--reads", type=int, default=3200)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    print(json.dumps(uvloop.run(main(args.redis_url, args.reads, args.reps)), indent=1))
