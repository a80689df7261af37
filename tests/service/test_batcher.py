"""Micro-batching: requests that arrive while a batch runs are served together, in order, errors shared."""

from __future__ import annotations

import asyncio

import pytest

from service.batcher import Batcher


def test_concurrent_requests_share_batches_and_keep_their_own_results() -> None:
    seen: list[list[int]] = []

    async def run(batch: list[int]) -> list[int]:
        seen.append(list(batch))
        await asyncio.sleep(0.01)
        return [x * 10 for x in batch]

    async def main() -> list[int]:
        batcher: Batcher[int, int] = Batcher(run, max_batch=4)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.001)  # the first batch is running now
        rest = await asyncio.gather(*(batcher.submit(i) for i in range(1, 10)))
        return [await first, *rest]

    assert asyncio.run(main()) == [i * 10 for i in range(10)]
    assert seen[0] == [0]  # the first request does not wait for company
    assert [len(b) for b in seen[1:]] == [4, 4, 1]
    assert sorted(x for b in seen for x in b) == list(range(10))


def test_an_error_reaches_every_request_of_its_batch_and_the_batcher_recovers() -> None:
    async def run(batch: list[int]) -> list[int]:
        await asyncio.sleep(0.005)
        if 3 in batch:
            raise ValueError("bad item 3")
        return batch

    async def main() -> tuple[list[object], int]:
        batcher: Batcher[int, int] = Batcher(run, max_batch=8)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.001)
        rest = await asyncio.gather(
            *(batcher.submit(i) for i in range(1, 5)), return_exceptions=True
        )
        results = [await first, *rest]
        return results, await batcher.submit(42)

    results, after = asyncio.run(main())
    assert results[0] == 0
    assert all(isinstance(r, ValueError) for r in results[1:])
    assert after == 42


def test_max_batch_must_be_positive() -> None:
    async def run(batch: list[int]) -> list[int]:
        return batch

    with pytest.raises(ValueError, match="max_batch"):
        Batcher(run, max_batch=0)
