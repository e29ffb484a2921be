"""The docs match the code: links lead somewhere, the README's commands and code work as written."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))

pytestmark = pytest.mark.timeout(60)


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def command_lines(text: str) -> list[str]:
    """The lines of the indented (4-space) blocks outside fenced ones, without their comments."""
    commands = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("    ") and line.strip():
            commands.append(re.sub(r"\s+# .*$", "", line.strip()))
    return commands


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda path: path.name)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page: Path) -> None:
    text = page.read_text()
    for target, anchor in re.findall(r"\]\(([^)\s#]*)(#[^)\s]*)?\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        linked = (page.parent / target).resolve() if target else page
        assert linked.exists(), f"{page.name} links to {target}, which is not in the repository"
        if anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", linked.read_text(), re.MULTILINE)
            assert anchor[1:] in {slug(heading) for heading in headings}, (page.name, anchor)


def test_the_readme_commands_work_from_the_project_directory_in_any_shell() -> None:
    commands = command_lines(README.read_text())
    assert "./scripts/demo" in commands
    for command in commands:
        program = shlex.split(command, comments=True)[0]
        # Neither `hub` nor `python` is on PATH after ./scripts/demo: a
        # command names the virtualenv's, or a script, or the system's python3.
        assert program.startswith(("./scripts/", ".venv/bin/", "/opt/triohub/bin/", "python3")), (
            command
        )
        if program.startswith((".venv/bin/", "./scripts/")):
            assert (REPO / program).exists(), f"the README runs {program}, which is not there"


@pytest.mark.parametrize(
    "command",
    [".venv/bin/hub --version", ".venv/bin/python examples/echo.py"],
)
def test_readme_commands_run_as_written(command: str) -> None:
    assert command in command_lines(README.read_text())
    result = subprocess.run(
        shlex.split(command), cwd=REPO, capture_output=True, text=True, timeout=45, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_the_readme_application_serves_as_the_readme_says(tmp_path: Path) -> None:
    blocks = fenced_blocks(README.read_text(), "python")
    chat = next(block for block in blocks if "# chat.py" in block)
    (tmp_path / "chat.py").write_text(chat)
    command = ".venv/bin/hub serve chat:app --port 8000"
    assert command in command_lines(README.read_text())
    arguments = shlex.split(command.replace("8000", "0"))
    process = subprocess.Popen(
        [str(REPO / arguments[0]), *arguments[1:]],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("triohub: serving 'my chat' at http://127.0.0.1:"), first
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_readme_service_is_valid_python_with_the_errors_argument_order() -> None:
    (lobby,) = [block for block in fenced_blocks(README.read_text(), "python") if "Lobby" in block]
    namespace: dict[str, object] = {}
    exec(compile(lobby, "README.md", "exec"), namespace)
    from hub import Service

    assert issubclass(namespace["Lobby"], Service)  # type: ignore[arg-type]


def test_topic_patterns_the_readme_names_are_routed_somewhere() -> None:
    readme = README.read_text()
    routed = readme + (REPO / "hub" / "demo.py").read_text()
    routed += "".join(path.read_text() for path in (REPO / "examples").glob("*.py"))
    for pattern in set(re.findall(r"`(\w+:\*)`", readme)):
        assert f'route("{pattern}"' in routed, f"the README names {pattern}, which nothing serves"


async def test_the_http_routes_example_of_the_services_guide_serves(
    nursery: trio.Nursery,
) -> None:
    services = (REPO / "docs" / "services.md").read_text()
    (example,) = [block for block in fenced_blocks(services, "python") if "http_routes" in block]
    namespace: dict[str, object] = {}
    exec(compile(example, "services.md", "exec"), namespace)
    app = namespace["app"]
    assert isinstance(app, Hub)
    with trio.fail_after(20):
        config = HubConfig.from_settings({"server": {"port": 0}})
        runtime: HubRuntime = await nursery.start(serve_hub, app, config)
        stream = await trio.open_tcp_stream("127.0.0.1", runtime.gateway.port)  # type: ignore[union-attr]
        await stream.send_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := await stream.receive_some(4096):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\n1.4.2\n")


def test_the_test_script_says_what_it_installs() -> None:
    script = (REPO / "scripts" / "test").read_text()
    assert "redis" not in script  # nothing installs or starts one
    assert "chromium" in script


def test_python_version_requirement_is_the_one_declared() -> None:
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert declared == ">=3.11"
    assert "Python 3.11 or newer" in README.read_text()
    assert sys.version_info >= (3, 11)
