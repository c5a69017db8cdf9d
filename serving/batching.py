"""Dynamic batching: requests wait in a bounded queue; one worker takes the first, then
whatever else arrives within `max_wait` seconds (up to `max_batch`), answers them in one
call on its own thread (the engine is not thread-safe, and the event loop stays free to
take requests meanwhile), and hands each request its answer. A full queue refuses at once
(`QueueFull`): the server answers 429 rather than letting latency grow without bound."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class QueueFull(Exception):
    """The batcher's queue holds `max_queue` requests already."""


@dataclass
class Batcher(Generic[In, Out]):
    answer: Callable[[Sequence[In]], list[Out]]  # a batch in, one answer each, in order
    max_batch: int = 16
    max_wait: float = 0.01  # seconds the first request of a batch waits for company
    max_queue: int = 64
    batches: list[int] = field(default_factory=list)  # each batch's size, for the curious
    _queue: asyncio.Queue[tuple[In, asyncio.Future[Out]]] | None = None
    _worker: asyncio.Task[None] | None = None
    _executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher")
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, request: In) -> Out:
        """The request's answer, once its batch has run; QueueFull when there is no room."""
        if self._queue is None:
            raise RuntimeError("the batcher has not started")
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((request, future))
        except asyncio.QueueFull:
            raise QueueFull(f"{self.max_queue} requests are waiting already") from None
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                if not self._queue.empty():  # already waiting: taken without waiting
                    batch.append(self._queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
            await self._answer(loop, batch)

    async def _answer(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[In, asyncio.Future[Out]]]
    ) -> None:
        self.batches.append(len(batch))
        try:
            answers = await loop.run_in_executor(
                self._executor, self.answer, [request for request, _ in batch]
            )
        except Exception as error:  # the batch failed: each of its requests hears why
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():  # a client that went away cancelled its future
                future.set_result(answer)
