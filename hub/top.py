"""`hub top [URL]`: a running hub's actor tree, topics, connections and crashes, live in a terminal.

For a server without a browser. It joins the hub's `$observer` topic over
the hub protocol (`hub.client`, at /observer/ws) and redraws each snapshot
the hub pushes (`hub.observer.snapshot`) with rich; `render` turns one
snapshot into what is drawn, and is all the tests need to check the view.
The hub must serve the observer (`hub serve --observer`); its admin token,
if it has one, comes from --token or TRIOHUB_ADMIN__TOKEN.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import signal
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Final

import trio
import trio_websocket
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from hub import client
from hub.logs import describe_duration
from hub.observer import OBSERVER_TOPIC, OBSERVER_WS_PATH
from hub.protocol import SUBPROTOCOL_JSON

__all__ = ["TOKEN_VARIABLE", "add_arguments", "main", "observer_url", "render", "watch"]

#: Where `hub top` finds the admin token when --token is not given (the server's variable).
TOKEN_VARIABLE: Final = "TRIOHUB_ADMIN__TOKEN"

DEFAULT_URL: Final = "http://127.0.0.1:8000/"


#: How long `hub top` waits for the hub to answer, connecting and joining.
CONNECT_TIMEOUT_SECONDS: Final = 10.0

#: Crashes drawn, the newest first, and the lines of each traceback's end.
CRASHES_SHOWN: Final = 3
TRACEBACK_LINES: Final = 6

_STATE_STYLES: Final = {"running": "green", "stopping": "yellow", "crashed": "bold red"}


class TopError(Exception):
    """`hub top` cannot watch: `status` is its exit status, the message says why and what to do."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hub top` (its subcommand parser is the CLI's)."""
    parser.add_argument(
        "url",
        nargs="?",
        default=DEFAULT_URL,
        metavar="URL",
        help=f"the hub, as http(s)://HOST:PORT/ or ws(s)://... (default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        help=f"the hub's admin token, if it has one (default: ${TOKEN_VARIABLE})",
    )
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")


def observer_url(url: str) -> str:
    """The observer's WebSocket URL of a hub given as `http://host:port/` (or ws://, or host:port).

    Raises TopError (status 2) for a URL that names no hub.
    """
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in schemes or not parts.hostname:
        raise TopError(
            f"{url!r} is not a hub's address: give http://HOST:PORT/ (or https://, ws://, wss://)",
            status=2,
        )
    return urllib.parse.urlunsplit((schemes[parts.scheme], parts.netloc, OBSERVER_WS_PATH, "", ""))


def main(args: argparse.Namespace) -> int:
    """Run `hub top` with the parsed arguments; return the exit status."""
    console = Console()
    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    try:
        url = observer_url(args.url)
        trio.run(_watch_until_interrupted, url, token, console, args.once)
    except TopError as error:
        print(f"hub top: {error}", file=sys.stderr)
        return error.status
    return 0


async def _watch_until_interrupted(
    url: str, token: str | None, console: Console, once: bool
) -> None:
    """`watch`, which Ctrl+C ends quietly, however far it got (connecting, or drawing).

    SIGINT comes through a signal receiver, not as KeyboardInterrupt, so that
    it ends the watch by cancelling it, wherever it is waiting.
    """
    failure: TopError | None = None
    with trio.open_signal_receiver(signal.SIGINT) as interrupts:
        async with trio.open_nursery() as nursery:

            async def stop_on_interrupt() -> None:
                async for _ in interrupts:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_interrupt)
            try:
                await watch(url, token, console, once)
            except TopError as error:
                failure = error  # raised below as itself, not in the nursery's group
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def watch(url: str, token: str | None, console: Console, once: bool = False) -> None:
    """Draw the hub's snapshots on `console` until cancelled (or the first only, with `once`).

    Raises TopError when the hub cannot be reached or watched, or ends the connection.
    """
    headers = {"authorization": f"Bearer {token}"} if token else None
    try:
        async with client.connect(
            url,
            subprotocol=SUBPROTOCOL_JSON,
            headers=headers,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            # A view of a hub that went away says so, rather than waiting for it.
            reconnect=False,
        ) as connection:
            with trio.fail_after(CONNECT_TIMEOUT_SECONDS):
                channel = await connection.join(OBSERVER_TOPIC)
            if once:
                async for push in channel:
                    console.print(render(_mapping(push.payload), width=console.width))
                    return
            else:
                await _draw(channel, console)
            raise TopError(_ended(channel))
    except* client.ConnectError as group:
        refused = group.exceptions[0]
        assert isinstance(refused, client.ConnectError)
        raise _unreachable(url, refused) from None
    except* client.ReplyError as group:
        error = group.exceptions[0]
        assert isinstance(error, client.ReplyError)
        raise TopError(f"the hub refused to show its observer: {error.message}") from None
    except* (client.ConnectionLostError, trio.TooSlowError):
        raise TopError(f"the hub at {url} stopped answering") from None


