"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams (no client library in the measured path).

Two modes, both reporting every request's latency:
- closed loop: ``concurrency`` connections, each sends its next request when the previous answer arrives;
- open loop: requests are scheduled at a fixed ``rate``; latency runs from the scheduled send time, so a server
  that falls behind is charged for the queueing it causes (no coordinated omission).

The spec names one ``path`` and its ``bodies``, or a mix of ``requests`` (each ``{"path", "body"}``), cycled in
order. Every answer is counted by status code, by path, and as degraded when its body says ``"degraded": true``; a
503 is also counted when it carries ``Retry-After``. A connection that fails or closes is counted in
``connection_errors`` and opened again; ``unanswered`` counts those of them where the request had been written
to an open connection (not a connection refused). With ``window`` (seconds) the same counts and percentiles are
also given per window of the run (``windows``), for a timeline. In open loop, ``max_lag`` (seconds) drops the
slots the run has fallen that far behind on (counted in ``not_sent``), so an overloaded run still ends on time.

Run as ``python benchmarks/loadgen.py SPEC.json`` (what ``serve_load.py`` does, pinned to its own core); prints one
JSON object: requests, errors (answers other than 200, plus connection errors), seconds, rps, p50/p95/p99/max in
milliseconds, ``status``, ``degraded``, ``retry_after_503``, ``by_path``, ``connection_errors``, and the generator's
own CPU seconds (``cpu_s``) and its ceiling (``cpu_rps``: requests per CPU second of the generator; a row whose
``cpu_s`` is close to ``seconds`` measured the generator, not the server). The event loop is uvloop's where it is
installed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
DEGRADED = b'"degraded":true'
Request = tuple[str, bytes]  # path, the bytes to send


def _request(host: str, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Answer:
    path: str
    status: int
    degraded: bool
    retry_after: bool
    sent: float  # seconds since the run started (the scheduled time in open loop)
    latency: float


@dataclass
class Tally:
    answers: list[Answer] = field(default_factory=list)
    connection_errors: int = 0
    unanswered: int = 0  # of which the request had been sent on an open connection
    not_sent: int = (
        0  # open loop with ``max_lag``: slots dropped because the run fell that far behind
    )


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes
) -> tuple[int, bool, bytes, bool]:
    """Send one request; the answer's status, whether it has Retry-After, its body, and whether the server closes
    the connection after it (``Connection: close``)."""
    writer.write(req)
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("connection closed before the answer")
    status = int(line.split()[1])
    length, retry_after, close = 0, False, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"content-length":
            length = int(value)
        retry_after |= name == b"retry-after"
        close |= name == b"connection" and value.strip().lower() == b"close"
    return status, retry_after, await reader.readexactly(length), close


class Connection:
    """One keep-alive connection that reopens after a failure; each request's answer goes to the tally."""

    def __init__(self, spec: dict[str, Any], tally: Tally, origin: float) -> None:
        self.spec, self.tally, self.origin = spec, tally, origin
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, request: Request, t0: float) -> None:
        path, req, sent = request[0], request[1], False
        if self.streams is not None and self.streams[0].at_eof():
            self.close()  # the server closed this idle connection (a shutdown): not a request lost
        try:
            if self.streams is None:
                self.streams = await asyncio.open_connection(self.spec["host"], self.spec["port"])
            sent = True
            status, retry_after, body, close = await _exchange(*self.streams, req)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.tally.connection_errors += 1
            self.tally.unanswered += sent
            self.close()
            await asyncio.sleep(0.01)
            return
        if close:
            self.close()
        degraded = DEGRADED in body.replace(b" ", b"")
        latency = time.perf_counter() - t0
        answer = Answer(path, status, degraded, retry_after, t0 - self.origin, latency)
        self.tally.answers.append(answer)

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _closed(spec: dict[str, Any], requests: Iterator[Request]) -> tuple[Tally, float]:
    tally, start = Tally(), time.perf_counter()
    stop = start + spec["duration"]

    async def worker() -> None:
        conn = Connection(spec, tally, start)
        while time.perf_counter() < stop:
            await conn.send(next(requests), time.perf_counter())
        conn.close()

    await asyncio.gather(*(worker() for _ in range(spec["concurrency"])))
    return tally, time.perf_counter() - start


