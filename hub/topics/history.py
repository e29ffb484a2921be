"""Recovery, the hub's side: the join Reply's history fields and `$history` reads.

Pure functions: the topic actor reads the backplane and calls these.

- `join_reply_payload` adds `epoch`, `offset` and (for a Join that named an
  offset) `recovered` to an ok join Reply's payload (docs/protocol.md,
  "Recovery");
- `replayed` is what the hub pushes right after a recovered join's Reply:
  exactly the kept events the client missed;
- `HistoryRead.parse` checks a `$history` Call's payload, and `history_answer`
  builds its answer from what the backplane returned.

Event names starting with `$` are the hub's (`is_reserved`): a client may
not publish them, nor call them except those the hub answers itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Final

import attrs

from hub.backplane import History, Position, Record, Recovery
from hub.errors import ErrorCode, ServiceError, brief_repr
from hub.protocol import Payload
from hub.protocol.frames import MAX_EPOCH_LENGTH, MAX_OFFSET

__all__ = [
    "DEFAULT_HISTORY_MAX_READ",
    "HISTORY_EVENT",
    "RESERVED_PREFIX",
    "HistoryRead",
    "history_answer",
    "is_reserved",
    "join_reply_payload",
    "replayed",
    "resume_after",
]

#: The Call event that reads a topic's history.
HISTORY_EVENT: Final = "$history"

#: Event names starting with this belong to the hub.
RESERVED_PREFIX: Final = "$"

# Events one `$history` call returns at most (`topics.history_max_read`).
DEFAULT_HISTORY_MAX_READ: Final = 100

# A $history call's payload is a map with these keys, all optional.
_HISTORY_KEYS: Final = frozenset({"after", "epoch", "limit"})


def is_reserved(event: str) -> bool:
    """Whether `event` is one of the hub's names (`$...`), which services never see."""
    return event.startswith(RESERVED_PREFIX)


def join_reply_payload(payload: Payload, recovery: Recovery) -> Payload:
    """The ok join Reply's payload: the service's, with the hub's history fields added.

    A map (or None) gets `epoch` and `offset` (where the topic's history
    stands) and, when the Join named an offset, `recovered`; a key the
    service set itself is left as it is. Any other payload (a list, a
    string) is the service's alone and is sent unchanged.
    """
    if payload is None:
        payload = {}
    elif not isinstance(payload, Mapping):
        return payload
    fields: dict[str, Payload] = {
        "epoch": recovery.position.epoch,
        "offset": recovery.position.offset,
    }
    if recovery.offset is not None:
        fields["recovered"] = recovery.recovered
    return {**fields, **payload}


def resume_after(offset: int | None, epoch: str | None, position: Position) -> int:
    """Where a join's history read starts: after the client's offset, if it means one here.

    An offset of another epoch, or past the topic's last one, means nothing
    now: the read starts at the oldest kept event (0), so that a service
    sending the recent history to a client that cannot recover sends all of
    it. An offset without an epoch is taken in the current one (older
    clients send no epoch; they are never told `recovered: true`).
    """
    if offset is None or epoch not in (None, position.epoch) or offset > position.offset:
        return 0
    return offset


def replayed(recovery: Recovery, member_id: str) -> Iterator[Record]:
    """The kept events the hub pushes after a recovered join's Reply, oldest first.

    Nothing unless `recovery.recovered` (a first join, or one that cannot
    recover, is the service's to greet: see `Service.joined`). A record that
    was broadcast excluding this very connection (it left and rejoined)
    stays excluded.
    """
    if not recovery.recovered:
        return
    for record in recovery.missed:
        if record.exclude != member_id:
            yield record


@attrs.frozen
class HistoryRead:
    """A `$history` request: the kept events after `after` in `epoch`, `limit` at most."""

    after: int
    epoch: str | None
    limit: int

    @classmethod
    def parse(cls, payload: Payload, *, max_limit: int) -> HistoryRead:
        """Check a `$history` Call's payload; `limit` defaults to, and is capped at, `max_limit`.

        Raises ServiceError (`bad_field`) naming the offending key.
        """
        if payload is None:
            payload = {}
        if not isinstance(payload, Mapping):
            raise _bad(f"a {HISTORY_EVENT} payload is a map, got {brief_repr(payload)}")
        unknown = sorted(set(payload) - _HISTORY_KEYS)
        if unknown:
            raise _bad(
                f"a {HISTORY_EVENT} payload takes 'after', 'epoch' and 'limit', not {unknown[0]!r}"
            )
        after = payload.get("after", 0)
        if after is None:
            after = 0
        if type(after) is not int or not 0 <= after <= MAX_OFFSET:
            raise _bad(f"'after' is an offset from 0 to {MAX_OFFSET}, got {brief_repr(after)}")
        epoch = payload.get("epoch")
        if epoch is not None and (
            not isinstance(epoch, str) or not 1 <= len(epoch) <= MAX_EPOCH_LENGTH
        ):
            raise _bad(
                f"'epoch' is a string of 1 to {MAX_EPOCH_LENGTH} characters, "
                f"got {brief_repr(epoch)}"
            )
        limit = payload.get("limit")
        if limit is None:
            limit = max_limit
        if type(limit) is not int or limit < 1:
            raise _bad(f"'limit' is an integer >= 1, got {brief_repr(limit)}")
        return cls(after, epoch, min(limit, max_limit))

    def start(self, position: Position) -> int:
        """The offset to read after: `after`, or 0 (all that is kept) for another epoch."""
        return self.after if self.epoch in (None, position.epoch) else 0


def history_answer(request: HistoryRead, history: History) -> Payload:
    """The `$history` answer: `{"recovered", "epoch", "offset", "events"}`.

    `recovered` is True when nothing after the asked offset is lost: the
    epoch is the current one (or was not named), and the first event
    returned directly follows `after` (or nothing came after it). The
    events are at most `limit`, oldest first; when the last one's offset is
    below `offset`, read on from it.
    """
    position = history.position
    records: Sequence[Record] = history.records[: request.limit]
    same_epoch = request.epoch in (None, position.epoch)
    if records:
        contiguous = records[0].offset == request.after + 1
    else:
        contiguous = request.after == position.offset
    events: list[Payload] = [
        {"event": record.event, "payload": record.payload, "offset": record.offset}
        for record in records
    ]
    return {
        "recovered": same_epoch and contiguous,
        "epoch": position.epoch,
        "offset": position.offset,
        "events": events,
    }


def _bad(message: str) -> ServiceError:
    return ServiceError(message, code=ErrorCode.BAD_FIELD)
