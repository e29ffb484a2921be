"""The observer's tests fail if the hub logs an error they did not provoke."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from log_support import fail_on_logged_errors


@pytest.fixture(autouse=True)
def no_unexpected_errors(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Mark a test that crashes an actor on purpose with `hub_logs_errors`."""
    yield from fail_on_logged_errors(request, caplog, marker="hub_logs_errors", who="the hub")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "hub_logs_errors: the test makes the hub log an error on purpose"
    )
