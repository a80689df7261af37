"""A bad artifact published while the service answers requests: refused, logged once, counted; the old one serves.

Each bad version is a copy of the served artifact (files hard-linked; a file that changes is replaced, never
written through the link) with one fault: bytes flipped in the ONNX encoder or the FAISS index (the manifest's
checksum then fails), the same files corrupted or truncated with the checksum updated to match (they pass
``core.artifact`` and fail to load), a wrong checksum, an unknown schema, a missing manifest field, a file name
outside the artifact, a pickled ``.npy``. ``CURRENT`` is pointed at each in turn while client threads call
``/recommend`` against the real app on a real port; then at a good version, which the service switches to.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from core.artifact import sha256_file, write_current
from service.app import create_app
from service.runtime import ModelRuntime
from service.settings import Settings
from service.state import ServiceState
from tests.service.conftest import serving
from tests.service.faults import (
    Edit,
    flip,
    publish_variant,
    truncate,
    wrong_checksum,
)

POLL_SECONDS = 0.1


class _Touch:
    """Unpickling this calls ``Path.touch(path)``: a pickle that runs code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return (Path.touch, (self.path,))


def _pickled_items(marker: Path) -> Edit:
    def edit(directory: Path, manifest: dict[str, Any]) -> None:
        (directory / "items.npy").unlink()
        np.save(
            directory / "items.npy", np.array([_Touch(marker)], dtype=object), allow_pickle=True
        )
        manifest["files"]["items.npy"] = sha256_file(directory / "items.npy")

    return edit


def _escape(directory: Path, manifest: dict[str, Any]) -> None:
    """Point the item table at the served version's (true checksum): still refused, it is outside."""
    manifest["items_file"] = "../v1/items.npy"
    manifest["files"]["../v1/items.npy"] = manifest["files"].pop("items.npy")


def _set(**changes: Any) -> Edit:
    def edit(directory: Path, manifest: dict[str, Any]) -> None:
        manifest.update(changes)

    return edit


def _drop(field: str) -> Edit:
    def edit(directory: Path, manifest: dict[str, Any]) -> None:
        del manifest[field]

    return edit


@pytest.fixture
def root(artifact: Path, tmp_path: Path) -> Path:
    """An artifact root of this test alone serving ``v1`` (the shared test artifact, hard-linked)."""
    root = tmp_path / "root"
    root.mkdir()
    publish_variant(root, artifact, "v1", lambda _d, _m: None)
    write_current(root, "v1")
    return root


@pytest.fixture
def server(root: Path, settings: Settings) -> Iterator[str]:
    app = create_app(
        settings.model_copy(update={"artifact": root, "reload_poll_seconds": POLL_SECONDS})
    )
    with serving(app) as port:
        yield f"http://127.0.0.1:{port}"


