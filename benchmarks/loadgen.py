"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams (no client library in the measured path).

Two modes, both reporting every request's latency:
- closed loop: ``concurrency`` connections, each sends its next request when the previous answer arrives;
- open loop: requests are scheduled at a fixed ``rate``; latency runs from the scheduled send time, so a server
  that falls behind is charged for the queueing it causes (no coordinated omission).

Run as ``python benchmarks/loadgen.py SPEC.json`` (what ``serve_load.py`` does, pinned to its own core); prints one
JSON object: requests, errors, seconds, rps, p50/p95/p99/max in milliseconds, and the generator's own CPU seconds
(``cpu_s``) and its ceiling (``cpu_rps``: requests per CPU second of the generator; a row whose ``cpu_s`` is close
to ``seconds`` measured the generator, not the server). The event loop is uvloop's where it is installed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import resource
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def _request(host: str, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _closed(
    spec: dict[str, Any], requests: Iterator[bytes]
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + spec["duration"]

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            status = await _exchange(reader, writer, next(requests))
            latencies.append(time.perf_counter() - t0)
            errors += status != 200
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(spec["concurrency"])))
    return latencies, errors, time.perf_counter() - start


async def _open(spec: dict[str, Any], requests: Iterator[bytes]) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    interval = 1.0 / spec["rate"]
    total = int(spec["rate"] * spec["duration"])
    start = time.perf_counter() + 0.05
    slots = iter(range(total))

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
        for i in slots:
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status = await _exchange(reader, writer, next(requests))
            latencies.append(time.perf_counter() - due)
            errors += status != 200
        writer.close()

    await asyncio.gather(*(worker() for _ in range(spec["connections"])))
    return latencies, errors, time.perf_counter() - start


def run(spec: dict[str, Any]) -> dict[str, Any]:
    bodies = [json.dumps(b).encode() for b in spec["bodies"]]
    requests = itertools.cycle([_request(spec["host"], spec["path"], b) for b in bodies])
    mode = _closed if spec["mode"] == "closed" else _open
    cpu0 = _cpu_seconds()
    latencies, errors, seconds = _run_loop(mode(spec, requests))
    cpu = _cpu_seconds() - cpu0
    ms = np.asarray(latencies) * 1e3
    return {
        "requests": len(ms),
        "errors": int(errors),
        "seconds": round(seconds, 3),
        "rps": round(len(ms) / seconds, 1),
        **{f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 95, 99)},
        "max_ms": round(float(ms.max()), 3),
        "cpu_s": round(cpu, 3),
        "cpu_rps": round(len(ms) / max(cpu, 1e-9), 1),
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, on uvloop where it is installed (the loop the service runs on too)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    with Path(sys.argv[1]).open() as f:
        print(json.dumps(run(json.load(f))))
