"""Every exception the actor runtime raises, in one shallow tree."""

from __future__ import annotations

from typing import Any


class ActorError(Exception):
    """Base of every error raised by the actor runtime."""


class MailboxFullError(ActorError):
    """A message did not fit in a full mailbox whose policy is to fail fast."""

    def __init__(self, actor: str, capacity: int) -> None:
        super().__init__(
            f"mailbox of {actor} is full ({capacity} messages); "
            "the actor is not keeping up: slow the sender, raise the capacity, "
            "or choose a dropping overflow policy"
        )
        self.actor = actor
        self.capacity = capacity


class ActorExitedError(ActorError):
    """The actor addressed has ended (or is stopping) and takes no more messages."""

    def __init__(self, actor: str, reason: Any) -> None:
        super().__init__(f"{actor} has exited ({reason}); it takes no more messages")
        self.actor = actor
        self.reason = reason


class CallTimeoutError(ActorError):
    """No reply to a call arrived before its deadline."""

    def __init__(self, actor: str, request: Any, timeout: float) -> None:
        super().__init__(f"{actor} did not reply to {request!r} within {timeout} s")
        self.actor = actor
        self.request = request
        self.timeout = timeout


class NameTakenError(ActorError):
    """A unique name is already registered to a live actor."""

    def __init__(self, name: Any, holder: str) -> None:
        super().__init__(f"name {name!r} is already registered to {holder}")
        self.name = name
        self.holder = holder


class NoSuchActorError(ActorError):
    """No live actor is registered under a name."""

    def __init__(self, name: Any) -> None:
        super().__init__(f"no actor is registered under {name!r}")
        self.name = name


class UnexpectedMessageError(ActorError):
    """An actor received a message it has no clause for: a bug in the sender."""

    def __init__(self, actor: str, message: Any) -> None:
        super().__init__(f"{actor} does not handle {message!r}")
        self.actor = actor
        self.message = message


class LinkedActorExitedError(ActorError):
    """This actor was ended because an actor linked to it ended abnormally."""

    def __init__(self, peer: str, reason: Any) -> None:
        super().__init__(f"linked actor {peer} exited ({reason})")
        self.peer = peer
        self.reason = reason


class StartError(ActorError):
    """A child failed while starting, before it was ready."""

    def __init__(self, child_id: Any, cause: BaseException) -> None:
        super().__init__(f"child {child_id!r} failed to start: {cause!r}")
        self.child_id = child_id
        self.cause = cause


class RestartIntensityError(ActorError):
    """A supervisor saw more restarts than its budget allows and gave up.

    The supervisor stops its remaining children and ends with this error, so
    that its own parent decides what happens next (escalation).
    """

    def __init__(self, supervisor: str, max_restarts: int, window_seconds: float) -> None:
        super().__init__(
            f"supervisor {supervisor} exceeded its restart intensity "
            f"({max_restarts} restarts in {window_seconds} s) and shut down"
        )
        self.supervisor = supervisor
        self.max_restarts = max_restarts
        self.window_seconds = window_seconds


class DuplicateChildError(ActorError):
    """A child id is already in use under the same supervisor."""

    def __init__(self, supervisor: str, child_id: Any) -> None:
        super().__init__(f"supervisor {supervisor} already has a child with id {child_id!r}")
        self.supervisor = supervisor
        self.child_id = child_id


class NoSuchChildError(ActorError):
    """A supervisor has no child with the id given."""

    def __init__(self, supervisor: str, child_id: Any) -> None:
        super().__init__(f"supervisor {supervisor} has no child with id {child_id!r}")
        self.supervisor = supervisor
        self.child_id = child_id
