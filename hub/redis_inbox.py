"""Notification inboxes in Redis: the same inbox for a user whichever node serves them.

`RedisInbox` is the `hub.notifications.Inbox` of a hub on the Redis
backplane (and of `hub.publisher`, which notifies from outside the hub).
Every operation is one Lua script, so that concurrent nodes never see half
a change. Keys, under the backplane's `prefix`:

- `<prefix>:inbox:<user>`: a stream, one entry per unacknowledged
  notification, its id `<offset>-0`, its fields `t` (when it was added, by
  the wall clock: the same on every node) and `n` (event and data, msgpack);
- `<prefix>:inboxmeta:<user>`: a hash: `last` (the offset of the user's
  latest notification), `acked`, `dropped`;
- `<prefix>:inbox:seq`: the offset counter, one for every user (so that
  offsets keep rising for a user whose emptied inbox was forgotten);
- `<prefix>:inbox:epoch`: the inboxes' epoch, made when it is missing (a
  Redis that lost its data starts a new one, and offsets start again);
- `<prefix>:inbox:due`: a sorted set of users by when their oldest
  notification expires, for the sweep (`expire`);
- `<prefix>:inbox:limits`: the hub's limits (`max_per_user`, `max_age`),
  written by each hub node's sweep (at its start, then every sweep), read
  by `hub.publisher`.

Limits are those of `LocalInbox`: at most `max_per_user` notifications
kept per user (a newer one drops the oldest), each at most `max_age`
seconds; an inbox's keys expire `max_age` (and a minute) after its last
change, so a forgotten user costs nothing. Expired notifications are
dropped by whichever script touches the inbox first, and by `expire`, the
sweep each node runs, which reports the users who lost some so that their
devices are told. The scripts name keys they compute (a user's, in the
sweep): a single Redis or Valkey server, not Redis Cluster.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import msgpack

from hub.backplane.local import new_epoch
from hub.errors import InvalidNotificationError
from hub.notifications import (
    INBOX_MAX_AGE_SECONDS,
    INBOX_MAX_PER_USER,
    DropObserver,
    DropReason,
    Inbox,
    InboxStatus,
    Notification,
)
from hub.protocol import Payload

__all__ = ["RedisInbox", "ScriptRunner", "read_limits"]

#: How a RedisInbox runs a Lua script: (script, keys, args) -> its answer.
ScriptRunner = Callable[[str, list[str], list[Any]], Awaitable[Any]]

# Users the sweep looks at in one script, at most (the rest wait for the next).
_SWEEP_BATCH: Final = 100

# An inbox's keys outlive its last change by the age limit and this much.
_KEEP_MARGIN_SECONDS: Final = 60.0

# Drop what has expired from one inbox; how many went.
_EXPIRE_FUNCTION = """
local function expire_box(stream, meta, now, max_age)
  local expired = 0
  while true do
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 16)
    if #oldest == 0 then break end
    local more = true
    for _, entry in ipairs(oldest) do
      if tonumber(entry[2][2]) + max_age <= now then
        redis.call('XDEL', stream, entry[1])
        expired = expired + 1
      else
        more = false
        break
      end
    end
    if not more then break end
  end
  if expired > 0 then redis.call('HINCRBY', meta, 'dropped', expired) end
  return expired
end
"""

# KEYS: stream, meta, epoch, seq, due; ARGV: now, max_age, fresh epoch, user, ...
_PRELUDE = (
    _EXPIRE_FUNCTION
    + """
local stream, meta, epoch_key, seq_key, due = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, max_age, user = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[4]
local epoch = redis.call('GET', epoch_key)
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', epoch_key, epoch)
end
local expired = expire_box(stream, meta, now, max_age)
local function keep()
  local ms = math.ceil((max_age + MARGIN) * 1000)
  redis.call('PEXPIRE', stream, ms)
  redis.call('PEXPIRE', meta, ms)
