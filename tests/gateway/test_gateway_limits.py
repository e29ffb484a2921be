"""At the open-file limit: the gateway waits and says so once, and serves on."""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from gateway_support import StartGateway
from wire_support import OPCODE_TEXT, RawConnection, client_frame

import hub.gateway.serve as serve_module


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def tight_file_limit() -> Iterator[None]:
    """Leave this process a few files to spare for the test, then restore the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield None
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_running_out_of_files_is_one_log_line_and_the_hub_serves_on(
    start_gateway: StartGateway,
    tight_file_limit: None,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        gateway = await start_gateway()
        first = await RawConnection.open_websocket(gateway.port, "/echo")
        # Room for a few more client sockets, none for the server's accepts.
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files() + 8, hard))
        clients = []
        with caplog.at_level(logging.WARNING, logger="hub.gateway.serve"):
            try:
                for _ in range(8):
                    clients.append(await trio.open_tcp_stream("127.0.0.1", gateway.port))
            except OSError:
                pass  # this process ran out first: the server's accepts fail all the same
            # Five (virtual) seconds: the accept loop tries again every 0.1 s.
            await trio.sleep(5 * serve_module.ACCEPT_LOG_INTERVAL_SECONDS / 10)
            warnings = [r for r in caplog.records if r.name == "hub.gateway.serve"]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "ulimit -n" in warnings[0].getMessage()
        assert warnings[0].exc_info is None  # a line, not a traceback
        # The connection that was open carries on.
        await first.send_bytes(client_frame(OPCODE_TEXT, b"still here"))
        frame = await first.read_frame()
        assert frame is not None and frame.payload == b"still here"
        for client in clients:
            await client.aclose()
        await first.aclose()
