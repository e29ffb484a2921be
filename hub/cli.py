"""The `hub` command: `hub serve` runs a hub, `hub top` watches one, `hub bench` measures one,
`hub token` mints a development token, `hub notify` and `hub where` ask one about
its users.

Every error a user can cause, on the command line or in a settings file,
ends `hub` with one line on stderr that names the cause and what to do,
and exit status 2 (usage and settings) or 1 (at run time: a port in use, an
actor of the application's that cannot start). No traceback, unless
`--log-level debug` asks for it. A second Ctrl+C during a graceful
shutdown stops at once, with status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import functools
import importlib
import inspect
import ipaddress
import os
import platform
import signal
import socket
import ssl
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, Final, NoReturn

import attrs
import trio

import actors
from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig, format_toml, load_config
from hub.errors import ConfigError
from hub.gateway import server_ssl_context
from hub.logs import configure_logging
from hub.version import version
from hub.workers import run_workers, watch_parent, worker_index

DEFAULT_APP: Final = "hub.demo:app"

#: Exit statuses: a usage or settings error; a failure at run time; a second Ctrl+C.
EXIT_USAGE: Final = 2
EXIT_RUNTIME: Final = 1
EXIT_INTERRUPTED: Final = 130


class UsageError(Exception):
    """The command line is wrong; the message says how, and where help is."""


def load_app(spec: str) -> Hub:
    """Import `module:attribute` and return the Hub it names (or a factory's Hub).

    The current directory is importable, as with `python -m`, so
    `examples.chat:app` works from the project's root. Raises ConfigError,
    whose message says what to do, for anything that stops it (the
    application's own error is its `__cause__`).
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"APP must look like 'module:attribute' (chat:app), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (
            module_name == error.name or module_name.startswith(error.name + ".")
        ):
            raise ConfigError(
                f"cannot import {module_name!r} for APP {spec!r}: no such module in "
                f"{os.getcwd()} or among the installed packages; run `hub serve` in the "
                f"directory that holds {module_name.replace('.', '/')}.py, or fix APP"
            ) from error
        raise ConfigError(
            f"cannot import {module_name!r} for APP {spec!r}: {error}, which it imports; "
            f"install it for {sys.executable}"
        ) from error
    except Exception as error:
        # The application's module failed while loading (a SyntaxError, its
        # own exception): said in one line, its traceback kept as the cause.
        raise ConfigError(
            f"cannot import {module_name!r} for APP {spec!r}: "
            f"{type(error).__name__}: {error} (--log-level debug shows the traceback)"
        ) from error
    try:
        app: Any = getattr(module, attribute)
    except AttributeError:
        hubs = [name for name, value in vars(module).items() if isinstance(value, Hub)]
        hint = f"; its hub.Hub is {module_name}:{hubs[0]}" if len(hubs) == 1 else ""
        raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}{hint}") from None
    if inspect.isfunction(app):
        try:
            app = app()
        except Exception as error:
            raise ConfigError(
                f"APP {spec!r} is a function, and calling it raised "
                f"{type(error).__name__}: {error} (--log-level debug shows the traceback)"
            ) from error
    if not isinstance(app, Hub):
        raise ConfigError(f"{spec!r} is a {type(app).__name__}, not a hub.Hub")
    return app


def _say(line: str) -> None:
    """Print a status line; a closed stdout (the reader went away) is no reason to fail."""
    with contextlib.suppress(BrokenPipeError):
        print(line, flush=True)


def _complain(line: str) -> None:
    """Print one error line on stderr, as `hub: ...`."""
    with contextlib.suppress(BrokenPipeError):
        print(f"hub: {line}", file=sys.stderr, flush=True)


@attrs.define
class _Progress:
    """How far `run` got, and how it ended."""

    #: An OSError before the hub listens is about its address.
    listening: bool = False
    #: A second signal during the graceful shutdown stopped everything at once.
    stopped_at_once: bool = False


