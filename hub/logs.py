"""What `hub serve` logs: lines a person can follow, as text or as JSON for log collectors.

At info level the hub says one line per connection opened and closed (with
why, and after how long) and per topic started and stopped (`HubLog`):

    connection c12 opened: websocket from 127.0.0.1:50522
    topic room:lobby started (route room:*)
    connection c12 closed after 3 min 12 s: 1001 server shutting down
    topic room:lobby stopped after 3 min 25 s: empty

A busy hub would drown a reader in those, so each kind (connections,
topics) is rate-limited: at most `logging.lines_per_second` lines a second,
in a burst of as many; the lines held back are counted, and one line sums
them up when the burst is over (`SUMMARY_SECONDS` later):

    not logged (over 20 lines a second): 5120 connections opened, 4986 connections closed in 10 s

The rates run on trio's clock, so tests drive them with the autojump clock.
With `logging.format = "json"` every line is one JSON object with `time`,
`level`, `logger` and `message`, the fields of the event (`event`,
`connection`, `code`, `reason`, `seconds`, `topic`, ...) and, for errors,
`traceback`.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, TextIO

import attrs
import trio

import actors

if TYPE_CHECKING:
    from hub.config import LoggingConfig
    from hub.transport import Transport

__all__ = [
    "CONNECTIONS_LOGGER",
    "SUMMARY_SECONDS",
    "TOPICS_LOGGER",
    "HubLog",
    "JsonFormatter",
    "configure_logging",
    "describe_duration",
    "describe_remote",
    "transport_kind",
]

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: How long after the first line held back the summary of a burst comes.
SUMMARY_SECONDS: Final = 10.0

CONNECTIONS_LOGGER: Final = "hub.connections"
TOPICS_LOGGER: Final = "hub.topics"

# The names of the WebSocket close codes a connection ends with most (RFC 6455 §7.4.1).
_CLOSE_CODES: Final = {
    1000: "normal",
    1001: "going away",
    1006: "connection lost",
    1008: "policy violation",
    1009: "message too big",
    1011: "internal error",
    1013: "try again later",
}


def _fields(**fields: object) -> dict[str, object]:
    """`extra=` of a log call: the event's fields, for the JSON lines."""
    return {"fields": fields}


# Keys of a JSON line that an event's fields may not take over.
_BASE_KEYS: Final = frozenset({"time", "level", "logger", "message", "traceback"})


def configure_logging(config: LoggingConfig, *, stream: TextIO | None = None) -> None:
    """Send the process's log to `stream` (stderr) at `config.level`, as text or JSON."""
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter = JsonFormatter() if config.format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.level.upper())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            entry.update((key, value) for key, value in fields.items() if key not in _BASE_KEYS)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a field the hub did not foresee is shown, never a failed log line.
        return json.dumps(entry, ensure_ascii=False, default=str)


def describe_duration(seconds: float) -> str:
    """`0.4 s`, `12.3 s`, `3 min 12 s`, `2 h 5 min`: how long, for people."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, whole = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {whole} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def describe_remote(remote: tuple[str, int] | None) -> str | None:
    """`127.0.0.1:50522`, `[::1]:50522`, or None when unknown."""
    if remote is None:
        return None
    host, port = remote
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def transport_kind(transport: Transport) -> str:
    """`websocket` for a WebSocketTransport, `memory` for a MemoryTransport."""
    return type(transport).__name__.removesuffix("Transport").lower()


@attrs.define(eq=False)
class _Limit:
    """A token bucket on trio's clock, and what it held back since the last summary."""

    logger: logging.Logger
    rate: float
    tokens: float
    updated: float = -1.0
    held: dict[str, int] = attrs.Factory(dict)
    held_since: float = 0.0

    def take(self, now: float) -> bool:
        if self.updated >= 0:
            self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@attrs.define(eq=False)
