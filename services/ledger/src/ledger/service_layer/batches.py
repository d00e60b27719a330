"""Natural batching: the commands that arrive while a batch is at the database form the
next one (group commit, as TigerBeetle and PostgreSQL's own WAL do it).

A lone command runs at once, in a batch of one; under load each batch takes everything
that queued meanwhile, so the round trips and commits per command fall as load rises,
without a timer that would add latency when the service is idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batches(Generic[T, R]):
    """Runs submitted items through ``run`` in batches, ``lanes`` batches at a time.

    ``run`` answers each item of its batch with a result or the exception to raise to
    that item's submitter. Items with the same ``key`` (not None) never share a batch,
    and one waits while a batch with its key is in flight: it would only lose to it.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[R | Exception]]],
        *,
        key: Callable[[T], Hashable | None],
        lanes: int = 2,
        max_size: int = 64,
    ) -> None:
        self._run, self._key = run, key
        self._lanes, self._max_size = lanes, max_size
        self._busy = 0
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._keys_in_flight: set[Hashable] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._busy < self._lanes:
            self._busy += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    def _take(self) -> tuple[list[tuple[T, asyncio.Future[R]]], set[Hashable]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        rest: list[tuple[T, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        for entry in self._queue:
            key = self._key(entry[0])
            if entry[1].done():  # its submitter was cancelled before it ran
                continue
            if len(batch) < self._max_size and (
                key is None or (key not in keys and key not in self._keys_in_flight)
            ):
                batch.append(entry)
                if key is not None:
                    keys.add(key)
            else:
                rest.append(entry)
        self._queue = rest
        self._keys_in_flight |= keys
        return batch, keys

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, keys = self._take()
                if not batch:  # what is left waits for a batch in flight in another lane,
                    break  # which takes it when it is done
                try:
                    results = await self._run([item for item, _ in batch])
                except Exception as exc:
                    results = [exc] * len(batch)
                except BaseException:
                    for _, future in batch:
                        future.cancel()
                    raise
                finally:
                    self._keys_in_flight -= keys
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._busy -= 1
