"""The load generator counts what the fault benchmark reports: status codes, degraded answers, 503s with
Retry-After, per path and per window, and reconnects after a ``Connection: close`` or a refused connection."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from benchmarks.loadgen import run
from tests.service.faults import free_port

ANSWERS = {
    "/ok": b'HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n{"degraded":false}',
    "/degraded": b'HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n{"degraded": true}',
    "/events": b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 2\r\n\r\n{}",
    "/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
}


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        path, length = line.split()[1].decode(), 0
        while (header := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        writer.write(ANSWERS[path])
        await writer.drain()
        if path == "/close":
            break
    writer.close()


@pytest.fixture
def port() -> Iterator[int]:
    port, loop, ready = free_port(), asyncio.new_event_loop(), threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(_handle, "127.0.0.1", port))
        ready.set()
        loop.run_forever()
        server.close()
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_answers_are_counted_by_status_path_and_degraded(port: int) -> None:
    mix = [{"path": p, "body": {"n": i}} for i, p in enumerate(ANSWERS)]
    spec = {"host": "127.0.0.1", "port": port, "duration": 0.5, "mode": "open", "rate": 200}
    out = run({**spec, "connections": 4, "requests": mix, "window": 0.25})
    paths = out["by_path"]
    assert out["requests"] == sum(out["status"].values()) == 100
    assert out["status"] == {"200": 75, "503": 25}
    assert out["retry_after_503"] == paths["/events"]["status"]["503"] == 25
    assert out["degraded"] == paths["/degraded"]["degraded"] == 25
    assert paths["/ok"]["degraded"] == paths["/close"]["degraded"] == 0
    assert (
        out["connection_errors"] == 0
    )  # Connection: close is honoured, not mistaken for a failure
    assert out["errors"] == 25
    assert [w["start_s"] for w in out["windows"]][:2] == [0.0, 0.25]
    assert sum(w["requests"] for w in out["windows"]) == 100


def test_a_refused_connection_is_counted_and_retried() -> None:
    spec = {"host": "127.0.0.1", "port": free_port(), "duration": 0.2, "mode": "closed"}
    out = run({**spec, "concurrency": 2, "path": "/ok", "bodies": [{}]})
    assert out["requests"] == 0
    assert out["connection_errors"] > 2
    assert out["unanswered"] == 0  # refused: nothing was sent
    assert out["p99_ms"] is None