async def _draw(channel: client.Channel, console: Console) -> None:
    """Redraw each snapshot until the membership ends (or this is cancelled)."""
    with Live(console=console, screen=console.is_terminal, auto_refresh=False) as live:
        async for push in channel:
            live.update(render(_mapping(push.payload), height=console.height), refresh=True)


def _ended(channel: client.Channel) -> str:
    ended = channel.ended
    if ended is None:
        return "the hub closed the connection"
    return f"the hub ended the observer ({ended.code}: {ended.reason})"


def _unreachable(url: str, error: client.ConnectError) -> TopError:
    status = error.status
    if status == 401:
        return TopError(
            f"the hub at {url} wants its admin token: --token TOKEN, or {TOKEN_VARIABLE}",
            status=2,
        )
    if status == 404:
        return TopError(
            f"the hub at {url} serves no observer: start it with `hub serve --observer` "
            "(or Hub(observer=True))"
        )
    if status is not None:
        return TopError(f"the hub at {url} refused the connection with HTTP {status}")
    handshake = error.__cause__
    if isinstance(handshake, trio_websocket.ConnectionTimeout):
        return TopError(f"the hub at {url} did not answer within {CONNECT_TIMEOUT_SECONDS} s")
    cause = getattr(handshake, "__cause__", None) or handshake
    why = getattr(cause, "strerror", None) or str(cause or error) or "no answer"
    return TopError(
        f"cannot reach the hub at {url}: {why}; is it running (`hub serve --observer`)?"
    )


def _mapping(payload: object) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise TopError(f"the hub sent a snapshot this `hub top` cannot read: {payload!r:.80}")
    return payload


# --- drawing --------------------------------------------------------------------------


