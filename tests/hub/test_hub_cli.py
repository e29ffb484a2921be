"""`hub serve` as a real subprocess: startup line, /healthz, SIGTERM, and refusals."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import trio
from hub_support import open_client
from wire_support import http_get

SERVE = [sys.executable, "-m", "hub", "serve"]


def _clean_environment() -> dict[str, str]:
    """This environment without TRIOHUB_* settings, so only the test's flags count."""
    return {name: value for name, value in os.environ.items() if not name.startswith("TRIOHUB_")}


async def _read_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> str:
    while b"\n" not in buffer:
        chunk = await stream.receive_some(4096)
        assert chunk, f"the process closed its stdout; so far: {bytes(buffer)!r}"
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode()


async def test_serve_prints_its_url_serves_and_stops_on_sigterm(tmp_path):
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            [*SERVE, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            env=_clean_environment(),
        )
        try:
            assert process.stdout is not None
            output = bytearray()
            line = await _read_line(process.stdout, output)
            match = re.fullmatch(
                r"triohub: serving '.*' at (http://127\.0\.0\.1:(\d+)/) "
                r"\(WebSocket (ws://127\.0\.0\.1:\d+/ws)\); Ctrl\+C to stop",
                line,
            )
            assert match is not None, line
            port, websocket_url = int(match.group(2)), match.group(3)
            assert port > 0

            response = await http_get(port, "/healthz")
            assert response.status == 200
            assert json.loads(response.body)["status"] == "ok"

            async with open_client(websocket_url, "msgpack") as client:
                await client.join_ok("room:cli", {"user": "ann"})
                process.send_signal(signal.SIGTERM)
                frames, reason = await client.expect_close()
                # Nothing came before the Close (a join that does not ask
                # for presence pushes is sent none).
                assert frames == []
                assert (reason.code, reason.reason) == (1001, "server shutting down")

            assert await process.wait() == 0
            rest = bytearray()
            while chunk := await process.stdout.receive_some(4096):
                rest += chunk
            text = bytes(output + rest).decode()
            assert "SIGTERM, shutting down (1 connection to close)" in text
            assert text.rstrip().endswith("triohub: stopped")
            assert process.stderr is not None
            errors = bytearray()
            while chunk := await process.stderr.receive_some(4096):
                errors += chunk
            assert b"Traceback" not in errors, errors.decode()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _serve_to_the_end(
    tmp_path: pathlib.Path, *arguments: str
) -> subprocess.CompletedProcess[bytes]:
    """Run `hub serve ARGUMENTS` in `tmp_path` until it exits; its output captured."""
    with trio.fail_after(30):
        return await trio.run_process(
            [*SERVE, *arguments],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=tmp_path,
            env=_clean_environment(),
        )


async def test_serve_with_an_app_that_does_not_exist_exits_2(tmp_path):
    result = await _serve_to_the_end(tmp_path, "--port", "0", "nosuch:app")
    assert result.returncode == 2
    error = result.stderr.decode()
    assert "cannot import 'nosuch'" in error and "nosuch:app" in error, error
    assert result.stdout == b""


async def test_serve_refuses_a_config_file_with_an_unknown_setting(tmp_path):
    config = tmp_path / "hub.toml"
    config.write_text("[server]\nport = 0\n[websocket]\nmax_mesage_size = 10\n")
    result = await _serve_to_the_end(tmp_path, "--config", str(config))
    assert result.returncode == 2
    error = result.stderr.decode()
    assert "unknown setting websocket.max_mesage_size" in error, error
    assert str(config) in error
