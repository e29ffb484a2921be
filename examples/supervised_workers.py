"""A supervised tree in which one worker crashes and is restarted while the others keep going.

    .venv/bin/python examples/supervised_workers.py

Three workers count ticks under a one_for_one supervisor. The "flaky" worker
crashes on every third tick; the supervisor restarts it (within a budget of
5 restarts in 10 s) while "steady" and "slow" carry on with their counts
untouched. Each crash is logged once by the supervisor, with its traceback,
on stderr. After a few seconds the system shuts down in reverse start order.
"""

from __future__ import annotations

try:
    import trio

    import actors
except ModuleNotFoundError as missing:  # a Python without triohub, such as the system's
    raise SystemExit(
        f"{missing}: run this with .venv/bin/python (./scripts/demo creates .venv), "
        "or activate .venv first"
    ) from None

RUN_SECONDS = 3.5
TICK_SECONDS = 0.25


class Ticker(actors.Actor):
    """Counts ticks sent by the clock; crashes on every `crash_every`-th if set."""

    def __init__(self, name: str, crash_every: int | None = None) -> None:
        self.name = name
        self.crash_every = crash_every
        self.ticks = 0

    async def started(self) -> None:
        print(f"  started  {self.name:7s} as {self.ref.name}")
        self.ctx.join("tickers")

    async def handle(self, message: object) -> None:
        self.ticks += 1
        if self.crash_every and self.ticks % self.crash_every == 0:
            raise RuntimeError(f"{self.name} tripped on tick {self.ticks}")
        print(f"  tick     {self.name:7s} count={self.ticks}")

    async def stopped(self, reason: actors.ExitReason) -> None:
        print(f"  stopped  {self.name:7s} ({reason})")


async def clock(ctx: actors.Context) -> None:
    """Send a tick to every member of the "tickers" group, forever."""
    ctx.ready()
    while True:
        await trio.sleep(TICK_SECONDS)
        for ref in ctx.system.registry.members("tickers"):
            ref.cast("tick")


async def main() -> None:
    async with actors.open_system("example") as system:
        print("starting a one_for_one supervisor with three workers and a clock")
        supervisor = await system.start_supervisor(
            [
                actors.ChildSpec("steady", Ticker, args=("steady",)),
                actors.ChildSpec("flaky", Ticker, args=("flaky", 3)),
                actors.ChildSpec("slow", Ticker, args=("slow",)),
                # The clock never reads its mailbox, so it would not notice a
                # polite stop request: shutdown=0 cancels it at once instead of
                # waiting out the default 5 s.
                actors.ChildSpec("clock", clock, shutdown=0),
            ],
            id="workers",
            strategy=actors.Strategy.ONE_FOR_ONE,
            budget=actors.RestartBudget(max_restarts=5, window_seconds=10.0),
        )
        await trio.sleep(RUN_SECONDS)
        print("the tree now:")
        for info in system.snapshot().walk():
            print(f"  {info.name:16s} {info.kind:10s} restarts={info.restarts}")
        restarts = {child.id: child.restarts for child in supervisor.which_children()}
        print(f"restarts per child: {restarts}")
        print("shutting down (reverse start order)")
    print("done")


if __name__ == "__main__":
    trio.run(main)
