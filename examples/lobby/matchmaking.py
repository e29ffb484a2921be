"""`queue:<mode>` topics: matchmaking by size and a rating band that widens with waiting.

Joining `queue:4p` queues the player (`{"rating": 1500}`), alone or as a
party (`{"party": "p-42", "party_size": 2}`: the party's ticket enters the
pool once all its members have joined). Leaving the topic, or
disconnecting, takes the player, and its party, out of the queue.

The queue's actor is its matchmaker (one writer, no lock): every
`MATCH_INTERVAL` it forms matches of `size` players from tickets whose
ratings lie within a band around the longest-waiting ticket's rating, a
band that widens with that ticket's waiting time. Each match gets its
topic, started from the server (`topic.hub.start_topic`); its players are
pushed `match_found` with the topic to join, then leave the queue (Ended,
code `matched`).
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import trio

import actors
from hub import HubError, JoinRefusedError, Member, Payload, Service, Topic
from hub.backplane import Recovery

from .players import player_of

logger = logging.getLogger(__name__)

# How often the matchmaker looks for matches, in seconds.
MATCH_INTERVAL: Final = 0.5
# The band at first: ratings this far from the oldest ticket's match it...
BASE_BAND: Final = 100.0
# ...and it widens by this much per second of waiting...
BAND_PER_SECOND: Final = 50.0
# ...up to this.
MAX_BAND: Final = 1000.0
DEFAULT_RATING: Final = 1500
# Players one queue holds at most (a join past it is refused, `queue_full`).
MAX_QUEUED: Final = 10_000

# Players per match of each mode (`queue:4p`).
MODES: Final[Mapping[str, int]] = {"2p": 2, "4p": 4}


@attrs.define(eq=False)
class Ticket:
    """One entry of the pool: a player alone, or a party, matched together."""

    party: str
    size: int
    since: float
    members: dict[str, Member] = attrs.Factory(dict)
    ratings: dict[str, int] = attrs.Factory(dict)

    @property
    def complete(self) -> bool:
        return len(self.members) == self.size

    @property
    def rating(self) -> float:
        return sum(self.ratings.values()) / max(1, len(self.ratings))


def band(
    waited: float,
    *,
    base: float = BASE_BAND,
    per_second: float = BAND_PER_SECOND,
    maximum: float = MAX_BAND,
) -> float:
    """How far from a ticket's rating a match may reach after `waited` seconds."""
    return min(maximum, base + per_second * max(0.0, waited))


def form_matches(
    tickets: Sequence[Ticket], size: int, now: float, **band_args: float
) -> list[list[Ticket]]:
    """Group complete tickets into matches of exactly `size` players.

    The longest-waiting ticket anchors each match; tickets within its band
    (its rating +- `band(its wait)`) join it, longest-waiting first, as long
    as they fit. Tickets no match takes stay, in order.
    """
    pool = [ticket for ticket in tickets if ticket.complete]
    matches: list[list[Ticket]] = []
    while pool:
        anchor = pool[0]
        reach = band(now - anchor.since, **band_args)
        chosen = [anchor]
        players = anchor.size
        for ticket in pool[1:]:
            if players == size:
                break
            if players + ticket.size <= size and abs(ticket.rating - anchor.rating) <= reach:
                chosen.append(ticket)
                players += ticket.size
        if players == size:
            matches.append(chosen)
            pool = [ticket for ticket in pool if ticket not in chosen]
        else:
            pool.pop(0)  # no match for the anchor yet: try the next one
    return matches