class ClientLoop:
    """Threads calling /recommend until stopped; every status and model version they saw."""

    def __init__(self, base: str, history: list[str], threads: int = 2) -> None:
        self.base, self.history, self.stop = base, history, threading.Event()
        self.statuses: list[int] = []
        self.versions: set[str] = set()
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.post("/recommend", json={"history": self.history, "k": 5})
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.versions.add(r.json()["model_version"])

    def __enter__(self) -> ClientLoop:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def failed_reloads(client: httpx.Client) -> dict[str, float]:
    """``rec_reloads_total{result="failed"}`` by reason, read from /metrics."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "rec_reloads_total" and sample.labels["result"] == "failed":
                out[sample.labels["reason"]] = sample.value
    return out


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_bad_artifacts_are_refused_while_serving(
    server: str, root: Path, artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "unpickled"
    history = json.loads((artifact / "item_ids.json").read_text())[10:20]
    # (version, fault, reason label, what the log line says)
    faults: list[tuple[str, Edit, str, str]] = [
        ("onnx-flipped", flip("encoder.onnx", 1000), "invalid", "encoder.onnx: sha256"),
        ("faiss-flipped", flip("items.faiss", -1000), "invalid", "items.faiss: sha256"),
        ("onnx-corrupt", flip("encoder.onnx", 0, rehash=True), "unloadable", "INVALID_PROTOBUF"),
        ("faiss-corrupt", flip("items.faiss", 0, 4, rehash=True), "unloadable", "not recognized"),
        ("onnx-truncated", truncate("encoder.onnx"), "unloadable", "INVALID_PROTOBUF"),
        ("faiss-truncated", truncate("items.faiss"), "unloadable", "read error"),
        ("wrong-checksum", wrong_checksum, "invalid", "does not match the manifest's 0000"),
        ("schema-2", _set(schema_version=2), "invalid", "schema_version 2, this build reads 1"),
        ("no-index", _drop("index"), "invalid", "invalid manifest: 1 validation error"),
        ("escape", _escape, "invalid", "'../v1/items.npy' escapes the artifact"),
        ("pickled", _pickled_items(marker), "unloadable", "allow_pickle=False"),
    ]
    with httpx.Client(base_url=server, timeout=30) as c, ClientLoop(server, history) as loop:
        wait_for(lambda: len(loop.statuses) > 0, "the first answer")
        for count, (version, edit, reason, says) in enumerate(faults, start=1):
            publish_variant(root, artifact, version, edit)
            caplog.clear()
            before = sum(failed_reloads(c).values())
            write_current(root, version)
            wait_for(lambda n=before: sum(failed_reloads(c).values()) > n, f"{version} refused")
            assert sum(failed_reloads(c).values()) == before + 1 == count
            lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(lines) == 1, [r.getMessage() for r in lines]
            line = lines[0].getMessage()
            assert lines[0].exc_info is None
            assert "\n" not in line
            assert line.startswith(f"reload of {version} refused ({reason}): "), line
            assert says in line, line
            assert line.endswith("; still serving v1"), line
        assert failed_reloads(c) == {"invalid": 6.0, "unloadable": 5.0}
        # through the admin route: 422, the old version still serving
        bad = c.post("/admin/reload", json={"artifact": str(root / "onnx-corrupt")})
        assert bad.status_code == 422
        assert "still serving the previous model" in bad.text
        # a good version published after them all is served
        publish_variant(root, artifact, "v2", lambda _d, _m: None)
        write_current(root, "v2")
        wait_for(lambda: "v2" in loop.versions, "v2 served")
        served = len(loop.statuses)
        wait_for(lambda: len(loop.statuses) > served + 10, "answers from v2")
    assert loop.errors == []
    assert set(loop.statuses) == {200}
    assert loop.versions == {"v1", "v2"}
    assert not marker.exists(), "the pickled items.npy was unpickled"


def test_the_pickle_in_the_test_is_live(tmp_path: Path) -> None:
    """The pickled .npy above runs code when loaded with allow_pickle=True: its absence of effect means something."""
    marker = tmp_path / "unpickled"
    np.save(tmp_path / "x.npy", np.array([_Touch(marker)], dtype=object), allow_pickle=True)
    np.load(tmp_path / "x.npy", allow_pickle=True)
    assert marker.exists()


def test_the_refusal_names_the_version_refused_when_current_moves_during_the_load(
    root: Path,
    artifact: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``CURRENT`` names ``bad``; while ``bad`` loads, ``v2`` is published and ``bad`` then fails: the log line and
    the poll's memory of the failure are about ``bad``, and ``v2`` is served next."""
    publish_variant(root, artifact, "bad", lambda _d, _m: None)
    publish_variant(root, artifact, "v2", lambda _d, _m: None)
    load = ServiceState._load

    def load_or_fail(self: ServiceState, directory: Path) -> ModelRuntime:
        if directory.name == "bad":
            write_current(root, "v2")
            raise RuntimeError("bad fails to load")
        return load(self, directory)

    monkeypatch.setattr(ServiceState, "_load", load_or_fail)
    app = create_app(
        settings.model_copy(update={"artifact": root, "reload_poll_seconds": POLL_SECONDS})
    )
    with TestClient(app) as c:
        caplog.clear()
        write_current(root, "bad")
        wait_for(lambda: c.get("/readyz").json()["model_version"] == "v2", "v2 served")
        assert failed_reloads(c) == {"invalid": 0.0, "unloadable": 1.0}
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert lines[0].startswith("reload of bad refused (unloadable): RuntimeError: bad fails"), lines
    assert lines[0].endswith("; still serving v1"), lines
