"""The hub's settings: defaults, then a TOML file, then TRIOHUB_* variables, then flags."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from hub.errors import ConfigError

ENV_PREFIX: Final = "TRIOHUB_"


def _origins(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"origins must be a list of strings, got {value!r}")
    return tuple(value)


@attrs.frozen(kw_only=True)
class HubConfig:
    """Everything `hub serve` can be told. See docs/configuration.md."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: Allowed Origin headers for WebSocket requests; None allows any.
    origins: tuple[str, ...] | None = attrs.field(default=None, converter=_origins)
    certfile: str | None = None
    keyfile: str | None = None
    #: The hub protocol's WebSocket path.
    path: str = "/ws"
    max_message_size: int = 1024 * 1024
    ping_interval: float = 20.0
    idle_timeout: float = 60.0
    #: On shutdown, how long each connection may take to write what is queued
    #: for it before it is closed with 1001.
    drain_seconds: float = 5.0
    #: A client whose socket takes nothing for this long is evicted (1013).
    write_timeout: float = 10.0
    #: Messages that may wait for one client beyond what its socket took;
    #: past that the client is evicted (1013, "slow consumer").
    outbox_capacity: int = 1024
    #: How long a WebSocket closing handshake may take.
    close_timeout: float = 5.0
    #: Most topics one connection may have joined or be joining at once.
    max_topics_per_connection: int = 100
    #: Log level for `hub serve`.
    log_level: str = "info"

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if not self.path.startswith("/"):
            raise ConfigError(f"path must start with '/', got {self.path!r}")
        if self.keyfile and not self.certfile:
            raise ConfigError("keyfile given without certfile")
        for name in ("write_timeout", "close_timeout", "drain_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("outbox_capacity", "max_topics_per_connection", "max_message_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.idle_timeout <= self.ping_interval:
            raise ConfigError(
                f"idle_timeout ({self.idle_timeout}) must exceed ping_interval "
                f"({self.ping_interval})"
            )

    @property
    def tls(self) -> bool:
        return self.certfile is not None


_FIELDS: Final = {field.name: field for field in attrs.fields(HubConfig)}


def _convert(name: str, raw: object) -> object:
    """Turn a TOML or environment value into the field's type, or say what is wrong."""
    field = _FIELDS[name]
    kind = str(field.type)
    try:
        if name == "origins":
            return _origins(raw)
        if kind == "int":
            if isinstance(raw, bool):
                raise ValueError
            return int(raw)  # type: ignore[call-overload]
        if kind == "float":
            return float(raw)  # type: ignore[arg-type]
        if isinstance(raw, str):
            return raw
        raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name!r} must be of type {kind}, got {raw!r}") from None


def load_config(
    *,
    file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> HubConfig:
    """Build the configuration: defaults < TOML `file` < TRIOHUB_* variables < `overrides`.

    The file may be named by TRIOHUB_CONFIG too. Its settings sit at the top
    level or under a `[hub]` table. Unknown settings are an error (ConfigError),
    so a typo does not pass unnoticed.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    file = file or environ.get(f"{ENV_PREFIX}CONFIG")
    if file:
        path = Path(file)
        try:
            document = tomllib.loads(path.read_text())
        except OSError as error:
            raise ConfigError(f"cannot read config file {str(path)!r}: {error}") from error
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from error
        table = document.get("hub", document)
        if not isinstance(table, dict):
            raise ConfigError(f"[hub] in {str(path)!r} must be a table")
        for name, raw in table.items():
            if name not in _FIELDS:
                known = ", ".join(sorted(_FIELDS))
                raise ConfigError(f"unknown setting {name!r} in {str(path)!r}; known: {known}")
            values[name] = _convert(name, raw)
    for name in _FIELDS:
        raw_env = environ.get(f"{ENV_PREFIX}{name.upper()}")
        if raw_env is not None:
            values[name] = _convert(name, raw_env)
    for name, value in (overrides or {}).items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {name!r}")
        if value is not None:
            values[name] = value
    try:
        return HubConfig(**values)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from error
