"""Who may do what on a route's topics: declared per topic pattern, checked by the hub.

    app.route("room:*", RoomService, permissions=Permissions(
        join=Allow.AUTHENTICATED, publish=Allow.GRANTED, history=Allow.ANYONE))
    app.route("user:*", InboxService, permissions=PERSONAL)

Five actions: `join` a topic, `publish` to it, `call` its service, read its
`presence`, read its `history`. Each is allowed by one rule:

- `Allow.ANYONE`: every connection, anonymous ones too (the default);
- `Allow.AUTHENTICATED`: a connection with a user (a token, or an identity
  from the application's `authenticate` hook; `hub.identity.user_of`);
- `Allow.GRANTED`: a connection whose token grants the action on the topic
  (its `topics` claim, `hub.tokens`);
- `Allow.OWNER`: only the user the topic is named after, the part of the
  topic the route's `*` stands for (`user:ann` is user ann's on `user:*`);
- `Allow.SERVICE`: the topic's service decides, in its `authorize` hook
  (which may wait on a database);
- or a function `check(access) -> bool` of the application's, with the
  connection's identity, the topic and the action (it must not wait).

The session checks every rule but SERVICE before the request reaches the
topic (a refusal costs the topic nothing); the topic actor asks its service
for SERVICE. A refusal is an error Reply (or Error frame) with code
`forbidden` and a message that says what was missing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Final, TypeAlias, TypeGuard

import attrs

from hub.identity import Identity, user_of

__all__ = [
    "ACTIONS",
    "PERSONAL",
    "Access",
    "Action",
    "Allow",
    "Grants",
    "Permissions",
    "Rule",
    "action_of_call",
    "grants_of",
    "pattern_matches",
]


class Action(enum.StrEnum):
    """What a connection does on a topic, each with a rule of its own."""

    JOIN = "join"
    PUBLISH = "publish"
    CALL = "call"
    PRESENCE = "presence"
    HISTORY = "history"


ACTIONS: Final = frozenset(Action)


class Allow(enum.Enum):
    """The hub's own rules (see the module docstring)."""

    ANYONE = "anyone"
    AUTHENTICATED = "authenticated"
    GRANTED = "granted"
    OWNER = "owner"
    SERVICE = "service"


@attrs.frozen
class Access:
    """What a rule function sees: who asks, for which topic and action, under which pattern."""

    identity: object
    topic: str
    action: Action
    pattern: str

    @property
    def user(self) -> str | None:
        """The user asking (`hub.identity.user_of`), None if anonymous."""
        return user_of(self.identity)


Rule: TypeAlias = Allow | Callable[[Access], bool]

# A token's grants: (topic pattern, the actions it grants), in the token's order.
Grants: TypeAlias = tuple[tuple[str, frozenset[Action]], ...]


@attrs.frozen
class Permissions:
    """The rule of each action on one route's topics (all `Allow.ANYONE` by default)."""

    join: Rule = Allow.ANYONE
    publish: Rule = Allow.ANYONE
    call: Rule = Allow.ANYONE
    presence: Rule = Allow.ANYONE
    history: Rule = Allow.ANYONE

    def __attrs_post_init__(self) -> None:
        for action in Action:
            rule = getattr(self, action.value)
            if not isinstance(rule, Allow) and not callable(rule):
                raise TypeError(
                    f"permission {action.value!r} must be an Allow or a function of an "
                    f"Access returning a bool, got {rule!r}"
                )

    def rule(self, action: Action) -> Rule:
        """The rule of `action`."""
        rule: Rule = getattr(self, action.value)
        return rule

    def refusal(self, action: Action, identity: object, topic: str, pattern: str) -> str | None:
        """Why `identity` may not do `action` on `topic` (served by `pattern`); None if it may.

        `Allow.SERVICE` passes here: the topic's service decides later.
        """
        rule: Rule = getattr(self, action.value)
        if rule is Allow.ANYONE or rule is Allow.SERVICE:
            return None  # the common case, answered before anything else
        doing = _DOING[action]
        match rule:
            case Allow.AUTHENTICATED:
                if user_of(identity) is not None:
                    return None
                return f"{doing} topic {topic!r} needs an authenticated connection (a token)"
            case Allow.GRANTED:
                if granted(identity, topic, action):
                    return None
                if not isinstance(identity, Identity):
                    return f"{doing} topic {topic!r} needs a token that grants {action.value!r}"
                return f"the token does not grant {action.value!r} on topic {topic!r}"
            case Allow.OWNER:
                owner = owner_of(topic, pattern)
                user = user_of(identity)
                if owner is not None and user == owner:
                    return None
                if owner is None:
                    return f"topic {topic!r} names no user: {doing} it is not allowed"
                return f"topic {topic!r} is user {owner!r}'s own: only that user may be {doing} it"
            case _:
                assert callable(rule)
                if rule(Access(identity, topic, action, pattern)):
                    return None
                return f"{doing} topic {topic!r} is not allowed for this connection"


