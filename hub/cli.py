"""The `hub` command: `hub serve [APP]` runs a hub application; `hub bench` measures one."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import trio

from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig, load_config
from hub.errors import ConfigError

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
        "(or TRIOHUB_CONFIG), then TRIOHUB_* variables, then these flags.",
    )
    serve.add_argument("app", nargs="?", default=DEFAULT_APP, help="module:attribute of a hub.Hub")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000; 0 picks one)")
    serve.add_argument(
        "--origin",
        action="append",
        dest="origins",
        metavar="ORIGIN",
        help="allow WebSocket requests from ORIGIN (repeatable; default: any)",
    )
    serve.add_argument("--certfile", help="PEM certificate: serve https:// and wss://")
    serve.add_argument("--keyfile", help="PEM private key (if not in --certfile)")
    serve.add_argument("--config", help="TOML file of settings")
    serve.add_argument("--log-level", help="debug, info, warning or error")
    # Listed for `hub --help`; `main` hands everything after `bench` to hub.bench.
    commands.add_parser(
        "bench",
        help="benchmark a hub over real WebSockets (`hub bench --help`)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["bench"]:
        from hub.bench.cli import main as bench_main

        return bench_main(arguments[1:])
    args = _parser().parse_args(arguments)
    try:
        config = load_config(
            file=args.config,
            overrides={
                "host": args.host,
                "port": args.port,
                "origins": args.origins,
                "certfile": args.certfile,
                "keyfile": args.keyfile,
                "log_level": args.log_level,
            },
        )
        app = load_app(args.app)
    except ConfigError as error:
        print(f"hub: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        trio.run(run, app, config)
    except OSError as error:
        print(f"hub: cannot listen on {config.host}:{config.port}: {error}", file=sys.stderr)
        return 1
    return 0
