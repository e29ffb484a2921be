"""Failing a test whose code logged an error, for the gateway and hub suites' conftests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

#: The loggers watched: the gateway and hub log under "hub", the runtime under "actors".
WATCHED_LOGGERS = ("hub", "actors")


def fail_on_logged_errors(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture, *, marker: str, who: str
) -> Iterator[None]:
    """The body of an autouse fixture: after the test, fail it if `who` logged an error.

    The gateway logs and survives a failing connection or handler, so a bug
    in it would otherwise go unnoticed whenever the client still sees a sane
    result. A test marked with `marker` provokes a logged error on purpose
    and is not checked. Use it as `yield from fail_on_logged_errors(...)`.
    """
    for logger in WATCHED_LOGGERS:
        caplog.set_level(logging.WARNING, logger=logger)
    yield
    if request.node.get_closest_marker(marker):
        return
    errors = [
        record
        for phase in ("setup", "call", "teardown")
        for record in caplog.get_records(phase)
        if record.levelno >= logging.ERROR
    ]
    assert not errors, f"{who} logged errors:\n" + "\n".join(
        record.getMessage() + "\n" + (record.exc_text or "") for record in errors
    )