end
local function status()
  local h = redis.call('HMGET', meta, 'last', 'acked', 'dropped')
  return {epoch, tonumber(h[1] or '0'), redis.call('XLEN', stream),
          tonumber(h[3] or '0'), tonumber(h[2] or '0')}
end
if expired > 0 then keep() end
""".replace("MARGIN", str(_KEEP_MARGIN_SECONDS))
)

# ARGV[5]: max_per_user, ARGV[6]: event and data -> {expired, dropped full, offset, status}
_ADD = (
    _PRELUDE
    + """
local max_per_user = tonumber(ARGV[5])
local offset = redis.call('INCR', seq_key)
redis.call('XADD', stream, offset .. '-0', 't', ARGV[1], 'n', ARGV[6])
local full = 0
local count = redis.call('XLEN', stream)
if count > max_per_user then
  local over = redis.call('XRANGE', stream, '-', '+', 'COUNT', count - max_per_user)
  for _, entry in ipairs(over) do redis.call('XDEL', stream, entry[1]) end
  full = #over
  redis.call('HINCRBY', meta, 'dropped', full)
end
redis.call('HSET', meta, 'last', offset)
keep()
redis.call('ZADD', due, 'NX', now + max_age, user)
return {expired, full, offset, status()}
"""
)

# ARGV[5]: after -> {expired, entries ({id, {'t', at, 'n', packed}}...)}
_PENDING = (
    _PRELUDE
    + """
local entries = redis.call('XRANGE', stream, (tonumber(ARGV[5]) + 1) .. '-0', '+')
return {expired, entries}
"""
)

# -> {expired, status}
_STATUS = _PRELUDE + "return {expired, status()}\n"

# ARGV[5]: offset -> {expired, status}, or an error for an offset never given
_ACK = (
    _PRELUDE
    + """
local offset = tonumber(ARGV[5])
local given = tonumber(redis.call('GET', seq_key) or '0')
if offset > given then return redis.error_reply('NEVER_GIVEN ' .. given) end
redis.call('XTRIM', stream, 'MINID', (offset + 1) .. '-0')
local acked = tonumber(redis.call('HGET', meta, 'acked') or '0')
if offset > acked then redis.call('HSET', meta, 'acked', offset) end
redis.call('HSET', meta, 'dropped', 0)
keep()
return {expired, status()}
"""
)

# KEYS: due, limits; ARGV: now, max_age, key prefix, batch, max_per_user
#   -> {user, expired, user, expired, ...}; the node's limits are written on the way.
_SWEEP = (
    _EXPIRE_FUNCTION
    + """
