"""`hub publish` and `hub notify --redis`: reaching a hub's clients through its Redis.

    hub publish room:lobby news '{"text": "hi"}' --redis redis://127.0.0.1:6379/0
    hub notify ada invite '{"room": "chess:7"}' --redis redis://127.0.0.1:6379/0

No WebSocket and no admin endpoint: they speak to Redis, as `hub.publisher`
does (its docstring says what each guarantees). `hub notify` without
`--redis` asks one hub's admin endpoint over HTTP instead (`hub.admin_client`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import trio

from hub.errors import HubError
from hub.protocol import Payload

__all__ = ["add_publish_arguments", "add_redis_arguments", "notify_main", "publish_main"]

#: Where `--redis` comes from when not given (as `hub serve` reads it).
REDIS_VARIABLE: Final = "TRIOHUB_BACKPLANE__REDIS_URL"
PREFIX_VARIABLE: Final = "TRIOHUB_BACKPLANE__PREFIX"

EXIT_USAGE: Final = 2
EXIT_FAILED: Final = 1


def add_redis_arguments(parser: argparse.ArgumentParser, *, required_help: str) -> None:
    """`--redis` and `--prefix`: the hub's Redis."""
    parser.add_argument("--redis", metavar="URL", help=required_help)
    parser.add_argument(
        "--prefix",
        default=None,
        help=f"the hub's backplane.prefix (default: ${PREFIX_VARIABLE}, else triohub)",
    )


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hub publish`."""
    parser.add_argument("topic", metavar="TOPIC", help="the topic to publish to")
    parser.add_argument("event", metavar="EVENT", help="the event's name")
    parser.add_argument(
        "data", metavar="JSON", nargs="?", default="null", help="its data, as JSON (default null)"
    )
    parser.add_argument(
        "--no-keep",
        dest="keep",
        action="store_false",
        help="do not keep it in the topic's history (no offset)",
    )
    add_redis_arguments(
        parser,
        required_help=f"the hub's Redis, as redis://HOST:PORT/DB (default: ${REDIS_VARIABLE})",
    )


def publish_main(args: argparse.Namespace) -> int:
    """Run `hub publish`; return the exit status."""
    from hub.publisher import open_publisher

    try:
        redis_url, prefix, data = _common(args)
    except _UsageError as error:
        _complain(str(error))
        return EXIT_USAGE

    async def publish() -> int | None:
        async with open_publisher(redis_url, prefix=prefix) as publisher:
            return await publisher.publish(args.topic, args.event, data, keep=args.keep)

    try:
        offset = _run(publish)
    except (HubError, ConnectionError) as error:
        return _complain(str(error))
    where = f"offset {offset}" if offset is not None else "not kept"
    print(f"published {args.event!r} to {args.topic!r}: {where}")
    return 0


def notify_main(args: argparse.Namespace) -> int:
    """Run `hub notify --redis`; return the exit status."""
    from hub.publisher import open_publisher

    try:
        redis_url, prefix, data = _common(args)
    except _UsageError as error:
        _complain(str(error))
        return EXIT_USAGE

    async def notify() -> tuple[int, str]:
        async with open_publisher(redis_url, prefix=prefix) as publisher:
            notification = await publisher.notify(args.user, args.event, data)
            return notification.offset, publisher.inbox.epoch

    try:
        offset, epoch = _run(notify)
    except (HubError, ConnectionError) as error:
        return _complain(str(error))
    print(
        f"notified {args.user!r} of {args.event!r} through Redis: offset {offset} (epoch {epoch})"
    )
    return 0


T = TypeVar("T")


def _run(main: Callable[[], Awaitable[T]]) -> T:
    """`trio.run(main)`, its one failure out of the nursery's group (to say in one line)."""
    try:
        return trio.run(main)
    except BaseExceptionGroup as group:
        failures = group.subgroup((HubError, ConnectionError))
        while isinstance(failures, BaseExceptionGroup):
            failures = failures.exceptions[0]  # type: ignore[assignment]
        if failures is None:
            raise
        raise failures from None


class _UsageError(Exception):
    """The command line is wrong; the message says how."""


def _common(args: argparse.Namespace) -> tuple[str, str, Payload]:
    """The Redis URL, the prefix and the data the command line names."""
    redis_url = args.redis or os.environ.get(REDIS_VARIABLE)
    prefix = args.prefix or os.environ.get(PREFIX_VARIABLE) or "triohub"
    if redis_url is None:
        raise _UsageError(f"which Redis? pass --redis redis://HOST:PORT/DB or set {REDIS_VARIABLE}")
    try:
        data: Payload = json.loads(args.data)
    except json.JSONDecodeError as error:
        raise _UsageError(f"JSON {args.data!r} is not valid JSON: {error}") from None
    return redis_url, prefix, data


def _complain(message: str) -> int:
    print(f"hub: {message}", file=sys.stderr)
    return EXIT_FAILED
