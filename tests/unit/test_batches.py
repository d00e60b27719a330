"""Natural batching of the ledger's first tries (asyncio only, no I/O)."""

from __future__ import annotations

import asyncio

import pytest
from ledger.service_layer.batches import Batches


class Recorder:
    """A ``run`` that records its batches and holds each until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()

    async def run(self, items: list[str]) -> list[str | Exception]:
        self.batches.append(items)
        await self.release.wait()
        return [ValueError(item) if item.startswith("bad") else item.upper() for item in items]


def _key(item: str) -> str | None:
    return item.split(":")[0] if ":" in item else None


async def _settle() -> None:
    """Let the tasks just created (submitters, then the lanes they start) run."""
    for _ in range(2):
        await asyncio.sleep(0)


def test_a_lone_item_runs_at_once_and_later_ones_form_the_next_batch() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batches: Batches[str, str] = Batches(recorder.run, key=_key, lanes=1)
        first = asyncio.create_task(batches.submit("a"))
        await _settle()
        assert recorder.batches == [["a"]]
        rest = [asyncio.create_task(batches.submit(x)) for x in "bcd"]
        await asyncio.sleep(0)
        recorder.release.set()
        assert await first == "A"
        assert [await t for t in rest] == ["B", "C", "D"]
        assert recorder.batches == [["a"], ["b", "c", "d"]]

    asyncio.run(scenario())


def test_items_with_one_key_never_share_a_batch_and_keep_their_order() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batches: Batches[str, str] = Batches(recorder.run, key=_key, lanes=1)
        blocker = asyncio.create_task(batches.submit("x"))
        await asyncio.sleep(0)
        items = ["m1:a", "m2:a", "m1:b", "free", "m1:c", "m2:b"]
        tasks = [asyncio.create_task(batches.submit(item)) for item in items]
        await asyncio.sleep(0)
        recorder.release.set()
        assert [await t for t in tasks] == [item.upper() for item in items]
        await blocker
        assert recorder.batches == [["x"], ["m1:a", "m2:a", "free"], ["m1:b", "m2:b"], ["m1:c"]]

    asyncio.run(scenario())


def test_an_items_exception_reaches_its_submitter_only() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.release.set()
        batches: Batches[str, str] = Batches(recorder.run, key=_key, lanes=1)
        results = await asyncio.gather(
            *(batches.submit(item) for item in ["a", "bad", "c"]), return_exceptions=True
        )
        assert results[0] == "A" and results[2] == "C"
        assert isinstance(results[1], ValueError)

    asyncio.run(scenario())


def test_a_failing_run_fails_its_batch_and_the_next_batch_still_runs() -> None:
    async def scenario() -> None:
        calls: list[list[str]] = []

        async def run(items: list[str]) -> list[str | Exception]:
            calls.append(items)
            await asyncio.sleep(0)
            if len(calls) == 1:
                raise ConnectionError("lost")
            return [item.upper() for item in items]

        batches: Batches[str, str] = Batches(run, key=_key, lanes=1)
        first = asyncio.create_task(batches.submit("a"))
        await asyncio.sleep(0)
        second = asyncio.create_task(batches.submit("b"))
        with pytest.raises(ConnectionError):
            await first
        assert await second == "B"

    asyncio.run(scenario())


def test_lanes_bound_the_batches_in_flight() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batches: Batches[str, str] = Batches(recorder.run, key=_key, lanes=2, max_size=2)
        tasks = []
        for item in "abcdef":
            tasks.append(asyncio.create_task(batches.submit(item)))
            await _settle()
        assert recorder.batches == [["a"], ["b"]]  # two lanes busy, the rest queue
        recorder.release.set()
        assert [await t for t in tasks] == list("ABCDEF")
        assert sorted(len(b) for b in recorder.batches) == [1, 1, 2, 2]

    asyncio.run(scenario())


def test_a_cancelled_submitter_does_not_disturb_the_others() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batches: Batches[str, str] = Batches(recorder.run, key=_key, lanes=1)
        blocker = asyncio.create_task(batches.submit("x"))
        await asyncio.sleep(0)
        gone = asyncio.create_task(batches.submit("gone"))
        kept = asyncio.create_task(batches.submit("kept"))
        await asyncio.sleep(0)
        gone.cancel()
        recorder.release.set()
        assert await kept == "KEPT"
        await blocker
        assert ["gone"] not in recorder.batches and ["kept"] in recorder.batches

    asyncio.run(scenario())


def test_an_item_waits_while_a_batch_with_its_key_is_in_flight() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        batches: Batches[str, str] = Batches(recorder.run, key=_key, lanes=2)
        first = asyncio.create_task(batches.submit("m1:a"))
        await _settle()
        second = asyncio.create_task(batches.submit("m1:b"))  # m1 is in flight: waits
        await _settle()
        other = asyncio.create_task(batches.submit("m2:a"))  # another lane takes it
        await _settle()
        assert recorder.batches == [["m1:a"], ["m2:a"]]
        recorder.release.set()
        assert [await first, await second, await other] == ["M1:A", "M1:B", "M2:A"]
        assert recorder.batches == [["m1:a"], ["m2:a"], ["m1:b"]]

    asyncio.run(scenario())
