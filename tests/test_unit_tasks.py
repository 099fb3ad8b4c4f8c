"""cancel_and_wait: a task whose cancel was swallowed (as asyncio.wait_for does on Python 3.11
when the reply lands with the cancel) is cancelled again until it ends."""

from __future__ import annotations

import asyncio

from maze.core.tasks import cancel_and_wait


async def _stubborn(swallow: list[int], seen: list[str]) -> None:
    """Goes on after its first `swallow[0]` cancels, as a loop around a swallowing wait_for does."""
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancel")
            if len(seen) <= swallow[0]:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                continue
            raise


def test_a_swallowed_cancel_is_repeated_until_the_task_ends() -> None:
    async def main() -> tuple[bool, list[str], bool]:
        seen: list[str] = []
        task = asyncio.create_task(_stubborn([2], seen))
        await asyncio.sleep(0)
        ended = await cancel_and_wait([task], timeout=5)
        return ended, seen, task.cancelled()

    ended, seen, cancelled = asyncio.run(main())
    assert ended and cancelled
    assert seen == ["cancel", "cancel", "cancel"]


def test_a_task_that_never_ends_is_reported_at_the_timeout() -> None:
    async def main() -> tuple[bool, bool]:
        swallow = [10**6]
        task = asyncio.create_task(_stubborn(swallow, []))
        await asyncio.sleep(0)
        ended = await cancel_and_wait([task], timeout=0.5)
        done = task.done()
        swallow[0] = 0  # now it may end
        await cancel_and_wait([task], timeout=5)
        return ended, done

    ended, done = asyncio.run(main())
    assert not ended and not done


def test_finished_failed_and_missing_tasks_are_fine() -> None:
    async def boom() -> None:
        raise ValueError("x")

    async def main() -> bool:
        task = asyncio.create_task(boom())
        await asyncio.sleep(0)
        return await cancel_and_wait([task, None])

    assert asyncio.run(main())