async def _open(spec: dict[str, Any], requests: Iterator[Request]) -> tuple[Tally, float]:
    tally, interval = Tally(), 1.0 / spec["rate"]
    total = int(spec["rate"] * spec["duration"])
    start = time.perf_counter() + 0.05
    slots = iter(range(total))
    max_lag = spec.get("max_lag", float("inf"))

    async def worker() -> None:
        conn = Connection(spec, tally, start)
        for i in slots:
            due = start + i * interval
            delay = due - time.perf_counter()
            if (
                -delay > max_lag
            ):  # too far behind: the slot is dropped and counted, the run ends on time
                tally.not_sent += 1
                continue
            if delay > 0:
                await asyncio.sleep(delay)
            await conn.send(next(requests), due)
        conn.close()

    await asyncio.gather(*(worker() for _ in range(spec["connections"])))
    return tally, time.perf_counter() - start


def summarize(
    answers: list[Answer], seconds: float, connection_errors: int = 0, unanswered: int = 0
) -> dict[str, Any]:
    """Counts and latency percentiles (ms) of ``answers``."""
    ms = np.asarray([a.latency for a in answers]) * 1e3
    status = Counter(str(a.status) for a in answers)
    by_path: dict[str, dict[str, Any]] = {}
    for a in answers:
        row = by_path.setdefault(a.path, {"status": Counter(), "degraded": 0, "ms": []})
        row["status"][str(a.status)] += 1
        row["degraded"] += a.degraded
        row["ms"].append(a.latency * 1e3)
    for row in by_path.values():
        path_ms = row.pop("ms")
        row.update({f"p{q}_ms": round(float(np.percentile(path_ms, q)), 3) for q in (50, 99)})
    quantiles = {
        f"p{q}_ms": round(float(np.percentile(ms, q)), 3) if len(ms) else None for q in (50, 95, 99)
    }
    return {
        "requests": len(answers),
        "errors": sum(a.status != 200 for a in answers) + connection_errors,
        "seconds": round(seconds, 3),
        "rps": round(len(answers) / seconds, 1) if seconds > 0 else 0.0,
        **quantiles,
        "max_ms": round(float(ms.max()), 3) if len(ms) else None,
        "status": dict(sorted(status.items())),
        "degraded": sum(a.degraded for a in answers),
        "retry_after_503": sum(a.retry_after and a.status == 503 for a in answers),
        "by_path": {
            p: {**r, "status": dict(sorted(r["status"].items()))} for p, r in by_path.items()
        },
        "connection_errors": connection_errors,
        "unanswered": unanswered,
    }


def _windows(answers: list[Answer], window: float, duration: float) -> list[dict[str, Any]]:
    out = []
    for k in range(
        int(np.ceil(duration / window - 1e-9))
    ):  # the run's planned length, not its overrun
        inside = [a for a in answers if k * window <= a.sent < (k + 1) * window]
        row = summarize(inside, window)
        del row["by_path"], row["seconds"], row["connection_errors"], row["unanswered"]
        out.append({"start_s": round(k * window, 3), **row})
    return out


def _requests(spec: dict[str, Any]) -> list[Request]:
    host = spec["host"]
    if "requests" in spec:
        pairs = [(r["path"], r["body"]) for r in spec["requests"]]
    else:
        pairs = [(spec["path"], b) for b in spec["bodies"]]
    return [(path, _request(host, path, json.dumps(body).encode())) for path, body in pairs]


def run(spec: dict[str, Any]) -> dict[str, Any]:
    requests = itertools.cycle(_requests(spec))
    mode = _closed if spec["mode"] == "closed" else _open
    cpu0 = _cpu_seconds()
    tally, seconds = _run_loop(mode(spec, requests))
    cpu = _cpu_seconds() - cpu0
    out = summarize(tally.answers, seconds, tally.connection_errors, tally.unanswered)
    out["cpu_s"], out["cpu_rps"] = round(cpu, 3), round(out["requests"] / max(cpu, 1e-9), 1)
    if spec["mode"] == "open":
        out["offered_rps"], out["not_sent"] = spec["rate"], tally.not_sent
    if spec.get("window"):
        out["windows"] = _windows(tally.answers, spec["window"], spec["duration"])
    return out


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