async def run(app: Hub, config: HubConfig, progress: _Progress | None = None) -> None:
    """Serve `app` until SIGINT or SIGTERM, then shut down gracefully; a second one: at once.

    The signals come through a receiver (not as KeyboardInterrupt), open from
    before the hub starts until it has stopped, so that none goes missing.
    """
    progress = progress or _Progress()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            runtime: HubRuntime = await nursery.start(
                _serve_then_cancel, app, config, nursery.cancel_scope
            )
            progress.listening = True
            if worker_index() is not None:
                nursery.start_soon(watch_parent, runtime.request_shutdown)
            _say(
                f"triohub: serving {app.name!r} at {runtime.url} "
                f"(WebSocket {runtime.websocket_url}); Ctrl+C to stop"
            )
            if runtime.observer:
                _say_observer(runtime)
            _say_metrics(runtime)
            # Ends when the hub has stopped (its task cancels this scope).
            async for signum in signals:
                if runtime.shutdown_requested:
                    progress.stopped_at_once = True
                    nursery.cancel_scope.cancel()
                    return
                count = runtime.connection_count()
                plural = "" if count == 1 else "s"
                _say(
                    f"triohub: {signal.Signals(signum).name}, shutting down "
                    f"({count} connection{plural} to close)"
                )
                runtime.request_shutdown()
    _say("triohub: stopped")


