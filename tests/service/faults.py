"""Fault injection for the service tests and ``benchmarks/faults.py``: a private Redis server that can be stopped,
paused and restarted, a TCP proxy (asyncio, in its own thread) between the service and Redis that can delay replies
or drop connections, and bad artifact versions (a copy of a good one with one fault) to publish."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from core.artifact import sha256_file

Edit = Callable[[Path, dict[str, Any]], None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` on a free port, owned by one test: ``stop`` / ``start`` / ``pause`` / ``resume``.

    ``durable`` runs it with an fsync-always append-only file, so a restart keeps every acknowledged write.
    """

    def __init__(self, directory: Path, durable: bool = False) -> None:
        self.port, self.directory, self.durable = free_port(), directory, durable
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else []
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no"] if not self.durable else persistence
        cmd += ["--dir", str(self.directory)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis(port=self.port, socket_timeout=0.2).ping():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill it (SIGKILL: no goodbye to clients, nothing saved beyond what was fsynced)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung server)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)


class FaultyProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``. ``delay`` (seconds) holds back every reply chunk;
    ``drop()`` closes every open connection; ``refuse`` closes new connections at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.port = target_port, free_port()
        self.delay = 0.0
        self.refuse = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "proxy did not start"

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def drop(self) -> None:
        """Close every connection now (both sides see a reset/EOF)."""
        done = threading.Event()

        def close_all() -> None:
            for w in list(self._writers):
                w.transport.abort()
            done.set()

        self._loop.call_soon_threadsafe(close_all)
        done.wait(5)

    def start_flapping(self, period: float) -> None:
        """Until ``stop_flapping``: every ``period`` seconds drop every connection and toggle ``refuse``."""
        stop = self._flap_stop = threading.Event()

        def flap() -> None:
            while not stop.is_set():
                self.drop()
                self.refuse = not self.refuse
                time.sleep(period)
            self.refuse = False

        self._flapper = threading.Thread(target=flap, daemon=True)
        self._flapper.start()

    def stop_flapping(self) -> None:
        self._flap_stop.set()
        self._flapper.join()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        # let the connections' handlers end and their transports close (a loop closed under them leaves both for
        # the garbage collector, whose warnings land in whichever test runs then)
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, delayed=False),
                self._pipe(up_reader, writer, delayed=True),
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delayed: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(65536):
                if delayed and self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        writer.transport.abort()  # one side ended: end the other


def replace_file(path: Path, data: bytes) -> None:
    """Write a new file in place of ``path`` (which may be a hard link to the served artifact's file)."""
    path.unlink()
    path.write_bytes(data)


def flip(name: str, offset: int, count: int = 16, rehash: bool = False) -> Edit:
    def edit(directory: Path, manifest: dict[str, Any]) -> None:
        data = bytearray((directory / name).read_bytes())
        start = offset % len(data)
        data[start : start + count] = bytes(b ^ 0xFF for b in data[start : start + count])
        replace_file(directory / name, bytes(data))
        if rehash:
            manifest["files"][name] = sha256_file(directory / name)

    return edit


def truncate(name: str) -> Edit:
    def edit(directory: Path, manifest: dict[str, Any]) -> None:
        data = (directory / name).read_bytes()
        replace_file(directory / name, data[: len(data) // 2])
        manifest["files"][name] = sha256_file(directory / name)

    return edit


def wrong_checksum(directory: Path, manifest: dict[str, Any]) -> None:
    manifest["files"]["items.npy"] = "0" * 64


def publish_variant(root: Path, source: Path, version: str, edit: Edit) -> Path:
    """``root/version``: a copy of ``source`` renamed ``version`` with ``edit`` applied to its files and manifest."""
    directory = root / version
    shutil.copytree(source, directory, copy_function=os.link)
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["version"] = version
    edit(directory, manifest)
    replace_file(directory / "manifest.json", json.dumps(manifest, indent=2).encode())
    return directory
