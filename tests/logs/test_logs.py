"""What a running hub logs at info: connections and topics, how they end, rate-limited; and JSON.

Over memory transports on trio's autojump clock, so durations and the
rate limit are exact.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from memory_support import connect_memory, read_frames

from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig, LoggingConfig, ServerConfig, TopicsConfig
from hub.logs import SUMMARY_SECONDS, JsonFormatter, configure_logging
from hub.protocol import JSON, Join, Leave, Payload, Publish, Reply
from hub.services import RoomService, Service
from hub.topics import Member

GRACE = 10.0


class Breakable(Service):
    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        raise RuntimeError("broken on purpose")


def app() -> Hub:
    hub = Hub("logged")
    hub.route("room:*", RoomService)
    hub.route("bad:*", Breakable)
    return hub


async def start(
    nursery: trio.Nursery, lines_per_second: float = 20.0, returned: trio.Event | None = None
) -> HubRuntime:
    """A hub in `nursery`; `returned`, if given, is set once it has stopped."""
    config = HubConfig(
        server=ServerConfig(port=0),
        topics=TopicsConfig(empty_grace_seconds=GRACE),
        logging=LoggingConfig(lines_per_second=lines_per_second),
    )

    async def run(task_status: trio.TaskStatus[HubRuntime]) -> None:
        await serve_hub(app(), config, task_status=task_status)
        if returned is not None:
            returned.set()

    runtime: HubRuntime = await nursery.start(run)
    return runtime


class LogLines:
    """The info lines hub.connections and hub.topics have logged so far, in order."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def _lines(self) -> list[str]:
        return [
            record.getMessage()
            for record in self._caplog.records
            if record.name in ("hub.connections", "hub.topics") and record.levelno == logging.INFO
        ]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines())

    def __len__(self) -> int:
        return len(self._lines())


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> LogLines:
    caplog.set_level(logging.INFO, logger="hub.connections")
    caplog.set_level(logging.INFO, logger="hub.topics")
    return LogLines(caplog)


async def join(client: object, ref: int, topic: str, params: dict[str, Payload]) -> Reply:
    client.send(JSON.encode(Join(ref, topic, params)))  # type: ignore[attr-defined]
    [reply] = await read_frames(client, 1)  # type: ignore[arg-type]
    assert isinstance(reply, Reply)
    return reply


async def test_a_connection_logs_when_it_opens_and_when_it_closes_why_and_after_how_long(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, lines: LogLines
) -> None:
    with trio.fail_after(300):
        runtime = await start(nursery)
        client, done = await connect_memory(runtime, nursery)
        assert (await join(client, 1, "room:a", {"user": "ann"})).ok
        await trio.sleep(75)
        client.close()
        await done.wait()
    opened, started, closed = list(lines)
    assert opened.startswith("connection c") and opened.endswith(" opened: memory")
    connection = opened.split()[1]
    assert started == "topic room:a started (route room:*)"
    assert closed == f"connection {connection} closed after 1 min 15 s: 1006 client went away"


async def test_a_topic_logs_its_stop_empty_or_crashed(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    lines: LogLines,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(60):
        runtime = await start(nursery)
        client, _done = await connect_memory(runtime, nursery)
        assert (await join(client, 1, "room:a", {"user": "ann"})).ok
        await trio.sleep(20)
        client.send(JSON.encode(Leave(2, "room:a")))
        await read_frames(client, 1)
        await trio.sleep(GRACE + 1)
        assert (await join(client, 3, "bad:b", {})).ok
        client.send(JSON.encode(Publish(0, "bad:b", "anything")))
        await read_frames(client, 1)  # Ended: the topic crashed
        await trio.testing.wait_all_tasks_blocked()
    topics = [line for line in lines if line.startswith("topic ")]
    assert topics == [
        "topic room:a started (route room:*)",
        f"topic room:a stopped after {20 + GRACE:.1f} s: empty",
        "topic bad:b started (route bad:*)",
        "topic bad:b stopped after 0.0 s: crashed: RuntimeError('broken on purpose')",
    ]


async def test_a_crowd_is_summed_up_past_the_rate_limit(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, lines: LogLines
) -> None:
    with trio.fail_after(120):
        runtime = await start(nursery, lines_per_second=3)
        clients = [await connect_memory(runtime, nursery) for _ in range(10)]
        await trio.testing.wait_all_tasks_blocked()
        assert len(lines) == 3  # the burst allowed
        for client, _done in clients:
            client.close()
        for _client, done in clients:
            await done.wait()
        assert len(lines) == 3
        await trio.sleep(SUMMARY_SECONDS + 1)
        *_, summary = lines
        assert summary == (
            "not logged (over 3 lines a second): 7 connections opened, "
            "10 connections closed in 10.0 s"
        )
        # The bucket has filled up again: the next lines are logged.
        client, done = await connect_memory(runtime, nursery)
        client.close()
        await done.wait()
        *_, opened, closed = lines
        assert " opened: memory" in opened and " closed after 0.0 s" in closed


async def test_lines_held_back_are_summed_up_when_the_hub_stops(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, lines: LogLines
) -> None:
    with trio.fail_after(60):
        stopped = trio.Event()
        runtime = await start(nursery, lines_per_second=1, returned=stopped)
        for _ in range(3):
            await connect_memory(runtime, nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert len(lines) == 1
        runtime.request_shutdown()
        await stopped.wait()
    *_, summary = lines
    assert summary == (
        "not logged (over 1 lines a second): 2 connections opened, 3 connections closed in 0.0 s"
    )


def test_json_lines_carry_the_message_the_event_fields_and_the_traceback() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "hub.connections", logging.INFO, __file__, 1, "connection %s closed", ("c1",), None
    )
    record.fields = {"event": "connection_closed", "code": 1001, "message": "not mine"}
    entry = json.loads(formatter.format(record))
    assert entry["message"] == "connection c1 closed"
    assert (entry["level"], entry["logger"]) == ("info", "hub.connections")
    assert (entry["event"], entry["code"]) == ("connection_closed", 1001)
    assert entry["time"].endswith("Z") and "T" in entry["time"]

    try:
        raise ValueError("bad")
    except ValueError as error:
        failing = logging.LogRecord(
            "actors.supervisor",
            logging.ERROR,
            __file__,
            1,
            "crashed",
            (),
            (type(error), error, error.__traceback__),
        )
    crashed = json.loads(formatter.format(failing))
    assert crashed["level"] == "error" and "ValueError: bad" in crashed["traceback"]


def test_configure_logging_writes_json_lines_at_the_level_asked() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        configure_logging(LoggingConfig(level="info", format="json"), stream=stream)
        logging.getLogger("hub.test").debug("not shown")
        logging.getLogger("hub.test").info("shown %d", 1, extra={"fields": {"n": 1}})
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.setLevel(saved[0])
        for handler in saved[1]:
            root.addHandler(handler)
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line) | {"time": None} == {
        "time": None,
        "level": "info",
        "logger": "hub.test",
        "message": "shown 1",
        "n": 1,
    }