async def _serve_then_cancel(
    app: Hub,
    config: HubConfig,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[HubRuntime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app`; once it has shut down, cancel `scope` (the wait for signals)."""
    await serve_hub(app, config, task_status=task_status)
    scope.cancel()


def _say_observer(runtime: HubRuntime) -> None:
    admin = runtime.config.admin
    page = runtime.url + "observer/"
    if admin.token is not None:
        _say(f"triohub: observer at {page}?token=TOKEN (admin.token); `hub top {runtime.url}`")
        return
    _say(f"triohub: observer at {page}; `hub top {runtime.url}`")
    if not _is_loopback(runtime.config.server.host):
        metrics_here = admin.metrics and admin.metrics_address is None
        what = "the observer and /metrics are" if metrics_here else "the observer is"
        _complain(
            f"warning: {what} open to whoever reaches this port: "
            "set admin.token (TRIOHUB_ADMIN__TOKEN), or listen on 127.0.0.1"
        )


def _say_metrics(runtime: HubRuntime) -> None:
    admin = runtime.config.admin
    if runtime.metrics_gateway is not None:
        host, port = runtime.metrics_gateway.addresses[0]
        _say(f"triohub: metrics at http://{host}:{port}/metrics")
    elif (
        admin.metrics
        and admin.token is None
        and not runtime.observer  # its warning names /metrics too
        and not _is_loopback(runtime.config.server.host)
    ):
        _complain(
            "warning: /metrics is open to whoever reaches this port: set admin.token, "
            "or serve it elsewhere with admin.metrics_address (docs/security.md)"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Parser(argparse.ArgumentParser):
    """argparse, whose errors are one line and a UsageError (not an exit of its own)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see `{self.prog} --help`")


def _parser() -> tuple[argparse.ArgumentParser, Mapping[str, argparse.ArgumentParser]]:
    """The `hub` parser, and its commands' own parsers by name."""
    parser = _Parser(prog="hub", description="triohub: an actor-model realtime message hub on trio")
    python = platform.python_version()
    parser.add_argument(
        "--version",
        action="version",
        version=f"triohub {version()} (Python {python}, trio {trio.__version__})",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="run a hub application (the demo when APP is omitted)",
        description="Run a hub application. Settings come from defaults, then --config "
        "(or TRIOHUB_CONFIG), then TRIOHUB_<SECTION>__<SETTING> variables, then --set, "
        "then the other flags. docs/configuration.md lists every setting. On Linux with "
        "glibc it runs on glibc's allocator (PYTHONMALLOC=malloc), which can give memory "
        "back after clients leave; set PYTHONMALLOC yourself to choose (docs/deployment.md).",
    )
    serve.add_argument("app", nargs="?", default=DEFAULT_APP, help="module:attribute of a hub.Hub")
    serve.add_argument("--config", metavar="FILE", help="TOML file of settings")
    # The flags' values reach the settings as text, as variables' do, so that
    # every wrong value gets the same message naming its setting.
    for flag, setting, metavar, help_text in _FLAGS:
        serve.add_argument(flag, dest=setting, metavar=metavar, help=help_text)
    serve.add_argument(
        "--origin",
        action="append",
        dest="server.origins",
        metavar="ORIGIN",
        help="allow WebSocket requests from ORIGIN (repeatable; default: any) [server.origins]",
    )
    serve.add_argument(
        "--observer",
        action="store_const",
        const="true",
        dest="admin.observer",
        help="serve the observer at /observer/ and for `hub top` [admin.observer]",
    )
    serve.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="any setting, such as --set topics.empty_grace_seconds=5 (repeatable)",
    )
    serve.add_argument(
        "--print-config",
        action="store_true",
        help="print the settings in effect, as TOML, and exit",
    )
    from hub.top import add_arguments as add_top_arguments

    add_top_arguments(
        commands.add_parser(
            "top",
            help="watch a running hub in the terminal (it must serve the observer)",
            description="Watch a running hub's actor tree, topics, connections and crashes, "
            "live. The hub must serve the observer (hub serve --observer).",
        )
    )
    from hub.admin_client import add_notify_arguments, add_where_arguments

    add_notify_arguments(
        commands.add_parser(
            "notify",
            help="send a user a notification through a hub's admin endpoint, or its Redis",
            description="Send USER a notification (EVENT, with JSON data): it reaches each of "
            "the user's devices, or waits in the user's inbox. By default through a running "
            "hub's admin endpoint (--url, --token); with --redis URL through the hub's Redis "
            "instead, with no hub endpoint (the hub must run on that Redis). "
            "docs/notifications.md says what is guaranteed.",
        )
    )
    from hub.publisher_cli import add_publish_arguments

    add_publish_arguments(
        commands.add_parser(
            "publish",
            help="publish an event to a topic through a hub's Redis (no WebSocket)",
            description="Publish EVENT with JSON data to TOPIC, from outside the hub, through "
            "the Redis its nodes share (--redis, or TRIOHUB_BACKPLANE__REDIS_URL): the node "
            "running the topic gives it the topic's next offset and broadcasts it to every "
            "member, as a server-side publish. If no node serves the topic (nobody is joined), "
            "nothing is delivered or kept and the exit status is 1. docs/deployment.md.",
        )
    )
    add_where_arguments(
        commands.add_parser(
            "where",
            help="show where a user is connected to a running hub",
            description="Show USER's connections to a running hub: transport, address, "
            "since when, topics.",
        )
    )
    token = commands.add_parser(
        "token",
        help="print a signed connection token for USER (for development and tests)",
        description="Print a token for USER, signed with the hub's secret (auth.secret or "
        "auth.secret_file, from --config, TRIOHUB_CONFIG or TRIOHUB_AUTH__SECRET), as "
        "`hub serve` reads it. docs/auth.md says what a token holds.",
    )
    token.add_argument("user", metavar="USER", help="the user id (the token's 'sub')")
    token.add_argument(
        "--topics",
        nargs="+",
        default=None,
        metavar="GRANT",
        help="topic grants: PATTERN (every action) or PATTERN=ACTION,ACTION "
        "(join, publish, call, presence, history), such as 'room:*' 'user:ann=join'",
    )
    token.add_argument(
        "--ttl",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="how long the token lasts (default 3600)",
    )
    token.add_argument("--config", metavar="FILE", help="TOML file of settings")
    # Listed for `hub --help`; `main` hands everything after `bench` to hub.bench.
    commands.add_parser(
        "bench",
        help="benchmark a hub over real WebSockets (`hub bench --help`)",
        add_help=False,
    )
    return parser, commands.choices


# The settings most deployments set, as flags of their own:
# (flag, setting, metavar, help).
_FLAGS = (
    ("--host", "server.host", "HOST", "address to listen on (default 127.0.0.1) [server.host]"),
    (
        "--port",
        "server.port",
        "PORT",
        "port to listen on (default 8000; 0 picks one) [server.port]",
    ),
    (
        "--workers",
        "server.workers",
        "N",
        "run N worker processes on the port (needs --redis) [server.workers]",
    ),
    (
        "--redis",
        "backplane.redis_url",
        "URL",
        "share topics with every hub on this Redis/Valkey (default: this process alone) "
        "[backplane.redis_url]",
    ),
    (
        "--certfile",
        "server.certfile",
        "FILE",
        "PEM certificate: serve https:// and wss:// [server.certfile]",
    ),
    (
        "--keyfile",
        "server.keyfile",
        "FILE",
        "PEM private key (if not in --certfile) [server.keyfile]",
    ),
    (
        "--path",
        "server.path",
        "PATH",
        "the hub protocol's WebSocket path (default /ws) [server.path]",
    ),
    (
        "--max-message-size",
        "websocket.max_message_size",
        "BYTES",
        "largest message a client may send (default 1048576) [websocket.max_message_size]",
    ),
    ("--log-level", "logging.level", "LEVEL", "debug, info, warning or error [logging.level]"),
    (
        "--log-format",
        "logging.format",
        "FORMAT",
        "text, or json for log collectors (one object per line) [logging.format]",
    ),
)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings given on the command line: --set first, then the named flags."""
    overrides: dict[str, object] = {}
    for item in args.set:
        setting, equals, value = item.partition("=")
        if not equals or not setting.strip():
            raise ConfigError(
                f"--set takes SETTING=VALUE, such as topics.empty_grace_seconds=5; got {item!r}"
            )
        overrides[setting.strip()] = value
    for _flag, setting, _metavar, _help in _FLAGS:
        if getattr(args, setting) is not None:
            overrides[setting] = getattr(args, setting)
    if getattr(args, "server.origins") is not None:
        overrides["server.origins"] = tuple(getattr(args, "server.origins"))
    if getattr(args, "admin.observer") is not None:
        overrides["admin.observer"] = getattr(args, "admin.observer")
    return overrides


def _check_tls(config: HubConfig) -> None:
    """Load the certificate now, so that a bad one is a settings error, not a crash later."""
    server = config.server
    if server.certfile is None:
        return
    try:
        server_ssl_context(server.certfile, server.keyfile)
    except (OSError, ssl.SSLError) as error:
        files = repr(server.certfile) + (f" and {server.keyfile!r}" if server.keyfile else "")
        raise ConfigError(
            f"setting server.certfile: cannot load a certificate and key from {files}: {error}"
        ) from error


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `hub` command with `argv` (the process's arguments by default); return its status."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["bench"]:
        from hub.bench.cli import main as bench_main

        return bench_main(arguments[1:])
    if not arguments:
        _complain("which command? `hub serve` runs a hub (the demo without APP); see `hub --help`")
        return EXIT_USAGE
    parser, commands = _parser()
    try:
        args, unknown = parser.parse_known_args(arguments)
        if unknown:
            raise UsageError(_unrecognized(commands[args.command], args.command, unknown))
    except UsageError as error:
        _complain(str(error))
        return EXIT_USAGE
    if args.command == "top":
        from hub.top import main as top_main

        return top_main(args)
    if args.command == "notify":
        from hub.admin_client import notify_main

        return notify_main(args)
    if args.command == "publish":
        from hub.publisher_cli import publish_main

        return publish_main(args)
    if args.command == "where":
        from hub.admin_client import where_main

        return where_main(args)
    if args.command == "token":
        return _token(args)
    return _serve(args, arguments)


def _token(args: argparse.Namespace) -> int:
    """Print a token for `args.user`, signed with the configured secret."""
    try:
        config = load_config(file=args.config)
        tokens = config.auth.verifier()
        if tokens is None:
            raise ConfigError(
                "no secret to sign with: set auth.secret (TRIOHUB_AUTH__SECRET) or "
                "auth.secret_file, in the environment or the --config file"
            )
        try:
            token = tokens.mint(args.user, ttl=args.ttl, topics=_grants(args.topics))
        except ValueError as error:
            raise UsageError(f"{error}; see `hub token --help`") from error
    except (ConfigError, UsageError) as error:
        for line in str(error).splitlines():
            _complain(line)
        return EXIT_USAGE
    _say(token)
    return 0


def _grants(topics: Sequence[str] | None) -> list[str] | dict[str, list[str]] | None:
    """`--topics` as a token's claim: a list of patterns, or a map when actions are named."""
    if topics is None:
        return None
    if not any("=" in grant for grant in topics):
        return list(topics)
    grants: dict[str, list[str]] = {}
    for grant in topics:
        pattern, _, actions = grant.partition("=")
        grants[pattern] = [a.strip() for a in actions.split(",") if a.strip()] if actions else ["*"]
    return grants


def _unrecognized(parser: argparse.ArgumentParser, command: str, unknown: list[str]) -> str:
    """Say which arguments `hub COMMAND` (its `parser`) does not take, and the flag meant."""
    # argparse lists a parser's options only in `_actions`, which it documents nowhere.
    options = [option for action in parser._actions for option in action.option_strings]
    flag = unknown[0].partition("=")[0]
    close = difflib.get_close_matches(flag, options, n=1) if flag.startswith("-") else []
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unrecognized arguments: {' '.join(unknown)}; {hint}see `hub {command} --help`"


def _serve(args: argparse.Namespace, argv: Sequence[str]) -> int:
    try:
        config = load_config(
            file=args.config,
            overrides=_overrides(args),
            overrides_source="from the command line",
        )
    except ConfigError as error:
        for line in str(error).splitlines():
            _complain(line)
        return EXIT_USAGE
    debug = config.logging.level == "debug"
    try:
        if args.print_config:
            _say(format_toml(config))
            return 0
        _check_tls(config)
        config.auth.verifier()  # the secret file read now: a settings error, not a crash later
        app = load_app(args.app)
    except ConfigError as error:
        if debug and error.__cause__ is not None:
            traceback.print_exception(error.__cause__)
        for line in str(error).splitlines():
            _complain(line)
        return EXIT_USAGE
    configure_logging(config.logging)
    if config.server.workers > 1 and worker_index() is None:
        # The parent: it runs this same command as the workers, and serves nothing.
        return trio.run(functools.partial(run_workers, argv, config.server.workers, say=_say))
    progress = _Progress()
    try:
        trio.run(run, app, config, progress)
        if progress.stopped_at_once:
            _complain("interrupted again: stopped at once, without a graceful shutdown")
            return EXIT_INTERRUPTED
    except BaseException as error:
        failure = _failure(error, config, progress)
        if failure is None:
            raise  # not one a user can cause: a bug, with its traceback
        if debug:
            traceback.print_exception(error)
        status, message = failure
        _complain(message)
        return status
    return 0


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or `error` itself."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _failure(
    error: BaseException, config: HubConfig, progress: _Progress
) -> tuple[int, str] | None:
    """The exit status and line for an error that ended the hub, or None for a bug."""
    leaves = _leaves(error)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        return EXIT_INTERRUPTED, "interrupted again: stopped at once, without a graceful shutdown"
    if len(leaves) != 1:
        return None
    (leaf,) = leaves
    if isinstance(leaf, ConfigError):
        return EXIT_USAGE, str(leaf)  # the application and the settings disagree
    if isinstance(leaf, OSError) and not progress.listening:
        return _listen_failure(leaf, config)  # None for another OSError: a bug
    if isinstance(leaf, actors.StartError):
        path = [str(leaf.child_id)]
        cause = leaf.cause
        while isinstance(cause, actors.StartError):
            path.append(str(cause.child_id))
            cause = cause.cause
        if path[:2] == ["hub", "services"] and len(path) == 3:
            who = f"the application's backend actor {path[2]!r}"
        else:
            who = f"actor {'/'.join(path)}"
        return EXIT_RUNTIME, (
            f"{who} failed to start: {cause!r}; --log-level debug shows the traceback"
        )
    if isinstance(leaf, actors.RestartIntensityError):
        return EXIT_RUNTIME, f"the hub stopped: {leaf} (the crashes are logged above)"
    return None


def _listen_failure(error: OSError, config: HubConfig) -> tuple[int, str] | None:
    """The status and line for an error binding the hub's address; None for any other OSError."""
    host, port = config.server.host, config.server.port
    where = f"{host}:{port}"
    if isinstance(error, socket.gaierror):
        return EXIT_USAGE, (
            f"cannot listen on {host!r}: not a host name or address this machine knows "
            f"({error.strerror}); check --host (server.host)"
        )
    match error.errno:
        case errno.EADDRINUSE:
            return EXIT_RUNTIME, (
                f"cannot listen on {where}: the port is in use (another hub or program "
                f"listens there); stop it, or choose another port with --port"
            )
        case errno.EACCES:
            return EXIT_RUNTIME, (
                f"cannot listen on {where}: permission denied (ports below 1024 need root "
                f"or CAP_NET_BIND_SERVICE); choose a port from 1024 up with --port"
            )
        case errno.EADDRNOTAVAIL:
            return EXIT_USAGE, (
                f"cannot listen on {host!r}: not an address of this machine; "
                f"check --host (server.host)"
            )
    return None
