"""The hub gives memory back after a mass leave: when `Trimmer` trims, and that a hub does.

On trio's autojump clock: the delays are the hub's seconds, not the test's.
The trims themselves are real (glibc's `malloc_trim`; skipped on another
C library, where the trimmer never trims).
"""

from __future__ import annotations

import re

import pytest
import trio

from hub import EchoService, Hub, HubConfig
from hub.allocator import can_trim
from hub.backplane import LocalBackplane
from hub.testing import open_test_hub
from hub.trimmer import Trimmer

needs_glibc = pytest.mark.skipif(not can_trim(), reason="trims only on glibc")


class Trims:
    """A trimmer's `on_trim`: when each trim came (trio's clock), and a way to wait for one."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.freed: list[int] = []
        self.seconds: list[float] = []
        self._came = trio.Event()

    def __call__(self, freed: int, seconds: float) -> None:
        assert freed >= 0 and seconds >= 0
        self.at.append(trio.current_time())
        self.freed.append(freed)
        self.seconds.append(seconds)
        self._came.set()
        self._came = trio.Event()

    async def next(self) -> float:
        await self._came.wait()
        return self.at[-1]


async def _serving(
    nursery: trio.Nursery, after_closes: int, delay: float = 10.0
) -> tuple[Trimmer, Trims, float]:
    """A trimmer serving in `nursery`, what it trims, and trio's time when it started."""
    trims = Trims()
    trimmer = Trimmer(after_closes=after_closes, delay=delay, on_trim=trims)
    await nursery.start(trimmer.serve)
    return trimmer, trims, trio.current_time()


async def _close(trimmer: Trimmer, count: int) -> None:
    for _ in range(count):
        trimmer.closed()
    await trio.testing.wait_all_tasks_blocked()


@needs_glibc
async def test_it_trims_a_delay_after_enough_closes_and_not_before(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    trimmer, trims, start = await _serving(nursery, after_closes=3)
    await _close(trimmer, 2)
    await trio.sleep(100)
    assert trims.at == []  # two closes are not enough, however long
    await _close(trimmer, 1)
    assert await trims.next() == pytest.approx(start + 110)
    assert trimmer.trims == 1 and trimmer.closes == 0
    # Counted from zero again.
    await _close(trimmer, 2)
    await trio.sleep(100)
    assert trimmer.trims == 1


@needs_glibc
async def test_each_close_puts_the_trim_off_until_the_closes_pause(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    trimmer, trims, start = await _serving(nursery, after_closes=1)
    await _close(trimmer, 1)
    for _ in range(3):
        await trio.sleep(8)
        await _close(trimmer, 1)
    assert trims.at == []
    # The last close came 24 s in: the trim 10 s after it.
    assert await trims.next() == pytest.approx(start + 34)


@needs_glibc
async def test_a_churn_that_never_pauses_is_trimmed_after_six_delays(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    trimmer, trims, start = await _serving(nursery, after_closes=1)

    async def churn() -> None:  # a close every 0.7 s (none at the same time as a trim)
        while True:
            trimmer.closed()
            await trio.sleep(0.7)

    nursery.start_soon(churn)
    assert await trims.next() == pytest.approx(start + 60)
    # The first close after it (86 x 0.7 s in) starts the count again.
    assert await trims.next() == pytest.approx(start + 60.2 + 60)
    nursery.cancel_scope.cancel()


async def test_with_after_closes_zero_it_never_trims(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    trimmer, trims, _ = await _serving(nursery, after_closes=0, delay=1.0)
    assert not trimmer.enabled
    await _close(trimmer, 1000)
    await trio.sleep(1000)
    assert trims.at == [] and trimmer.trims == 0


@needs_glibc
async def test_a_hub_trims_once_its_clients_have_left_and_counts_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = Hub("trimmed")
    app.route("echo:*", EchoService)
    config = HubConfig.from_settings(
        {"server": {"trim_after_closes": 5, "trim_delay_seconds": 30}, "admin": {"metrics": True}}
    )
    async with open_test_hub(app, config) as hub:
        runtime = hub.runtime
        trims = Trims()
        counted = runtime.trimmer.on_trim
        assert counted is not None  # the metrics'

        def heard(freed: int, seconds: float) -> None:
            counted(freed, seconds)
            trims(freed, seconds)

        runtime.trimmer.on_trim = heard
        for index in range(5):
            async with hub.connect() as member:
                await member.join(f"echo:{index}")
        left = trio.current_time()
        assert runtime.trimmer.trims == 0
        assert await trims.next() == pytest.approx(left + 30, abs=1)
        assert runtime.trimmer.trims == 1
        metrics = runtime.metrics.render().decode()
        assert "triohub_memory_trims_total 1.0" in metrics
        assert _counted(metrics, "triohub_memory_trimmed_bytes_total") == trims.freed[0]
        assert _counted(metrics, "triohub_memory_trim_seconds_total") == trims.seconds[0] > 0


def _counted(metrics: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE)
    assert found is not None, metrics
    return float(found.group(1))


@needs_glibc
async def test_a_hub_trims_once_the_topics_its_clients_had_alone_have_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # What a topic holds is freed when it stops, `topics.empty_grace_seconds`
    # after its last member left: a trim before then cannot give it back, and
    # the next comes only after as many closes again.
    app = Hub("trimmed")
    app.route("echo:*", EchoService)
    config = HubConfig.from_settings({"server": {"trim_after_closes": 5}})  # default delays
    async with open_test_hub(app, config) as hub:
        runtime = hub.runtime
        trims = Trims()
        live_topics: list[int] = []

        def heard(freed: int, seconds: float) -> None:
            live_topics.append(runtime.topics.count())
            trims(freed, seconds)

        runtime.trimmer.on_trim = heard
        for index in range(5):
            async with hub.connect() as member:
                await member.join(f"echo:alone-{index}")
        await trims.next()
        assert live_topics == [0]


@needs_glibc
async def test_a_hub_trims_again_once_the_histories_of_its_clients_topics_are_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A stopped topic's history is kept `topics.history_retention_seconds`
    # (for a client that comes back to recover); once dropped, what it held
    # counts toward a trim as a departed client does.
    app = Hub("trimmed")
    app.route("echo:*", EchoService)
    config = HubConfig.from_settings(
        {"server": {"trim_after_closes": 5}, "topics": {"history_retention_seconds": 120}}
    )
    async with open_test_hub(app, config) as hub:
        runtime = hub.runtime
        trims = Trims()
        runtime.trimmer.on_trim = trims
        for index in range(5):
            async with hub.connect() as member:
                await member.join(f"echo:kept-{index}")
        left = trio.current_time()
        with trio.fail_after(1000):
            # The closes: 15 s (server.trim_delay_seconds) after the last.
            assert await trims.next() == pytest.approx(left + 15, abs=1)
            # The topics stop 10 s after their member left, their histories
            # are dropped 120 s later, and a trim comes 15 s after that.
            assert await trims.next() == pytest.approx(left + 10 + 120 + 15, abs=1)
        assert runtime.trimmer.trims == 2
        assert isinstance(runtime.backplane, LocalBackplane)
        assert runtime.backplane.topics_kept == 0