def render(snapshot: Mapping[str, Any], *, height: int = 60, width: int = 120) -> RenderableType:
    """What `hub top` draws of one snapshot: a header, the tree, topics, connections, crashes.

    `height` bounds how many rows each part gets, so that the view fits a
    terminal of that height.
    """
    rows = max(3, (height - 16) // 4)
    return Group(
        _header(snapshot.get("hub", {})),
        _tree(snapshot.get("tree"), rows * 2),
        _topics(snapshot.get("topics", []), snapshot.get("topics_more", 0), rows),
        _connections(snapshot.get("connections", []), snapshot.get("connections_more", 0), rows),
        _crashes(snapshot.get("crashes", [])),
    )


def _header(hub: Mapping[str, Any]) -> Text:
    text = Text()
    text.append(f"triohub {hub.get('version', '?')} ", style="bold")
    text.append(f"{hub.get('name', '')!r}  ", style="bold cyan")
    text.append(f"up {describe_duration(float(hub.get('uptime', 0)))}  ")
    text.append(
        f"{_plural(hub.get('connections', 0), 'connection')}  "
        f"{_plural(hub.get('topics', 0), 'topic')}  "
    )
    text.append(
        f"in {_per_second(hub.get('messages_in_rate'))}  "
        f"out {_per_second(hub.get('messages_out_rate'))}  "
    )
    text.append(datetime.datetime.now().strftime("%H:%M:%S"), style="dim")
    return text


def _plural(count: object, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _per_second(rate: object) -> str:
    return "-" if rate is None else f"{rate}/s"


def _actor_label(actor: Mapping[str, Any]) -> Text:
    state = str(actor.get("state", "running"))
    label = Text()
    supervisor = actor.get("kind") == "supervisor"
    label.append(str(actor.get("name", "?")), style="bold" if supervisor else "")
    label.append(f" {state}", style=_STATE_STYLES.get(state, "dim"))
    label.append(f"  mailbox {actor.get('mailbox', 0)}/{actor.get('capacity', 0)}")
    dropped, restarts = actor.get("dropped", 0), actor.get("restarts", 0)
    label.append(f"  drops {dropped}", style="yellow" if dropped else "")
    label.append(f"  restarts {restarts}", style="red" if restarts else "")
    return label


def _tree(root: Mapping[str, Any] | None, budget: int) -> RenderableType:
    if not root:
        return Text("(no actor tree)")
    tree = Tree(_actor_label(root))
    shown = 1
    stack: list[tuple[Tree, Mapping[str, Any]]] = [(tree, root)]
    # Breadth first: the supervisors near the root stay in view when rows run out.
    while stack:
        node, actor = stack.pop(0)
        children: Sequence[Mapping[str, Any]] = actor.get("children", [])
        more = int(actor.get("more", 0))
        for index, child in enumerate(children):
            if shown >= budget:
                more += len(children) - index
                break
            stack.append((node.add(_actor_label(child)), child))
            shown += 1
        if more:
            node.add(Text(f"... and {more} more", style="dim"))
    return tree


def _topics(topics: Sequence[Mapping[str, Any]], more: int, rows: int) -> Table:
    table = Table(title="topics", title_justify="left", expand=False)
    for column in ("topic", "route", "members", "msgs/s", "mailbox"):
        table.add_column(column, justify="right" if column in ("members", "msgs/s") else "left")
    for topic in topics[:rows]:
        table.add_row(
            str(topic.get("name")),
            str(topic.get("route") or ""),
            str(topic.get("members", 0)),
            _rate_cell(topic.get("rate")),
            f"{topic.get('mailbox', 0)}/{topic.get('capacity', 0)}",
        )
    hidden = more + max(0, len(topics) - rows)
    if hidden:
        table.caption = f"... and {hidden} more"
    return table


def _rate_cell(rate: object) -> str:
    return "-" if rate is None else str(rate)


def _connections(connections: Sequence[Mapping[str, Any]], more: int, rows: int) -> Table:
    table = Table(title="connections", title_justify="left", expand=False)
    for column in ("id", "transport", "from", "topics", "outbox", "age"):
        table.add_column(column, justify="right" if column in ("outbox",) else "left")
    for connection in connections[:rows]:
        topics = ", ".join(str(topic) for topic in connection.get("topics", []))
        extra = int(connection.get("topic_count", 0)) - len(connection.get("topics", []))
        if extra > 0:
            topics += f" (+{extra})"
        kind = str(connection.get("transport", ""))
        if connection.get("observer"):
            kind += " (observer)"
        outbox = int(connection.get("outbox", 0))
        table.add_row(
            str(connection.get("id")),
            kind,
            str(connection.get("remote") or ""),
            topics,
            Text(str(outbox), style="yellow" if outbox else ""),
            describe_duration(float(connection.get("age", 0))),
        )
    hidden = more + max(0, len(connections) - rows)
    if hidden:
        table.caption = f"... and {hidden} more"
    return table


def _crashes(crashes: Sequence[Mapping[str, Any]]) -> RenderableType:
    if not crashes:
        return Text("no crashes", style="dim")
    parts: list[RenderableType] = [Text(f"last crashes ({len(crashes)})", style="bold red")]
    for crash in crashes[:CRASHES_SHOWN]:
        at = "?"
        with contextlib.suppress(TypeError, ValueError, OSError):
            at = datetime.datetime.fromtimestamp(float(crash.get("at", 0))).strftime("%H:%M:%S")
        line = Text()
        line.append(f"{at} ", style="dim")
        line.append(str(crash.get("actor")), style="bold")
        line.append(f" under {crash.get('supervisor')}: ")
        line.append(str(crash.get("error")), style="red")
        parts.append(line)
        tail = str(crash.get("traceback", "")).rstrip().splitlines()[-TRACEBACK_LINES:]
        parts.append(Text("\n".join("    " + entry for entry in tail), style="dim"))
    return Group(*parts)
