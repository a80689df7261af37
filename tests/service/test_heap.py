"""The service freezes its heap after a model loads, and a retired model is still freed after a reload."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service import state as state_module
from service.metrics import ServiceMetrics
from service.settings import Settings
from service.state import ServiceState
from service.store import MemoryStore


@pytest.fixture
def unfreeze_after() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session keeps a normal collector


@pytest.mark.usefixtures("unfreeze_after")
def test_reload_freezes_the_heap_and_frees_the_retired_runtime(
    artifact_root: Path, artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_module, "RETIRE_AFTER_SECONDS", 0.0)

    async def scenario() -> tuple[int, bool, bool]:
        settings = Settings(artifact=artifact_root, cold_sync_seconds=0, reload_poll_seconds=0)
        service = ServiceState(settings, MemoryStore(), ServiceMetrics(CollectorRegistry()))
        gc.unfreeze()
        await service.reload(artifact)
        frozen = gc.get_freeze_count()
        assert service.runtime is not None
        first = weakref.ref(service.runtime)
        await service.reload(artifact)  # same files, a new runtime
        alive_right_after = first() is not None  # kept for requests still in flight
        for _ in range(10):  # the retire timer, then the settle it schedules
            await asyncio.sleep(0.01)
        freed = first() is None
        await service.close()
        return frozen, alive_right_after, freed

    frozen, alive_right_after, freed = asyncio.run(scenario())
    assert frozen > 1_000  # the model's objects and the imported modules
    assert alive_right_after
    assert freed  # unfreeze + collect before freezing again: no runtime is frozen for ever


def test_freeze_heap_off_leaves_the_collector_alone(artifact_root: Path, artifact: Path) -> None:
    async def scenario() -> int:
        settings = Settings(
            artifact=artifact_root, cold_sync_seconds=0, reload_poll_seconds=0, freeze_heap=False
        )
        service = ServiceState(settings, MemoryStore(), ServiceMetrics(CollectorRegistry()))
        gc.unfreeze()
        await service.reload(artifact)
        await service.close()
        return gc.get_freeze_count()

    assert asyncio.run(scenario()) == 0
