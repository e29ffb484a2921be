"""One topic's presence: what its service reads (`topic.presence`), and what its actor drives.

The topic's actor owns a `TopicPresence` (when its route keeps presence) and
calls it at each step of a membership: `admit` before the service's `join`
(who the member is, and whether that name is free), `enter` once it is a
member, `send_state` right after the ok Reply, `left` when it leaves or its
connection ends, `publish` for the client's own `$presence` updates, and
`after_message` after every message the actor handles, which pushes the
diff (full mode) or schedules the next coalesced push, and the end of the
oldest ghost's grace. Its timers are the topic actor's, so they end with it.

Every member with a user is present; the pushes go to the members whose
join asked for them (the `$presence` join param, `{}` will do): a bot or a
game client that never looks costs nothing, and a room of 10,000 that do
not look is not sent 10,000 states.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import attrs
import trio

import actors
from hub.errors import EncodeError, ErrorCode, HubError, JoinRefusedError, ServiceError, brief_repr
from hub.presence.messages import PresenceChanged, PresenceSnapshot
from hub.presence.policy import MAX_KEY_CHARS, MAX_USER_CHARS, PresenceMode, PresenceSettings
from hub.presence.state import Claim, Entry, NameTakenError, PresenceState
from hub.protocol import Payload, packed_size

if TYPE_CHECKING:
    from hub.topics.messages import Member
    from hub.topics.topic import Topic

__all__ = [
    "COUNT_EVENT",
    "DIFF_EVENT",
    "META_EVENT",
    "PARAM",
    "STATE_EVENT",
    "PresenceDue",
    "PresenceLimitError",
    "TopicPresence",
]

#: The event a client publishes to change its own meta.
META_EVENT = "$presence"
#: The join param with the client's presence options: `{"key": str, "meta": map}`.
PARAM = "$presence"

#: Pushed to a new member: who is here, `{user: [entry, ...]}`.
STATE_EVENT = "$presence_state"
#: Pushed on changes: `{"joins": {user: [entry]}, "leaves": {user: [entry]}}`.
DIFF_EVENT = "$presence_diff"
#: Counts mode's push: `{"users": n, "connections": m}`.
COUNT_EVENT = "$presence_count"


class PresenceLimitError(HubError):
    """A topic has as many presence subscribers as it takes (`presence.max_subscribers`)."""


@attrs.frozen
class PresenceDue:
    """A presence timer of the topic's actor: a coalesced push, or a ghost's grace, is due."""

    what: Literal["flush", "grace"]


_FLUSH_DUE = PresenceDue("flush")
_GRACE_DUE = PresenceDue("grace")


@attrs.define(eq=False)
class _Subscriber:
    monitor: actors.Monitor
    #: It missed a diff (its mailbox was full): it gets a whole snapshot next.
    stale: bool = False


class TopicPresence:
    """Who is present in one topic (see the module docstring).

    Services read it (`list`, `get`, `count`, `entry_of`), set a member's
    meta (`update`), and subscribe backend actors to it (`subscribe`).
    """

    def __init__(self, topic: Topic, settings: PresenceSettings, context: actors.Context) -> None:
        self._topic = topic
        self.settings = settings
        self._ctx = context
        self._state = PresenceState()
        self._subscribers: dict[actors.ActorRef, _Subscriber] = {}
        # The members whose join asked for presence pushes, by connection.
        self._listeners: dict[actors.ActorRef, Member] = {}
        self._flush_timer: actors.Timer | None = None
        self._grace_timer: actors.Timer | None = None
        self._last_flush = -math.inf
        # The counts members were last pushed (counts mode).
        self._sent_counts: tuple[int, int] | None = None

    # --- what services read and do ---------------------------------------------

    @property
    def mode(self) -> PresenceMode:
        return self.settings.mode

    def list(self) -> dict[str, tuple[Entry, ...]]:
        """Every user present, with its entries (one per connection), in arrival order."""
        return self._state.snapshot()

    def get(self, user: str) -> tuple[Entry, ...]:
        """The entries of `user` (empty if it is not present)."""
        return self._state.entries(user)

    def count(self) -> int:
        """How many users are present (a user with several devices counts once)."""
        return self._state.user_count

    @property
    def connections(self) -> int:
        """How many entries there are (connections, ended ones in their grace included)."""
        return self._state.entry_count

    def __contains__(self, user: object) -> bool:
        return isinstance(user, str) and bool(self._state.entries(user))

    def entry_of(self, member: Member) -> Entry | None:
        """The entry of `member`'s connection, None if it is not present (anonymous)."""
        held = self._state.entry_of(member.connection.ref)
        return None if held is None else held[1]

    def update(self, member: Member, meta: Mapping[str, Payload]) -> Entry | None:
        """Replace `member`'s meta (the server's word: no size check); None if not present."""
        return self._state.update(member.connection.ref, dict(meta))

    def wire_state(self) -> Payload:
        """Who is here as clients see it: `{user: [{"id", "gen", "meta"}, ...]}`."""
        return self._state.wire_state()

    def snapshot(self) -> PresenceSnapshot:
        return PresenceSnapshot(self._topic.name, self._state.snapshot())

    def subscribe(self, subscriber: actors.ActorRef) -> PresenceSnapshot:
        """Send `subscriber` a PresenceChanged per change from now on; return who is here now.

        The topic stays live while it has subscribers; a subscriber that
        ends is dropped. One that misses a change (its mailbox was full) gets
        a PresenceSnapshot next instead of the diff. When the topic ends,
        every subscriber gets an empty PresenceSnapshot. Raises
        PresenceLimitError past `max_subscribers`.
        """
        if subscriber not in self._subscribers:
            if len(self._subscribers) >= self.settings.max_subscribers:
                raise PresenceLimitError(
                    f"topic {self._topic.name!r} has {len(self._subscribers)} presence "
                    f"subscribers, the most it takes (presence.max_subscribers)"
                )
            self._subscribers[subscriber] = _Subscriber(self._ctx.monitor(subscriber))
        self._state.force()
        return self.snapshot()

    def unsubscribe(self, subscriber: actors.ActorRef) -> bool:
        """Stop sending `subscriber` changes; False if it was not subscribed."""
        entry = self._subscribers.pop(subscriber, None)
        if entry is None:
            return False
        self._ctx.demonitor(entry.monitor)
        return True

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def listeners(self) -> int:
        """How many members receive presence pushes (their join asked for them)."""
        return len(self._listeners)

    # --- what the topic's actor calls ------------------------------------------

    def admit(self, member: Member) -> tuple[Member, Claim | None]:
        """Who `member` is present as, before its service's `join`.

        Returns the member (with its claimed user set, for a name from a join
        param) and its Claim, None for an anonymous member (not tracked).
        Raises JoinRefusedError: `bad_field` for malformed presence params,
        `name_taken` for a name a live connection of another identity holds.
        """
        params = member.params
        key, meta = self._options(params.get(PARAM))
        user = member.user
        authenticated = user is not None
        param = self.settings.user_param
        if user is None and param is not None and param in params:
            name = params[param]
            if not isinstance(name, str) or not name.strip() or len(name) > MAX_USER_CHARS:
                raise JoinRefusedError(
                    f"join param {param!r} must name a user in 1 to {MAX_USER_CHARS} "
                    f"characters, got {brief_repr(name)}",
                    code=ErrorCode.BAD_FIELD,
                )
            user = name
            member = attrs.evolve(member, claimed_user=name)
        if user is None:
            return member, None
        claim = Claim(user, authenticated, key, meta)
        try:
            self._state.check(claim)
        except NameTakenError as error:
            raise JoinRefusedError(
                f"{error}: another connection is present as {user!r} here",
                code=ErrorCode.NAME_TAKEN,
            ) from None
        return member, claim

    def enter(
        self, member: Member, claim: Claim | None, *, listen: bool
    ) -> builtins.list[actors.ActorRef]:
        """The member joined: make it present (with a claim); return the connections displaced.

        With `listen` (its join asked, and the route's `presence` permission
        allows it), it is pushed who is here from now on.
        """
        if listen:
            self._listeners[member.connection.ref] = member
        if claim is None:
            return []
        _entry, displaced = self._state.track(member.connection.ref, claim)
        return [holder for holder in displaced if isinstance(holder, actors.ActorRef)]

    def send_state(self, member: Member) -> None:
        """Push the new member who is here (right after its ok Reply), if it asked."""
        if member.connection.ref not in self._listeners:
            return
        if self.mode is PresenceMode.COUNTS:
            self._topic.push(member, COUNT_EVENT, self._counts_payload())
            return
        self._topic.push(member, STATE_EVENT, self._state.wire_state())
        # It has the state as of now: what is pending must reach it too.
        self._state.force()

    def left(self, connection: actors.ActorRef, *, ended: bool) -> None:
        """`connection` left (at once) or its connection `ended` (after the grace)."""
        self._listeners.pop(connection, None)
        grace = self.settings.grace
        if ended and grace > 0:
            self._state.untrack(connection, grace_until=trio.current_time() + grace)
        else:
            self._state.untrack(connection, grace_until=None)

    def publish(self, member: Member, payload: Payload) -> None:
        """The client's `$presence`: merge `payload` into its meta (a null value removes a key).

        Raises ServiceError for a member that is not present, a payload that
        is not a map, or a meta over `max_meta_bytes`.
        """
        held = self._state.entry_of(member.connection.ref)
        if held is None:
            raise ServiceError(
                f"this connection is not present in {self._topic.name!r} (no user): "
                "it has no meta to update",
                code=ErrorCode.NOT_JOINED,
            )
        if not isinstance(payload, Mapping):
            raise ServiceError(
                f"{META_EVENT} takes a map of meta to set, got {brief_repr(payload)}",
                code=ErrorCode.BAD_FIELD,
            )
        meta = dict(held[1].meta)
        for name, value in payload.items():
            if value is None:
                meta.pop(name, None)
            else:
                meta[name] = value
        self._check_meta_size(meta)
        self._state.update(member.connection.ref, meta)

    def resend(self, subscriber: actors.ActorRef) -> None:
        """Send `subscriber` a snapshot at the next change instead of the diff.

        For a subscriber on another node (`hub.cluster.presence`) that lost
        changes on their way: as one whose mailbox was full here.
        """
        held = self._subscribers.get(subscriber)
        if held is not None:
            held.stale = True

    def subscriber_down(self, ref: actors.ActorRef) -> bool:
        """A Down for `ref`: drop it if it is a subscriber (True), else leave it to the actor."""
        return self._subscribers.pop(ref, None) is not None

    def timer_fired(self, due: PresenceDue) -> None:
        if due.what == "flush":
            self._flush_timer = None
            self._flush()
        else:
            self._grace_timer = None
            self._state.expire(trio.current_time())

    def after_message(self) -> None:
        """Push or schedule what changed; set the timer of the oldest ghost's grace."""
        state = self._state
        if state.changed:
            if self.mode is PresenceMode.FULL:
                self._flush()
            elif self._flush_timer is None:
                now = trio.current_time()
                delay = max(0.0, self._last_flush + self.settings.interval - now)
                self._flush_timer = self._ctx.send_after(delay, _FLUSH_DUE)
        if self._grace_timer is None:
            expiry = state.next_expiry()
            if expiry is not None:
                delay = max(0.0, expiry - trio.current_time())
                self._grace_timer = self._ctx.send_after(delay, _GRACE_DUE)

    def stopped(self) -> None:
        """The topic ends: its subscribers learn that nobody is here any more."""
        empty = PresenceSnapshot(self._topic.name, {})
        for subscriber in self._subscribers:
            subscriber.cast(empty)
        self._subscribers.clear()

    # --- inside -----------------------------------------------------------------

    def _flush(self) -> None:
        self._last_flush = trio.current_time()
        diff = self._state.flush()
        if self.mode is PresenceMode.COUNTS:
            counts = (self._state.user_count, self._state.entry_count)
            if counts != self._sent_counts:
                self._sent_counts = counts
                self._topic.push_each(self._listeners.values(), COUNT_EVENT, self._counts_payload())
        elif diff is not None:
            self._topic.push_each(self._listeners.values(), DIFF_EVENT, diff.wire())
        if diff is None or not self._subscribers:
            return
        changed = PresenceChanged(self._topic.name, diff)
        snapshot: PresenceSnapshot | None = None
        for ref, subscriber in self._subscribers.items():
            if subscriber.stale:
                snapshot = snapshot or self.snapshot()
                subscriber.stale = not ref.cast(snapshot)
            else:
                subscriber.stale = not ref.cast(changed)

    def _counts_payload(self) -> Payload:
        return {"users": self._state.user_count, "connections": self._state.entry_count}

    def _options(self, options: Payload) -> tuple[str | None, dict[str, Payload]]:
        """The `$presence` join param: `{"key": str, "meta": map}`, both optional."""
        if options is None:
            return None, {}
        if not isinstance(options, Mapping) or not set(options) <= {"key", "meta"}:
            raise JoinRefusedError(
                f"join param {PARAM!r} must be a map with 'key' and/or 'meta', "
                f"got {brief_repr(options)}",
                code=ErrorCode.BAD_FIELD,
            )
        key = options.get("key")
        if key is not None and (not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS):
            raise JoinRefusedError(
                f"{PARAM}.key must be a string of 1 to {MAX_KEY_CHARS} characters, "
                f"got {brief_repr(key)}",
                code=ErrorCode.BAD_FIELD,
            )
        meta = options.get("meta", {})
        if not isinstance(meta, Mapping):
            raise JoinRefusedError(
                f"{PARAM}.meta must be a map, got {brief_repr(meta)}", code=ErrorCode.BAD_FIELD
            )
        meta = {name: value for name, value in meta.items() if value is not None}
        try:
            self._check_meta_size(meta)
        except ServiceError as error:
            raise JoinRefusedError(error.message, code=error.code) from None
        return key, meta

    def _check_meta_size(self, meta: Mapping[str, Payload]) -> None:
        limit = self.settings.max_meta_bytes
        try:
            size = packed_size(meta)
        except EncodeError as error:
            raise ServiceError(f"meta cannot be kept: {error.message}", code=error.code) from None
        if size > limit:
            raise ServiceError(
                f"meta takes {size} bytes, over the limit of {limit} (presence.max_meta_bytes)",
                code=ErrorCode.TOO_LARGE,
            )
