"""`hub notify` and `hub where`: asking a running hub, over its admin endpoints (`hub.admin`).

    hub notify ada invite '{"room": "chess:7"}' --url http://127.0.0.1:8000/
    hub where ada

They speak plain HTTP to the hub's port, with the admin token (`--token`
or TRIOHUB_ADMIN__TOKEN) if the hub has one. Across processes (a hub of
several workers on Redis) the notification goes into the user's inbox in
Redis and reaches the user's devices on every worker. `hub notify --redis
URL` goes through Redis itself, no hub endpoint needed (`hub.publisher_cli`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

from hub.admin import NOTIFY_PATH, USERS_PATH
from hub.top import DEFAULT_URL, TOKEN_VARIABLE

__all__ = ["add_notify_arguments", "add_where_arguments", "notify_main", "where_main"]

# How long a request to the hub may take, in seconds.
REQUEST_TIMEOUT_SECONDS: Final = 10.0

EXIT_USAGE: Final = 2
EXIT_FAILED: Final = 1


class _Failed(Exception):
    """The request failed; the message says why and what to do, `status` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"the hub, as http(s)://HOST:PORT/ (default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token", help=f"the hub's admin token, if it has one (default: ${TOKEN_VARIABLE})"
    )


def add_notify_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hub notify`."""
    parser.add_argument("user", metavar="USER", help="the user id to notify")
    parser.add_argument("event", metavar="EVENT", help="the notification's event name")
    parser.add_argument(
        "data", metavar="JSON", nargs="?", default="null", help="its data, as JSON (default null)"
    )
    _add_common(parser)
    from hub.publisher_cli import add_redis_arguments

    add_redis_arguments(
        parser,
        required_help="go through this Redis (redis://HOST:PORT/DB), as `hub publish` does, "
        "instead of one hub's admin endpoint (--url)",
    )


def add_where_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hub where`."""
    parser.add_argument("user", metavar="USER", help="the user id")
    _add_common(parser)


def notify_main(args: argparse.Namespace) -> int:
    """Run `hub notify`; return the exit status."""
    if args.redis is not None:
        from hub.publisher_cli import notify_main as notify_through_redis

        return notify_through_redis(args)
    try:
        try:
            data = json.loads(args.data)
        except json.JSONDecodeError as error:
            raise _Failed(f"JSON {args.data!r} is not valid JSON: {error}", EXIT_USAGE) from None
        body = json.dumps({"user": args.user, "event": args.event, "data": data}).encode()
        answer = _request(args, NOTIFY_PATH, body)
    except _Failed as failure:
        return _complain(failure)
    devices = answer.get("devices", 0)
    print(
        f"notified {args.user!r} of {args.event!r}: offset {answer.get('offset')} "
        f"(epoch {answer.get('epoch')}), {devices} connection{'' if devices == 1 else 's'} now"
    )
    return 0


def where_main(args: argparse.Namespace) -> int:
    """Run `hub where`; return the exit status."""
    try:
        answer = _request(args, USERS_PATH + urllib.parse.quote(args.user, safe=""))
    except _Failed as failure:
        return _complain(failure)
    print(json.dumps(answer, indent=2))
    return 0


def _request(args: argparse.Namespace, path: str, body: bytes | None = None) -> dict[str, Any]:
    url = args.url if "://" in args.url else "http://" + args.url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Failed(f"{args.url!r} is not a hub's address: give http://HOST:PORT/", EXIT_USAGE)
    target = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    headers = {"content-type": "application/json"}
    token = args.token or os.environ.get(TOKEN_VARIABLE)
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(target, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as error:
        raise _Failed(_refusal(error)) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise _Failed(f"cannot reach the hub at {url}: {reason}; is it running there?") from None


def _refusal(error: urllib.error.HTTPError) -> str:
    text = error.read().decode(errors="replace").strip()
    if error.code == 401:
        return f"the hub asks for its admin token: pass --token or set {TOKEN_VARIABLE}"
    if error.code == 404:
        return "the hub has no admin endpoints here: is it a triohub hub, of this version?"
    with contextlib.suppress(ValueError, AttributeError):
        text = json.loads(text).get("error", text)
    return f"the hub refused ({error.code}): {text}"


def _complain(failure: _Failed) -> int:
    print(f"hub: {failure}", file=sys.stderr)
    return failure.status
