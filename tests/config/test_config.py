"""Settings from defaults, a TOML file, TRIOHUB_* variables and flags, in that order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hub.cli import load_app
from hub.config import HubConfig, load_config
from hub.errors import ConfigError


def test_defaults() -> None:
    config = load_config(environ={})
    assert config == HubConfig()
    assert (config.host, config.port, config.path, config.origins) == (
        "127.0.0.1",
        8000,
        "/ws",
        None,
    )


def test_precedence_file_then_environment_then_overrides(tmp_path: Path) -> None:
    file = tmp_path / "hub.toml"
    file.write_text(
        '[hub]\nport = 9001\nhost = "0.0.0.0"\norigins = ["https://a.example"]\n'
        "idle_timeout = 90\n"
    )
    config = load_config(file=file, environ={"TRIOHUB_PORT": "9002"}, overrides={"port": None})
    assert config.port == 9002  # the variable beats the file; a None flag changes nothing
    assert config.host == "0.0.0.0"
    assert config.origins == ("https://a.example",)
    assert config.idle_timeout == 90.0
    config = load_config(file=file, environ={"TRIOHUB_PORT": "9002"}, overrides={"port": 9003})
    assert config.port == 9003


def test_file_named_by_environment_and_top_level_keys(tmp_path: Path) -> None:
    file = tmp_path / "flat.toml"
    file.write_text("port = 7000\n")
    assert load_config(environ={"TRIOHUB_CONFIG": str(file)}).port == 7000


def test_origins_from_environment_are_comma_separated() -> None:
    config = load_config(environ={"TRIOHUB_ORIGINS": "https://a.example, https://b.example"})
    assert config.origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot = 1\n", "unknown setting 'prot'"),
        ('port = "many"\n', "setting 'port' must be of type int"),
        ("port = 70000\n", "port must be 0..65535"),
        ("ping_interval = 30\nidle_timeout = 10\n", "idle_timeout (10.0) must exceed"),
        ("port = \n", "is not valid TOML"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(file=file, environ={})


def test_missing_file_and_bad_variable() -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(file="/nonexistent/hub.toml", environ={})
    with pytest.raises(ConfigError, match="setting 'drain_seconds' must be of type float"):
        load_config(environ={"TRIOHUB_DRAIN_SECONDS": "soon"})


def test_load_app() -> None:
    from hub.demo import app

    assert load_app("hub.demo:app") is app
    with pytest.raises(ConfigError, match="module:attribute"):
        load_app("hub.demo")
    with pytest.raises(ConfigError, match="cannot import 'nosuch'"):
        load_app("nosuch:app")
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        load_app("hub.demo:nope")
    with pytest.raises(ConfigError, match=r"not a hub\.Hub"):
        load_app("hub.demo:RoomService")
