"""Micro-batching: concurrent /recommend requests share one store read (their users' histories, pipelined), one
encoder call and one index search (the job, ``service.recommend.answer_requests``, is run by ``ServiceState``).

No timer: while a batch is answered, new requests queue; when it is done, everything queued (up to
``max_batch``) goes next. At low load a request runs alone with no added wait; under load, per-request Redis, ONNX
and FAISS dispatch costs are shared by the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher"]

In = TypeVar("In")
Out = TypeVar("Out")


class Batcher(Generic[In, Out]):
    """Feeds ``run(batch) -> results`` (one result per item, in order) with the requests that arrive while
    it is busy."""

    def __init__(self, run: Callable[[list[In]], Awaitable[Sequence[Out]]], max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run, self.max_batch = run, max_batch
        self._queue: list[tuple[In, asyncio.Future[Out]]] = []
        self._busy = False

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                try:
                    results = await self.run([item for item, _ in batch])
                except (
                    Exception
                ) as exc:  # every waiting request gets the error, the batcher lives on
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._busy = False
