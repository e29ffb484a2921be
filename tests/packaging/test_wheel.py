"""The wheel: it builds as a user builds it, installs into a fresh virtualenv, and runs the demo.

`python -m build` builds the sdist and the wheel from it, from a copy of the
checkout's files (what git tracks, or would); the wheel then goes into a
new virtualenv with its dependencies from the package index, as `pip
install` does anywhere, and `hub serve` runs from outside the checkout: the
demo page, the JavaScript client and the observer's files must come from
the wheel.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

from hub.allocator import glibc

REPO = Path(__file__).resolve().parents[2]

# Building (in isolated environments) and installing fetch from the package index.
pytestmark = pytest.mark.timeout(600)

PACKAGED = [
    "hub/static/index.html",
    "hub/static/triohub.js",
    "hub/static/chat.js",
    "hub/static/chat.css",
    "hub/observer/page.html",
    "hub/observer/static/observer.js",
    "hub/observer/static/observer.css",
    "actors/__init__.py",
    "hub/cli.py",
]


def run(*command: str | Path, cwd: Path, timeout: float = 300) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def copy_checkout(destination: Path) -> Path:
    """The files git tracks or would (not .venv, caches or build output), copied."""
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO)
    for name in listed.splitlines():
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def test_the_wheel_builds_installs_in_a_fresh_venv_and_serves_the_demo(tmp_path: Path) -> None:
    source = copy_checkout(tmp_path / "source")
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, source, cwd=tmp_path, timeout=400)
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"triohub-{version}-py3-none-any.whl"
    assert len(list(dist.glob("*.tar.gz"))) == 1
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(f"triohub-{version}.dist-info/entry_points.txt").decode()
    missing = [name for name in PACKAGED if name not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert not any(name.startswith(("tests/", "examples/", "benchmarks/")) for name in names)
    assert "hub = hub.__main__:main" in entry_points

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path)
    where = run(venv / "bin" / "python", "-c", "import hub; print(hub.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(venv), where
    assert run(venv / "bin" / "hub", "--version", cwd=tmp_path).startswith(f"triohub {version} ")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    process = subprocess.Popen(
        [venv / "bin" / "hub", "serve", "--port", "0", "--observer"],
        cwd=elsewhere,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("triohub: serving 'triohub demo' at http://127.0.0.1:"), first
        url = first.split(" at ", 1)[1].split(" ", 1)[0]
        if glibc():  # started again on glibc's allocator, as the same process
            environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
            assert b"PYTHONMALLOC=malloc" in environ
        for path, expected in [
            ("", b"triohub chat"),
            ("triohub.js", b"export class TrioHub"),
            ("chat.js", b"triohub.js"),
            ("observer/", b"triohub observer"),
            ("observer/static/observer.js", b'"$observer"'),
        ]:
            with urllib.request.urlopen(url + path, timeout=10) as response:
                assert response.status == 200, path
                assert expected in response.read(), path
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
