"""triohub: an Erlang-style actor hub for realtime services on trio.

`hub.protocol` is the sans-IO wire protocol (frames, codecs, per-connection
state machines); it imports nothing from the rest of the hub but `hub.errors`.
The gateway, connection actors, topics and services build on it and on the
`actors` runtime.

The names an application needs are importable from here (`from hub import
Hub, RoomService, serve_hub`). They load on first use, so that
`import hub.protocol` stays free of trio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub import client
    from hub.app import Hub, HubRuntime, serve_hub
    from hub.config import (
        HttpConfig,
        HubConfig,
        LoggingConfig,
        NotificationsConfig,
        PresenceConfig,
        ServerConfig,
        SessionConfig,
        TopicsConfig,
        UsersConfig,
        WebSocketConfig,
        load_config,
    )
    from hub.connections import Connection
    from hub.errors import ConnectRefusedError, HubError, JoinRefusedError, ServiceError
    from hub.gateway import AuthenticationError, ConnectRequest
    from hub.identity import Identity
    from hub.notifications import Notification
    from hub.permissions import PERSONAL, Allow, Permissions
    from hub.presence import Presence
    from hub.protocol import Payload
    from hub.services import EchoService, PersonalService, RoomService, Service
    from hub.tokens import TokenVerifier
    from hub.topics import Member, Topic
    from hub.users import UserOffline

_EXPORTS = {
    "Allow": "hub.permissions",
    "Identity": "hub.identity",
    "PERSONAL": "hub.permissions",
    "Permissions": "hub.permissions",
    "TokenVerifier": "hub.tokens",
    "AuthenticationError": "hub.gateway",
    "ConnectRefusedError": "hub.errors",
    "Connection": "hub.connections",
    "Notification": "hub.notifications",
    "NotificationsConfig": "hub.config",
    "PersonalService": "hub.services",
    "UserOffline": "hub.users",
    "UsersConfig": "hub.config",
    "ConnectRequest": "hub.gateway",
    "EchoService": "hub.services",
    "Hub": "hub.app",
    "HttpConfig": "hub.config",
    "HubConfig": "hub.config",
    "LoggingConfig": "hub.config",
    "ServerConfig": "hub.config",
    "SessionConfig": "hub.config",
    "TopicsConfig": "hub.config",
    "WebSocketConfig": "hub.config",
    "HubError": "hub.errors",
    "HubRuntime": "hub.app",
    "JoinRefusedError": "hub.errors",
    "Member": "hub.topics",
    "Payload": "hub.protocol",
    "Presence": "hub.presence",
    "PresenceConfig": "hub.config",
    "RoomService": "hub.services",
    "Service": "hub.services",
    "ServiceError": "hub.errors",
    "Topic": "hub.topics",
    "load_config": "hub.config",
    "serve_hub": "hub.app",
}

__all__ = [
    "PERSONAL",
    "Allow",
    "AuthenticationError",
    "ConnectRefusedError",
    "ConnectRequest",
    "Connection",
    "EchoService",
    "HttpConfig",
    "Hub",
    "HubConfig",
    "HubError",
    "HubRuntime",
    "Identity",
    "JoinRefusedError",
    "LoggingConfig",
    "Member",
    "Notification",
    "NotificationsConfig",
    "Payload",
    "Permissions",
    "PersonalService",
    "Presence",
    "PresenceConfig",
    "RoomService",
    "ServerConfig",
    "Service",
    "ServiceError",
    "SessionConfig",
    "TokenVerifier",
    "Topic",
    "TopicsConfig",
    "UserOffline",
    "UsersConfig",
    "WebSocketConfig",
    "client",
    "load_config",
    "serve_hub",
]


def __getattr__(name: str) -> Any:
    if name == "client":
        return importlib.import_module("hub.client")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hub' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