class HubLog:
    """The hub's info lines about connections and topics, rate-limited per kind.

    The running hub calls the `connection_*` methods from a session's life
    (`HubRuntime.serve_transport`) and the `topic_*` ones from each topic
    actor (it is their `TopicLifecycle`). Nothing here waits; the summaries
    of held-back lines come from `serve_summaries`, run by the hub.
    """

    lines_per_second: float = 20.0
    summary_seconds: float = SUMMARY_SECONDS
    _limits: dict[str, _Limit] = attrs.field(init=False)
    _held: trio.Event = attrs.Factory(trio.Event)

    def __attrs_post_init__(self) -> None:
        rate = self.lines_per_second
        self._limits = {
            name: _Limit(logging.getLogger(name), rate, tokens=rate)
            for name in (CONNECTIONS_LOGGER, TOPICS_LOGGER)
        }

    # --- connections -----------------------------------------------------------

    def connection_opened(
        self, connection: str, transport: Transport, remote: tuple[str, int] | None
    ) -> None:
        logger = self._admit(CONNECTIONS_LOGGER, "connections opened")
        if logger is None:
            return
        kind, where = transport_kind(transport), describe_remote(remote)
        logger.info(
            "connection %s opened: %s%s",
            connection,
            kind,
            f" from {where}" if where else "",
            extra=_fields(
                event="connection_opened", connection=connection, transport=kind, remote=where
            ),
        )

    def connection_closed(
        self, connection: str, code: int | None, reason: str, seconds: float
    ) -> None:
        """`code` None: the session ended without its transport closing (the hub was cancelled)."""
        logger = self._admit(CONNECTIONS_LOGGER, "connections closed")
        if logger is None:
            return
        reason = reason or (_CLOSE_CODES.get(code, "closed") if code is not None else "ended")
        logger.info(
            "connection %s closed after %s: %s",
            connection,
            describe_duration(seconds),
            reason if code is None else f"{code} {reason}",
            extra=_fields(
                event="connection_closed",
                connection=connection,
                code=code,
                reason=reason,
                seconds=round(seconds, 3),
            ),
        )

    # --- topics (the topic actors' TopicLifecycle) ----------------------------------

    def topic_started(self, topic: str, route: str) -> None:
        logger = self._admit(TOPICS_LOGGER, "topics started")
        if logger is None:
            return
        logger.info(
            "topic %s started (route %s)",
            topic,
            route,
            extra=_fields(event="topic_started", topic=topic, route=route),
        )

    def topic_stopped(self, topic: str, reason: actors.ExitReason, seconds: float) -> None:
        logger = self._admit(TOPICS_LOGGER, "topics stopped")
        if logger is None:
            return
        match reason:
            case actors.Normal():
                why = "empty"
            case actors.Shutdown():
                why = "shut down"
            case actors.Crashed(error=error):
                why = f"crashed: {error!r}"
        logger.info(
            "topic %s stopped after %s: %s",
            topic,
            describe_duration(seconds),
            why,
            extra=_fields(
                event="topic_stopped", topic=topic, reason=why, seconds=round(seconds, 3)
            ),
        )

    # --- the limit, and the summaries -----------------------------------------------

    def _admit(self, kind: str, counted_as: str) -> logging.Logger | None:
        """The logger to log one line of `kind` with, or None: not logged, or held back.

        Nothing is formatted for a line that will not be logged.
        """
        limit = self._limits[kind]
        if not limit.logger.isEnabledFor(logging.INFO):
            return None
        now = trio.current_time()
        if limit.take(now):
            return limit.logger
        if not limit.held:
            limit.held_since = now
        limit.held[counted_as] = limit.held.get(counted_as, 0) + 1
        self._held.set()
        return None

    def summarize(self) -> None:
        """Log one line per kind for what was held back, and start counting afresh."""
        now = trio.current_time()
        for limit in self._limits.values():
            if not limit.held:
                continue
            counts = ", ".join(f"{count} {what}" for what, count in limit.held.items())
            limit.logger.info(
                "not logged (over %g lines a second): %s in %s",
                limit.rate,
                counts,
                describe_duration(now - limit.held_since),
                extra={"fields": {"event": "lines_not_logged", **limit.held}},
            )
            limit.held = {}
        self._held = trio.Event()

    async def serve_summaries(self) -> None:
        """Sum up held-back lines `summary_seconds` after the first; runs until cancelled.

        What is still held back when it is cancelled (the hub stopping) is
        summed up then.
        """
        try:
            while True:
                await self._held.wait()
                await trio.sleep(self.summary_seconds)
                self.summarize()
        finally:
            self.summarize()