class QueueService(Service):
    """A matchmaking queue for one mode (`queue:2p`, `queue:4p`)."""

    def __init__(
        self,
        topic: Topic,
        *,
        modes: Mapping[str, int] = MODES,
        match_interval: float = MATCH_INTERVAL,
        match_init: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(topic)
        mode = topic.name.partition(":")[2]
        self.mode = mode
        self.size = modes.get(mode, 0)
        self.match_interval = match_interval
        #: What every match this queue makes is started with (tick rate, grace...).
        self.match_init = dict(match_init or {})
        self.tickets: dict[str, Ticket] = {}
        # Which ticket each queued player is in.
        self.ticket_of: dict[str, str] = {}
        self.matches_made = 0

    async def started(self) -> None:
        if self.size:
            self.topic.every(self.match_interval, "match")

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        if not self.size:
            modes = ", ".join(f"queue:{mode}" for mode in MODES)
            raise JoinRefusedError(f"no such mode; queue for one of {modes}", code="unknown_mode")
        name = player_of(member)
        if name in self.ticket_of:
            raise JoinRefusedError("you are in this queue already", code="already_queued")
        if len(self.ticket_of) >= MAX_QUEUED:
            raise JoinRefusedError("the queue is full; try again later", code="queue_full")
        rating = params.get("rating", DEFAULT_RATING)
        if type(rating) is not int or not 0 <= rating <= 10_000:
            raise JoinRefusedError("rating is a whole number from 0 to 10000", code="bad_rating")
        party, size = params.get("party"), params.get("party_size", 1)
        if party is None:
            party, size = f"solo:{name}", 1
        if not isinstance(party, str) or not 1 <= len(party) <= 64:
            raise JoinRefusedError("party is an id of 1 to 64 characters", code="bad_party")
        if type(size) is not int or not 1 <= size <= self.size:
            raise JoinRefusedError(f"party_size is 1 to {self.size}", code="bad_party")
        ticket = self.tickets.get(party)
        if ticket is None:
            ticket = self.tickets[party] = Ticket(party, size, trio.current_time())
        elif ticket.size != size or ticket.complete:
            raise JoinRefusedError(f"party {party!r} is {ticket.size} strong", code="bad_party")
        ticket.members[name] = member
        ticket.ratings[name] = rating
        if ticket.complete:
            ticket.since = trio.current_time()  # waits from when the whole party is in
        self.ticket_of[name] = party
        return {"mode": self.mode, "size": self.size, "queued": len(self.ticket_of)}

    async def joined(self, member: Member, recovery: Recovery) -> None:
        self.topic.broadcast("queued", {"players": len(self.ticket_of)}, key="queued")

    async def leave(self, member: Member) -> None:
        name = member.user
        party = self.ticket_of.get(name or "")
        ticket = self.tickets.get(party or "")
        if ticket is None or ticket.members.get(name or "") is not member:
            return
        # One member gone takes the party out: the rest are told and leave too.
        del self.tickets[ticket.party]
        for other_name, other in ticket.members.items():
            del self.ticket_of[other_name]
            if other is not member:
                self.topic.kick(other, f"{name} left the queue", code="party_left")
        self.topic.broadcast("queued", {"players": len(self.ticket_of)}, key="queued")

    async def handle_timer(self, event: str, payload: Payload) -> None:
        now = trio.current_time()
        for match in form_matches(list(self.tickets.values()), self.size, now):
            await self._start_match(match)

    async def _start_match(self, tickets: list[Ticket]) -> None:
        """Start the match's topic, tell its players where to go, take them out of the queue."""
        topic = f"match:{uuid.uuid4().hex[:12]}"
        players = list(itertools.chain.from_iterable(ticket.members for ticket in tickets))
        assert self.topic.hub is not None
        try:
            await self.topic.hub.start_topic(
                topic, {**self.match_init, "players": players, "mode": self.mode}
            )
        except (HubError, actors.StartError) as error:
            # The hub cannot start a match now (as many topics as allowed,
            # say): the players stay queued, and the next round tries again.
            logger.warning("%s: could not start %s: %s", self.topic.name, topic, error)
            return
        self.matches_made += 1
        found = {"topic": topic, "players": players}
        for ticket in tickets:
            del self.tickets[ticket.party]
            for name, member in ticket.members.items():
                del self.ticket_of[name]
                self.topic.push(member, "match_found", found)
                self.topic.kick(member, f"matched: join {topic}", code="matched")
        self.topic.broadcast("queued", {"players": len(self.ticket_of)}, key="queued")