# The rule of every action on a personal topic (`user:*`): its user's alone.
PERSONAL: Final = Permissions(
    join=Allow.OWNER,
    publish=Allow.OWNER,
    call=Allow.OWNER,
    presence=Allow.OWNER,
    history=Allow.OWNER,
)

_DOING: Final = {
    Action.JOIN: "joining",
    Action.PUBLISH: "publishing to",
    Action.CALL: "calling",
    Action.PRESENCE: "reading the presence of",
    Action.HISTORY: "reading the history of",
}


def action_of_call(event: str) -> Action:
    """The action a Call of `event` is: `$history` reads history, `$presence...` presence."""
    if event == "$history":
        return Action.HISTORY
    if event.startswith("$presence"):
        return Action.PRESENCE
    return Action.CALL


def pattern_matches(pattern: str, topic: str) -> bool:
    """Whether `topic` matches `pattern`: a trailing `*` stands for one or more characters.

    `*` alone matches every topic; any other pattern matches only itself.
    """
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        return len(topic) > len(prefix) and topic.startswith(prefix)
    return topic == pattern


def owner_of(topic: str, pattern: str) -> str | None:
    """The user a topic is named after: what `pattern`'s `*` stands for; None without one."""
    if not pattern.endswith("*") or not pattern_matches(pattern, topic):
        return None
    return topic[len(pattern) - 1 :]


def grants_of(topics: object) -> Grants:
    """Read a token's `topics` claim: a list of patterns, or a map of pattern to actions.

    A pattern in a list grants every action; in a map, the actions listed
    (or `"*"`, every action). Raises ValueError saying what is malformed.
    """
    if isinstance(topics, Sequence) and not isinstance(topics, str):
        grants = []
        for pattern in topics:
            _check_pattern(pattern)
            grants.append((pattern, ACTIONS))
        return tuple(grants)
    if isinstance(topics, Mapping):
        return tuple(
            (_check_pattern(pattern), _actions(pattern, actions))
            for pattern, actions in topics.items()
        )
    raise ValueError(
        "it must be a list of topic patterns, or a map of topic pattern to a list of actions"
    )


def granted(identity: object, topic: str, action: Action) -> bool:
    """Whether the token behind `identity` grants `action` on `topic`."""
    if not isinstance(identity, Identity):
        return False
    topics = identity.claims.get("topics")
    # Read as it is, not through grants_of: this runs for every request on
    # such a route, and a token's grants were checked when it was verified
    # (anything unreadable in an Identity made otherwise grants nothing).
    if _is_list(topics):
        return any(isinstance(p, str) and pattern_matches(p, topic) for p in topics)
    if isinstance(topics, Mapping):
        return any(
            isinstance(p, str)
            and pattern_matches(p, topic)
            and (actions == "*" or (_is_list(actions) and _grants(actions, action)))
            for p, actions in topics.items()
        )
    return False


def _is_list(value: object) -> TypeGuard[Sequence[object]]:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _grants(actions: Sequence[object], action: Action) -> bool:
    return action.value in actions or "*" in actions


def _check_pattern(pattern: object) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"a topic pattern must be a non-empty string, got {pattern!r}")
    return pattern


def _actions(pattern: str, actions: object) -> frozenset[Action]:
    if actions == "*":
        return ACTIONS
    if not isinstance(actions, Sequence) or isinstance(actions, str):
        raise ValueError(f"the actions of {pattern!r} must be a list or '*', got {actions!r}")
    known = {action.value for action in Action}
    unknown = [action for action in actions if action not in known and action != "*"]
    if unknown:
        raise ValueError(
            f"unknown action {unknown[0]!r} for {pattern!r}; the actions are "
            + ", ".join(action.value for action in Action)
        )
    if "*" in actions:
        return ACTIONS
    return frozenset(Action(action) for action in actions)
