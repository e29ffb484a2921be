"""`hub serve --workers N`: N hub processes on one port, kept running by their parent.

Python runs one core per process, so a hub uses several cores as several
processes. The parent (`run_workers`) starts N copies of the same command as
workers, each told its index in `TRIOHUB_WORKER`. A worker is a whole hub with
its own event loop; every worker listens on the same port with SO_REUSEPORT,
and the kernel hands each new connection to one of them. They share topics
through the Redis backplane (`backplane.redis_url`), which `--workers` above 1
requires.

The parent does no serving. It:

- restarts a worker that dies, after a backoff that doubles from 0.5 s up to
  30 s, back to 0.5 s once a worker has run for a minute;
- gives up, stopping the others, when a worker's first start ends with
  status 2 (its settings or application were refused: every restart would
  fail the same way), and exits 2;
- on SIGINT or SIGTERM passes SIGTERM to every worker, each of which drains
  gracefully (as one `hub serve` does), and exits 0 once all have; a second
  signal kills them at once (SIGKILL) and exits 130.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

import attrs
import trio

from hub.config import WORKER_VARIABLE

__all__ = ["WORKER_ENV", "run_workers", "watch_parent", "worker_index"]

logger = logging.getLogger(__name__)

#: The variable a worker finds its index in (0 to N-1); absent in the parent.
WORKER_ENV: Final = WORKER_VARIABLE

# A worker's restart backoff: from the first delay, doubling, up to the last.
FIRST_RESTART_DELAY: Final = 0.5
MAX_RESTART_DELAY: Final = 30.0
# A worker that ran this long is restarted with the first delay again.
STABLE_SECONDS: Final = 60.0
# A worker whose first start ends with this status (a usage or settings
# error) stops the whole pool: every restart would fail the same way.
EXIT_USAGE: Final = 2

EXIT_INTERRUPTED: Final = 130


async def watch_parent(orphaned: Callable[[], None], *, interval: float = 1.0) -> None:
    """In a worker: call `orphaned()` once the parent is gone (the worker was re-parented).

    A parent killed outright (SIGKILL, out of memory) cannot drain its
    workers; each notices within `interval` and drains itself, so none keeps
    serving on its own. (Not PR_SET_PDEATHSIG: that follows the thread that
    started the worker, and trio starts processes from worker threads.)
    """
    parent = os.getppid()
    while True:
        await trio.sleep(interval)  # a check, not a wait: no event tells of a parent's death
        if os.getppid() != parent:
            orphaned()
            return


def worker_index() -> int | None:
    """This process's index when it is a worker of `hub serve --workers`, else None."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value is not None and value.isdigit() else None


@attrs.define(eq=False)
class _Worker:
    index: int
    process: trio.Process | None = None
    started_at: float = 0.0
    starts: int = 0


@attrs.define(eq=False)
class _Pool:
    command: Sequence[str]
    count: int
    say: Callable[[str], None]
    workers: list[_Worker] = attrs.Factory(list)
    stopping: bool = False
    #: A second signal killed the workers.
    interrupted: bool = False
    #: The status the pool exits with when a worker failed at its first start.
    failed: int | None = None
    _stop: trio.Event = attrs.Factory(trio.Event)

    async def keep_running(self, worker: _Worker) -> None:
        delay = FIRST_RESTART_DELAY
        env = {**os.environ, WORKER_ENV: str(worker.index)}
        while not self._stop.is_set():
            worker.starts += 1
            worker.started_at = trio.current_time()
            worker.process = await trio.lowlevel.open_process(list(self.command), env=env)
            status = await worker.process.wait()
            ran = trio.current_time() - worker.started_at
            if self._stop.is_set():
                return
            if worker.starts == 1 and status == EXIT_USAGE:
                self.say(
                    f"triohub: worker {worker.index} refused its settings (status {status}); "
                    "stopping the other workers"
                )
                self.failed = status
                self.stop()
                return
            if ran >= STABLE_SECONDS:
                delay = FIRST_RESTART_DELAY
            self.say(
                f"triohub: worker {worker.index} (pid {worker.process.pid}) ended "
                f"(status {status}); restarting it in {delay:g} s"
            )
            with trio.move_on_after(delay):
                await self._stop.wait()
            delay = min(delay * 2, MAX_RESTART_DELAY)

    def stop(self) -> None:
        """Ask every worker to drain and end (SIGTERM), and restart none."""
        self.stopping = True
        self._stop.set()
        self._signal_all(signal.SIGTERM)

    def kill(self) -> None:
        self._signal_all(signal.SIGKILL)

    def _signal_all(self, signum: signal.Signals) -> None:
        for worker in self.workers:
            process = worker.process
            if process is not None and process.returncode is None:
                process.send_signal(signum)


async def run_workers(
    argv: Sequence[str], count: int, *, say: Callable[[str], None] = print
) -> int:
    """Run `hub` with `argv` as `count` workers until SIGINT/SIGTERM; return the exit status."""
    command = [sys.executable, "-m", "hub", *argv]
    pool = _Pool(command, count, say, [_Worker(index) for index in range(count)])
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_wait_for_signals, pool, signals)
            say(f"triohub: starting {count} workers (pid {os.getpid()} keeps them running)")
            async with trio.open_nursery() as workers:
                for worker in pool.workers:
                    workers.start_soon(pool.keep_running, worker)
            # Every worker has ended for good: stop listening for signals.
            nursery.cancel_scope.cancel()
    if pool.failed is not None:
        return pool.failed
    if pool.interrupted:
        return EXIT_INTERRUPTED
    say("triohub: every worker has stopped")
    return 0


async def _wait_for_signals(pool: _Pool, signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        if pool.stopping:
            pool.say("triohub: interrupted again: killing the workers")
            pool.interrupted = True
            pool.kill()
            return
        pool.say(f"triohub: {signal.Signals(signum).name}, stopping {pool.count} workers")
        pool.stop()
