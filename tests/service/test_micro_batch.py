"""/recommend calls that arrive together form one micro-batch: their stored histories are read in one pipelined store
call, each call still gets its own user's answer, a store fault degrades every call of the batch that reads a
stored history (never an error), and one call's own 422 stays its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from service.errors import RequestError, StoreUnavailableError
from service.metrics import ServiceMetrics
from service.schemas import RecommendRequest, RecommendResponse, ScoreRequest
from service.settings import Settings
from service.state import ServiceState
from service.store import Event, MemoryStore


class RecordingStore(MemoryStore):
    """Records every batched history read; with ``fail`` set, every history read fails as Redis would."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[list[str]] = []
        self.fail = False

    async def read_histories(self, user_ids: Sequence[str], n: int) -> list[list[str]]:
        self.reads.append(list(user_ids))
        await asyncio.sleep(0.001)  # a round trip: the event loop runs meanwhile
        if self.fail:
            raise StoreUnavailableError("store unavailable (read histories): down", "unavailable")
        return await super().read_histories(user_ids, n)


def _state(artifact_root: Path, store: RecordingStore) -> ServiceState:
    settings = Settings(artifact=artifact_root, cold_sync_seconds=0)
    return ServiceState(settings, store, ServiceMetrics(CollectorRegistry()))


def _ids(artifact: Path) -> list[str]:
    return json.loads((artifact / "item_ids.json").read_text())  # type: ignore[no-any-return]


async def _all(state: ServiceState, bodies: list[dict[str, Any]]) -> list[Any]:
    calls = [state.recommend(RecommendRequest.model_validate(b)) for b in bodies]
    return await asyncio.gather(*calls, return_exceptions=True)


def _items(answer: RecommendResponse) -> list[str]:
    return [i.item_id for i in answer.items]


def test_a_micro_batch_reads_all_its_users_at_once_and_each_gets_its_own_answer(
    artifact_root: Path, artifact: Path
) -> None:
    ids = _ids(artifact)
    histories = {f"u{u}": ids[10 * u : 10 * u + 6] for u in range(8)}

    async def main() -> None:
        store = RecordingStore()
        events = [Event(u, i) for u, h in histories.items() for i in h]
        await store.append_events(events, keep=50)
        state = _state(artifact_root, store)
        await state.reload(artifact_root)
        by_user = await _all(state, [{"user_id": u, "k": 5} for u in histories])
        assert store.reads == [list(histories)]  # one read for the whole micro-batch
        inline = await _all(state, [{"history": h, "k": 5} for h in histories.values()])
        assert [_items(a) for a in by_user] == [_items(a) for a in inline]
        assert all(a.source == "model" and not a.degraded for a in by_user)
        assert len({tuple(_items(a)) for a in by_user}) > 1  # the users' answers differ
        await state.close()

    asyncio.run(main())


def test_a_store_fault_degrades_every_stored_history_call_of_the_batch(
    artifact_root: Path, artifact: Path
) -> None:
    ids = _ids(artifact)

    async def main() -> None:
        store = RecordingStore()
        await store.append_events([Event(f"u{u}", ids[u]) for u in range(6)], keep=50)
        state = _state(artifact_root, store)
        await state.reload(artifact_root)
        store.fail = True
        bodies: list[dict[str, Any]] = [{"user_id": f"u{u}", "k": 4} for u in range(6)]
        bodies.insert(3, {"history": ids[:5], "k": 4})
        answers = await _all(state, bodies)
        assert len(store.reads) == 1
        for body, answer in zip(bodies, answers, strict=True):
            assert isinstance(answer, RecommendResponse), answer
            assert len(answer.items) == 4
            stored = "user_id" in body
            assert answer.degraded is stored
            assert answer.source == ("popular" if stored else "model")
        sample = state.metrics.degraded.labels("/recommend", "unavailable")
        assert sample._value.get() == 6  # one per degraded answer
        store.fail = False  # and it recovers by itself
        (again,) = await _all(state, [{"user_id": "u0", "k": 4}])
        assert again.source == "model"
        assert not again.degraded
        await state.close()

    asyncio.run(main())


def test_one_calls_own_error_stays_its_own(artifact_root: Path, artifact: Path) -> None:
    ids = _ids(artifact)

    async def main() -> None:
        state = _state(artifact_root, RecordingStore())
        await state.reload(artifact_root)
        bodies: list[dict[str, Any]] = [{"history": ids[u : u + 3], "k": 3} for u in range(4)]
        bodies[1]["filter"] = {"no_such_field": 1}
        answers = await _all(state, bodies)
        assert isinstance(answers[1], RequestError)
        assert answers[1].status == 422
        assert "no_such_field" in answers[1].detail
        for i in (0, 2, 3):
            assert isinstance(answers[i], RecommendResponse)
            assert answers[i].source == "model"
        await state.close()

    asyncio.run(main())


@pytest.mark.parametrize("max_micro_batch", [1, 3])
def test_micro_batches_hold_at_most_max_micro_batch_calls(
    artifact_root: Path, artifact: Path, max_micro_batch: int
) -> None:
    ids = _ids(artifact)

    async def main() -> None:
        store = RecordingStore()
        await store.append_events([Event(f"u{u}", ids[u]) for u in range(7)], keep=50)
        settings = Settings(
            artifact=artifact_root, cold_sync_seconds=0, max_micro_batch=max_micro_batch
        )
        state = ServiceState(settings, store, ServiceMetrics(CollectorRegistry()))
        await state.reload(artifact_root)
        answers = await _all(state, [{"user_id": f"u{u}", "k": 2} for u in range(7)])
        assert all(isinstance(a, RecommendResponse) and a.source == "model" for a in answers)
        assert [u for read in store.reads for u in read] == [f"u{u}" for u in range(7)]
        assert max(len(read) for read in store.reads) == max_micro_batch
        await state.close()

    asyncio.run(main())


def test_a_score_call_reads_all_its_stored_histories_at_once(
    artifact_root: Path, artifact: Path
) -> None:
    """/score with several requests by user_id: one store read for the call, the same scores as the inline
    histories; a store fault leaves those requests to the popularity fallback, counted once each."""
    ids = _ids(artifact)
    histories = {f"u{u}": ids[10 * u : 10 * u + 6] for u in range(4)}
    candidates = ids[100:120]

    async def main() -> None:
        store = RecordingStore()
        await store.append_events([Event(u, i) for u, h in histories.items() for i in h], keep=50)
        state = _state(artifact_root, store)
        await state.reload(artifact_root)
        by_user = [{"user_id": u, "item_ids": candidates} for u in histories]
        inline = [{"history": h, "item_ids": candidates} for h in histories.values()]
        got = await state.score(ScoreRequest.model_validate({"requests": [*by_user, inline[0]]}))
        assert store.reads == [list(histories)]
        want = await state.score(ScoreRequest.model_validate({"requests": inline}))
        assert [r.scores for r in got.results[:4]] == [r.scores for r in want.results]
        assert {r.source for r in got.results} == {"model"}
        assert not got.degraded
        store.fail = True
        faulted = await state.score(
            ScoreRequest.model_validate({"requests": [*by_user, inline[0]]})
        )
        assert faulted.degraded
        assert [r.source for r in faulted.results] == ["popular"] * 4 + ["model"]
        assert faulted.results[4].scores == want.results[0].scores
        assert state.metrics.degraded.labels("/score", "unavailable")._value.get() == 4
        await state.close()

    asyncio.run(main())
