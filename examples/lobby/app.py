"""The lobby example as an application: lobbies, queues, matches, and the page.

    .venv/bin/hub serve examples.lobby.app:app    # then open http://127.0.0.1:8000/lobby/

Players say who they are with `?name=` on the connect URL (the demo's
authenticate hook; a real game uses signed tokens). See docs/lobby.md.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from hub import Hub
from hub.http import static_files

from .lobby import LobbyService
from .match import MatchService
from .matchmaking import QueueService
from .players import name_from_query

STATIC = Path(__file__).resolve().parent / "static"


def make_app(
    *,
    tick_hz: float = 20.0,
    grace: float = 10.0,
    ready_timeout: float = 15.0,
    match_interval: float = 0.5,
    target: int = 10,
    name: str = "lobby example",
) -> Hub:
    """The application, with its timings as parameters (tests and the bench pick their own).

    `target` is how many coins win a queued match (a lobby's host chooses its own).
    """
    match_init: dict[str, Any] = {"tick_hz": tick_hz, "grace": grace, "target": target}
    app = Hub(
        name, authenticate=name_from_query, http_routes=[static_files(STATIC, prefix="/lobby/")]
    )
    app.route(
        "lobby:*",
        functools.partial(LobbyService, ready_timeout=ready_timeout, match_init=match_init),
    )
    app.route(
        "queue:*",
        functools.partial(QueueService, match_interval=match_interval, match_init=match_init),
    )
    app.route("match:*", functools.partial(MatchService, tick_hz=tick_hz, grace=grace))
    return app


app = make_app()
#: Short matches (3 coins win), for trying the bots out and for tests.
quick = make_app(target=3, name="lobby example (quick matches)")
#: Matches nobody wins (they run their five minutes), for `hub bench lobby`.
bench = make_app(target=1_000_000_000, name="lobby example (bench)")
