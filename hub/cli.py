"""The `hub` command: `hub serve [APP]` runs a hub application; `hub bench` measures one."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from typing import Any

import trio

from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig, format_toml, load_config
from hub.errors import ConfigError
from hub.gateway import server_ssl_context

DEFAULT_APP = "hub.demo:app"


def load_app(spec: str) -> Hub:
    """Import `module:attribute` and return the Hub it names (or a factory's Hub).

    The current directory is importable, as with `python -m`, so
    `examples.chat:app` works from the project's root.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"APP must look like 'module:attribute', got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cannot import {module_name!r} for APP {spec!r}: {error}") from error
    try:
        app: Any = getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if inspect.isfunction(app):
        app = app()
    if not isinstance(app, Hub):
        raise ConfigError(f"{spec!r} is a {type(app).__name__}, not a hub.Hub")
    return app


def _say(line: str) -> None:
    """Print a status line; a closed stdout (the reader went away) is no reason to fail."""
    with contextlib.suppress(BrokenPipeError):
        print(line, flush=True)


async def run(app: Hub, config: HubConfig) -> None:
    """Serve `app` until SIGINT or SIGTERM, then shut down gracefully."""
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            runtime: HubRuntime = await nursery.start(serve_hub, app, config)
            _say(
                f"triohub: serving {app.name!r} at {runtime.url} "
                f"(WebSocket {runtime.websocket_url}); Ctrl+C to stop"
            )
            async for signum in signals:
                count = runtime.connection_count()
                plural = "" if count == 1 else "s"
                _say(
                    f"triohub: {signal.Signals(signum).name}, shutting down "
                    f"({count} connection{plural} to close)"
                )
                runtime.request_shutdown()
                break
    _say("triohub: stopped")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hub", description="triohub: an actor-model realtime message hub on trio"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run a hub application (the demo when APP is omitted)",
        description="Run a hub application. Settings come from defaults, then --config "
        "(or TRIOHUB_CONFIG), then TRIOHUB_<SECTION>__<SETTING> variables, then --set, "
        "then the other flags. docs/configuration.md lists every setting.",
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
    # Listed for `hub --help`; `main` hands everything after `bench` to hub.bench.
    commands.add_parser(
        "bench",
        help="benchmark a hub over real WebSockets (`hub bench --help`)",
        add_help=False,
    )
    return parser


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
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["bench"]:
        from hub.bench.cli import main as bench_main

        return bench_main(arguments[1:])
    args = _parser().parse_args(arguments)
    try:
        config = load_config(
            file=args.config,
            overrides=_overrides(args),
            overrides_source="from the command line",
        )
        if args.print_config:
            _say(format_toml(config))
            return 0
        _check_tls(config)
        app = load_app(args.app)
    except ConfigError as error:
        for line in str(error).splitlines():
            print(f"hub: {line}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.logging.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        trio.run(run, app, config)
    except OSError as error:
        server = config.server
        print(f"hub: cannot listen on {server.host}:{server.port}: {error}", file=sys.stderr)
        return 1
    return 0