local due, now, max_age, prefix = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
redis.call('HSET', KEYS[2], 'max_per_user', ARGV[5], 'max_age', ARGV[2])
local users = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local answer = {}
for _, user in ipairs(users) do
  local stream, meta = prefix .. 'inbox:' .. user, prefix .. 'inboxmeta:' .. user
  local expired = expire_box(stream, meta, now, max_age)
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #oldest > 0 then
    redis.call('ZADD', due, tonumber(oldest[1][2][2]) + max_age, user)
  else
    redis.call('ZREM', due, user)
  end
  if expired > 0 then
    answer[#answer + 1] = user
    answer[#answer + 1] = expired
  end
end
return answer
"""
)

# KEYS: limits -> {max_per_user, max_age} (false where unset)
_READ_LIMITS = "return redis.call('HMGET', KEYS[1], 'max_per_user', 'max_age')"


class RedisInbox(Inbox):
    """Users' inboxes in Redis, shared by every node on it (see the module docstring).

    `run` runs a script (`RedisBackplane.run_script`, in a hub): every
    method raises what it raises (RedisUnavailableError while Redis is
    away). `epoch` is the epoch Redis last answered with ("" before the
    first answer); it changes only when Redis has lost the inboxes.
    """

    def __init__(
        self,
        run: ScriptRunner,
        *,
        prefix: str = "triohub",
        max_per_user: int = INBOX_MAX_PER_USER,
        max_age: float = INBOX_MAX_AGE_SECONDS,
        on_dropped: DropObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.epoch = ""
        self.run = run
        self.prefix = prefix
        self.max_per_user = max_per_user
        self.max_age = max_age
        self.on_dropped = on_dropped
        self.clock = clock

    async def add(self, user: str, event: str, data: Payload) -> Notification:
        now = self.clock()
        packed = msgpack.packb([event, data], use_bin_type=True)
        expired, full, offset, status = await self._run(
            _ADD, user, now, [self.max_per_user, packed]
        )
        self._status(status)
        self._report(user, int(expired), DropReason.EXPIRED)
        self._report(user, int(full), DropReason.FULL)
        return Notification(int(offset), event, data, now)

    async def pending(self, user: str, *, after: int = 0) -> Sequence[Notification]:
        expired, entries = await self._run(_PENDING, user, self.clock(), [after])
        self._report(user, int(expired), DropReason.EXPIRED)
        notifications = []
        for entry_id, fields in entries:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            event, data = msgpack.unpackb(values[b"n"], raw=False)
            offset = int(entry_id.split(b"-")[0])
            notifications.append(Notification(offset, event, data, float(values[b"t"])))
        return notifications

    async def status(self, user: str) -> InboxStatus:
        expired, status = await self._run(_STATUS, user, self.clock(), [])
        self._report(user, int(expired), DropReason.EXPIRED)
        return self._status(status)

    async def ack(self, user: str, offset: int) -> InboxStatus:
        try:
            expired, status = await self._run(_ACK, user, self.clock(), [offset])
        except Exception as error:
            given = _never_given(error)
            if given is None:
                raise
            raise InvalidNotificationError(
                f"offset {offset} was never given to a notification (the latest is "
                f"{given}); acknowledge an offset you were sent"
            ) from None
        self._report(user, int(expired), DropReason.EXPIRED)
        return self._status(status)

    async def expire(self) -> Sequence[str]:
        # The sweep also writes this node's limits, for `hub.publisher` to apply.
        answer = await self.run(
            _SWEEP,
            [f"{self.prefix}:inbox:due", f"{self.prefix}:inbox:limits"],
            [self.clock(), self.max_age, f"{self.prefix}:", _SWEEP_BATCH, self.max_per_user],
        )
        users = []
        for user, expired in zip(answer[::2], answer[1::2], strict=True):
            name = user.decode()
            self._report(name, int(expired), DropReason.EXPIRED)
            users.append(name)
        return users

    async def _run(self, script: str, user: str, now: float, args: list[Any]) -> Any:
        prefix = self.prefix
        keys = [
            f"{prefix}:inbox:{user}",
            f"{prefix}:inboxmeta:{user}",
            f"{prefix}:inbox:epoch",
            f"{prefix}:inbox:seq",
            f"{prefix}:inbox:due",
        ]
        return await self.run(script, keys, [now, self.max_age, new_epoch(), user, *args])

    def _status(self, status: Sequence[Any]) -> InboxStatus:
        epoch, last, unread, dropped, acked = status
        self.epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        return InboxStatus(self.epoch, int(last), int(unread), int(dropped), int(acked))

    def _report(self, user: str, count: int, reason: DropReason) -> None:
        if count and self.on_dropped is not None:
            self.on_dropped(user, count, reason)


async def read_limits(run: ScriptRunner, prefix: str) -> tuple[int, float]:
    """The inbox limits the hubs on this Redis wrote (the defaults if none has)."""
    max_per_user, max_age = await run(_READ_LIMITS, [f"{prefix}:inbox:limits"], [])
    return (
        INBOX_MAX_PER_USER if max_per_user is None else int(max_per_user),
        INBOX_MAX_AGE_SECONDS if max_age is None else float(max_age),
    )


def _never_given(error: Exception) -> int | None:
    """The latest offset given, if `error` is the ack script's NEVER_GIVEN refusal."""
    text = str(error)
    marker = "NEVER_GIVEN "
    if marker not in text:
        return None
    digits = text.split(marker, 1)[1].split()[0].rstrip("'\"")
    return int(digits) if digits.isdigit() else None
