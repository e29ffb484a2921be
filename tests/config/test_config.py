"""One tree of settings: defaults < a TOML file < TRIOHUB_* variables < overrides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hub.app import gateway_config, session_settings
from hub.cli import load_app
from hub.config import (
    HubConfig,
    ServerConfig,
    TopicsConfig,
    WebSocketConfig,
    format_toml,
    load_config,
    setting_names,
)
from hub.errors import ConfigError
from hub.gateway import GatewayConfig
from hub.protocol import MAX_MALFORMED, MAX_MESSAGE_BYTES, MAX_TOPICS
from hub.session import SessionSettings
from hub.topics import (
    EMPTY_TOPIC_GRACE_SECONDS,
    MAX_CALL_TIMEOUT_SECONDS,
    TOPIC_MAILBOX_CAPACITY,
    TOPIC_START_TIMEOUT_SECONDS,
)


def write(tmp_path: Path, text: str, name: str = "hub.toml") -> Path:
    file = tmp_path / name
    file.write_text(text)
    return file


# --- each source ---------------------------------------------------------------------


def test_defaults_are_the_components_own() -> None:
    config = load_config(environ={})
    assert config == HubConfig()
    assert (config.server.host, config.server.port, config.server.path) == (
        "127.0.0.1",
        8000,
        "/ws",
    )
    assert config.server.origins is None and not config.server.tls
    # The module constants are the defaults' one source.
    assert config.websocket.max_message_size == MAX_MESSAGE_BYTES
    assert config.session.max_topics == MAX_TOPICS
    assert config.session.max_malformed == MAX_MALFORMED
    assert config.topics.empty_grace_seconds == EMPTY_TOPIC_GRACE_SECONDS
    assert config.topics.mailbox_capacity == TOPIC_MAILBOX_CAPACITY
    assert config.topics.start_timeout_seconds == TOPIC_START_TIMEOUT_SECONDS
    assert config.topics.max_call_timeout_seconds == MAX_CALL_TIMEOUT_SECONDS
    # The settings the topics take.
    topics = config.topics
    assert (topics.max_live, topics.hook_timeout_seconds) == (10_000, 5.0)
    assert (topics.history_size, topics.history_retention_seconds) == (100, 300.0)
    assert config.session.joins_per_second == 20.0
    assert config.logging.level == "info"


def test_a_toml_file_sets_settings_by_section(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        '[server]\nport = 9001\nhost = "0.0.0.0"\norigins = ["https://a.example"]\n'
        "[websocket]\nidle_timeout = 90\n"
        "[topics]\nempty_grace_seconds = 5\nmax_live = 20\n",
    )
    config = load_config(file=file, environ={})
    assert (config.server.port, config.server.host) == (9001, "0.0.0.0")
    assert config.server.origins == ("https://a.example",)
    assert config.websocket.idle_timeout == 90.0
    assert (config.topics.empty_grace_seconds, config.topics.max_live) == (5.0, 20)
    # What the file leaves out keeps its default, section by section.
    assert config.websocket.ping_interval == 20.0
    assert config.session == HubConfig().session


def test_the_file_may_be_named_by_a_variable(tmp_path: Path) -> None:
    file = write(tmp_path, "[server]\nport = 7000\n")
    assert load_config(environ={"TRIOHUB_CONFIG": str(file)}).server.port == 7000


def test_variables_are_section_double_underscore_setting() -> None:
    config = load_config(
        environ={
            "TRIOHUB_TOPICS__EMPTY_GRACE_SECONDS": "5",
            "TRIOHUB_SERVER__PORT": "9002",
            "triohub_session__max_topics": "7",  # any case
            "TRIOHUB_LOGGING__LEVEL": "DEBUG",
            "TRIOHUB_SERVER__ORIGINS": "https://a.example, https://b.example",
            "PATH": "/usr/bin",  # not ours
        }
    )
    assert config.topics.empty_grace_seconds == 5.0
    assert config.server.port == 9002
    assert config.session.max_topics == 7
    assert config.logging.level == "debug"
    assert config.server.origins == ("https://a.example", "https://b.example")


def test_overrides_use_dotted_names_and_none_leaves_a_setting_alone() -> None:
    config = load_config(
        environ={},
        overrides={"server.port": 9003, "server.host": None, "topics.max_crashes": "5"},
    )
    assert (config.server.port, config.server.host, config.topics.max_crashes) == (
        9003,
        "127.0.0.1",
        5,
    )


def test_in_code_by_section_or_from_a_tree() -> None:
    config = HubConfig(server=ServerConfig(port=0), topics=TopicsConfig(empty_grace_seconds=1.5))
    assert config == HubConfig.from_settings(
        {"server": {"port": 0}, "topics": {"empty_grace_seconds": 1.5}}
    )
    with pytest.raises(
        ConfigError, match=r"^setting websocket\.write_timeout must be a number > 0"
    ):
        HubConfig.from_settings({"websocket": {"write_timeout": 0}})
    with pytest.raises(ValueError):
        HubConfig(websocket=WebSocketConfig(ping_interval=30, idle_timeout=10))


# --- precedence ----------------------------------------------------------------------


def test_precedence_defaults_file_variables_overrides(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "[server]\nport = 9001\n[topics]\nmax_live = 10\nhistory_size = 7\n"
        "[websocket]\nwrite_timeout = 3\n",
    )
    environ = {"TRIOHUB_SERVER__PORT": "9002", "TRIOHUB_TOPICS__MAX_LIVE": "20"}
    config = load_config(file=file, environ=environ, overrides={"server.port": 9003})
    assert config.server.port == 9003  # overrides beat variables, file and defaults
    assert config.topics.max_live == 20  # a variable beats the file
    assert config.topics.history_size == 7  # the file beats the default
    assert config.websocket.write_timeout == 3.0
    assert config.websocket.close_timeout == 5.0  # the default, with nothing else
    config = load_config(file=file, environ=environ, overrides={"server.port": None})
    assert config.server.port == 9002


def test_printed_settings_read_back_to_the_same_config(tmp_path: Path) -> None:
    config = load_config(
        environ={},
        overrides={
            "server.origins": ("https://a.example",),
            "topics.empty_grace_seconds": 2.5,
            "logging.level": "warning",
        },
    )
    file = write(tmp_path, format_toml(config))
    assert load_config(file=file, environ={}) == config


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[topics]\nempty_grace_seconds = "x"\n',
            "setting topics.empty_grace_seconds must be a number > 0, got 'x' (in {file})",
        ),
        ("[topics]\nmax_live = 0\n", "setting topics.max_live must be an integer >= 1, got 0"),
        ("[topics]\nmax_live = 2.5\n", "setting topics.max_live must be an integer >= 1, got 2.5"),
        (
            "[topics]\nmax_live = true\n",
            "setting topics.max_live must be an integer >= 1, got True",
        ),
        ("[server]\nport = 70000\n", "setting server.port must be an integer in 0..65535"),
        ('[server]\npath = "ws"\n', "setting server.path must be a path starting with '/'"),
        (
            "[http]\nmax_head_size = 65536\n",
            "setting http.max_head_size must be an integer in 1..16384",
        ),
        ('[logging]\nlevel = "loud"\n', "setting logging.level must be one of debug, info"),
        (
            "[server]\nprot = 1\n",
            "unknown setting server.prot (in {file}); did you mean server.port?",
        ),
        ("port = 1\n", "unknown setting port (in {file}); did you mean server.port?"),
        ("[hub]\nport = 1\n", "unknown section [hub] (in {file}); the sections are server,"),
        ("[topic]\nmax_live = 1\n", "unknown section [topic] (in {file}); did you mean [topics]?"),
        ("server = 1\n", "setting server must be a table of settings, got 1"),
        (
            "[websocket]\nping_interval = 30\nidle_timeout = 10\n",
            "setting websocket.idle_timeout (10.0) must exceed websocket.ping_interval (30.0)",
        ),
        (
            '[server]\nkeyfile = "key.pem"\n',
            "setting server.keyfile is given without server.certfile (in {file})",
        ),
        (
            "[topics]\ncall_timeout_seconds = 90\n",
            "setting topics.call_timeout_seconds (90.0) must not exceed "
            "topics.max_call_timeout_seconds (60.0)",
        ),
        ("[server]\nport = \n", "is not valid TOML"),
    ],
)
def test_a_bad_file_says_which_setting_and_why(tmp_path: Path, text: str, message: str) -> None:
    file = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(file=file, environ={})
    assert message.format(file=file) in str(raised.value)


def test_every_problem_is_told_one_line_each(tmp_path: Path) -> None:
    file = write(tmp_path, '[server]\nport = -1\nnope = 1\n[topics]\nmax_live = "many"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(file=file, environ={})
    lines = str(raised.value).splitlines()
    assert len(lines) == 3, lines
    assert {re.findall(r"[a-z]+\.[a-z_]+", line)[0] for line in lines} == {
        "server.port",
        "server.nope",
        "topics.max_live",
    }


def test_bad_variables_are_named() -> None:
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "setting server.drain_seconds must be a number > 0, got 'soon' "
            "(from TRIOHUB_SERVER__DRAIN_SECONDS)"
        ),
    ):
        load_config(environ={"TRIOHUB_SERVER__DRAIN_SECONDS": "soon"})
    with pytest.raises(
        ConfigError, match=re.escape("unknown setting topics.nope (from TRIOHUB_TOPICS__NOPE)")
    ):
        load_config(environ={"TRIOHUB_TOPICS__NOPE": "1"})
    # The flat names of before, and anything else under the prefix, are refused.
    with pytest.raises(
        ConfigError,
        match=re.escape("unknown variable TRIOHUB_PORT; did you mean TRIOHUB_SERVER__PORT?"),
    ):
        load_config(environ={"TRIOHUB_PORT": "1"})
    with pytest.raises(ConfigError, match="unknown variable TRIOHUB_CHROMIUM: settings are"):
        load_config(environ={"TRIOHUB_CHROMIUM": "/usr/bin/chromium"})


def test_bad_overrides_are_named_with_their_source() -> None:
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "setting server.port must be an integer in 0..65535, got 'x' (from the command line)"
        ),
    ):
        load_config(
            environ={}, overrides={"server.port": "x"}, overrides_source="from the command line"
        )
    with pytest.raises(ConfigError, match=re.escape("unknown setting topics.grace")):
        load_config(environ={}, overrides={"topics.grace": 1})


def test_a_missing_file() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("cannot read config file '/nonexistent/hub.toml'")
    ):
        load_config(file="/nonexistent/hub.toml", environ={})


# --- what the running hub hands down ---------------------------------------------------


def test_the_gateway_gets_its_part_of_the_settings() -> None:
    config = HubConfig.from_settings(
        {
            "server": {"port": 0, "origins": ["https://a.example"]},
            "http": {
                "head_timeout": 3,
                "max_head_size": 4096,
                "max_body_size": 10,
                "auth_timeout": 2,
            },
            "websocket": {
                "max_message_size": 5_000_000,
                "ping_interval": 5,
                "idle_timeout": 15,
                "close_timeout": 1,
                "outbox_capacity": 8,
                "max_fragments": 4,
                "message_timeout": 7,
            },
            "limits": {
                "max_connections": 0,
                "max_connections_per_address": 3,
                "handshakes_per_second": 2,
                "unlimited_addresses": [],
            },
        }
    )
    assert gateway_config(config) == GatewayConfig(
        host="127.0.0.1",
        port=0,
        origins=frozenset({"https://a.example"}),
        max_message_size=5_000_000,
        ping_interval=5,
        idle_timeout=15,
        head_timeout=3,
        max_head_size=4096,
        max_body_size=10,
        auth_timeout=2,
        close_timeout=1,
        outbox_capacity=8,
        max_fragments=4,
        message_timeout=7,
        max_connections=None,  # 0 in the settings: no limit
        max_connections_per_address=3,
        handshakes_per_second=2,
        unlimited_addresses=(),
    )
    # The two sets of defaults are the same defaults.
    assert gateway_config(HubConfig()) == GatewayConfig()


def test_every_session_gets_its_part_and_the_codec_limit() -> None:
    config = HubConfig.from_settings(
        {
            "websocket": {"max_message_size": 3_000_000, "write_timeout": 2, "close_timeout": 4},
            "session": {
                "max_topics": 3,
                "joins_per_second": 2,
                "max_malformed": 4,
                "malformed_window_seconds": 8,
            },
            "topics": {"call_timeout_seconds": 1, "max_call_timeout_seconds": 9},
        }
    )
    assert session_settings(config) == SessionSettings(
        max_message_size=3_000_000,
        max_malformed=4,
        malformed_window_seconds=8,
        call_timeout=1,
        max_call_timeout=9,
        write_timeout=2,
        close_timeout=4,
        max_topics=3,
        joins_per_second=2,
    )


def test_docs_list_every_setting_with_its_default_and_variable() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    rows = {
        match[1]: (match[2], match[3])
        for match in re.finditer(
            r"^\| `([a-z_]+\.[a-z_]+)` \| ([^|]+?) \| `([A-Z_]+)` \|", docs, re.MULTILINE
        )
    }
    defaults = HubConfig()
    for setting in setting_names():
        assert setting in rows, f"docs/configuration.md does not list {setting}"
        default, variable = rows[setting]
        assert variable == "TRIOHUB_" + setting.replace(".", "__").upper()
        section, name = setting.split(".")
        value = getattr(getattr(defaults, section), name)
        shown = str(value).lower() if isinstance(value, bool) else value  # as TOML writes it
        assert default == ("none" if value is None else f"`{shown}`") or (
            setting == "server.origins" and default == "any"
        ), (setting, default, value)
    assert set(rows) == set(setting_names())


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
