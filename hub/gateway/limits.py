"""Limits per client address and in total: connections, and WebSocket handshakes per second.

One `AddressLimits` per gateway, shared by its connections. It costs a dict
of small entries, one per address with an open connection or a recent
handshake; entries that hold nothing are swept out as the table grows, so
clients cannot grow it past what they hold open (and a second's worth of
handshakes).

Behind a reverse proxy every connection comes from the proxy's address: the
client's comes from a header the proxy sets (`X-Forwarded-For` unless
configured otherwise), honoured only on connections from a configured
trusted proxy, so no client can pick an address of its own choosing (see
`ClientAddresses`).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

__all__ = [
    "DEFAULT_CLIENT_ADDRESS_HEADER",
    "LOOPBACK",
    "AddressLimits",
    "BadForwardedHeaderError",
    "ClientAddresses",
    "TokenBucket",
    "networks",
]

DEFAULT_CLIENT_ADDRESS_HEADER: Final = "x-forwarded-for"

# The table is swept of idle entries when it has grown this much past its
# size after the last sweep (amortized: a sweep per this many new entries at least).
_SWEEP_SLACK: Final = 1024

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BadForwardedHeaderError(ValueError):
    """A trusted proxy's client-address header does not hold an IP address."""


@attrs.frozen
class ClientAddresses:
    """Finds a client's address: the peer's, or a trusted proxy's header's.

    `trusted_proxies` are addresses or networks (`10.0.0.0/8`); `header` is
    the header a proxy puts the client's address in, lower case. A list
    (`client, proxy1, proxy2`, as X-Forwarded-For grows) is read from the
    right: the first address that is not a trusted proxy is the client. From
    any other peer the header is ignored: anyone can send it.
    """

    trusted_proxies: tuple[_Network, ...] = ()
    header: str = DEFAULT_CLIENT_ADDRESS_HEADER

    @classmethod
    def of(
        cls, trusted: Iterable[str], header: str = DEFAULT_CLIENT_ADDRESS_HEADER
    ) -> ClientAddresses:
        """Build from strings; raises ValueError naming a proxy that is no address or network."""
        return cls(networks(trusted, "trusted proxy"), header.lower())

    def is_trusted(self, host: str) -> bool:
        return _within(host, self.trusted_proxies)

    def client(self, peer: str, headers: Mapping[str, str]) -> str | None:
        """The client's address behind trusted proxy `peer`, or None if the header is absent.

        Raises BadForwardedHeaderError if an entry the proxies vouch for is no address.
        """
        value = headers.get(self.header)
        if value is None:
            return None
        entries = [entry.strip() for entry in value.split(",")]
        client = None
        for entry in reversed(entries):
            try:
                address = str(ipaddress.ip_address(_strip_port(entry)))
            except ValueError:
                raise BadForwardedHeaderError(
                    f"the {self.header} header holds no IP address where one belongs"
                ) from None
            client = address
            if not self.is_trusted(address):
                break
        return client


def _strip_port(entry: str) -> str:
    """`[::1]:80` -> `::1`, `1.2.3.4:80` -> `1.2.3.4` (some proxies add ports)."""
    if entry.startswith("["):
        return entry[1 : entry.find("]")] if "]" in entry else entry
    if entry.count(":") == 1:
        return entry.partition(":")[0]
    return entry


@attrs.define
class TokenBucket:
    """`rate` tokens a second, up to a burst of as many (at least one)."""

    rate: float
    tokens: float = attrs.field(init=False)
    updated_at: float = attrs.field(init=False, default=-math.inf)

    def __attrs_post_init__(self) -> None:
        self.tokens = max(1.0, self.rate)

    def spend(self, now: float) -> float:
        """Take a token at `now`: 0.0 if there was one, else the seconds until there is."""
        if now > self.updated_at:
            refill = (now - self.updated_at) * self.rate
            self.tokens = min(max(1.0, self.rate), self.tokens + refill)
            self.updated_at = now
        if self.tokens < 1.0:
            return (1.0 - self.tokens) / self.rate
        self.tokens -= 1.0
        return 0.0


@attrs.define
class _Entry:
    """One address: its open connections and its handshake allowance (a token bucket)."""

    connections: int = 0
    tokens: float = 0.0
    updated_at: float = 0.0


def networks(addresses: Iterable[str], what: str) -> tuple[_Network, ...]:
    """Parse addresses or networks; raises ValueError naming one that is neither."""
    parsed = []
    for address in addresses:
        try:
            parsed.append(ipaddress.ip_network(address.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"{what} {address!r} is not an IP address or network (such as 10.0.0.0/8)"
            ) from None
    return tuple(parsed)


def _within(host: str, networks: tuple[_Network, ...]) -> bool:
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


#: Addresses the per-address limits leave alone by default: the machine itself
#: (tests, benchmarks, a local proxy not configured as trusted).
LOOPBACK: Final = ("127.0.0.0/8", "::1")


@attrs.define
class AddressLimits:
    """Counts connections per address, and handshakes per address and second.

    `max_per_address` connections from one address at once; `handshakes_per_second`
    from one address, in a burst of as many. None turns a limit off. Addresses
    within `exempt` are not limited (nor counted).
    """

    max_per_address: int | None
    handshakes_per_second: float | None
    exempt: tuple[_Network, ...] = ()
    _entries: dict[str, _Entry] = attrs.field(init=False, factory=dict)
    _swept_size: int = attrs.field(init=False, default=0)

    def __len__(self) -> int:
        return len(self._entries)

    def is_exempt(self, address: str) -> bool:
        """Whether `address` is left alone (see the class docstring)."""
        return _within(address, self.exempt)

    def acquire(self, address: str, now: float) -> bool:
        """Count one more connection from `address`; False (and nothing counted) past the limit.

        The caller checks `is_exempt` first: an exempt address is not to be counted.
        """
        entry = self._entries.get(address)
        if entry is None:
            entry = self._add(address, now)
        if self.max_per_address is not None and entry.connections >= self.max_per_address:
            return False
        entry.connections += 1
        return True

    def release(self, address: str) -> None:
        """Count one connection from `address` less (one `acquire` let through)."""
        entry = self._entries[address]
        entry.connections -= 1
        if entry.connections == 0 and self.handshakes_per_second is None:
            del self._entries[address]

    def handshake(self, address: str, now: float) -> float:
        """Spend one handshake of `address` at `now`: 0.0 if allowed, else seconds to wait."""
        rate = self.handshakes_per_second
        if rate is None:
            return 0.0
        entry = self._entries.get(address)
        if entry is None:
            entry = self._add(address, now)
        burst = max(1.0, rate)
        entry.tokens = min(burst, entry.tokens + (now - entry.updated_at) * rate)
        entry.updated_at = now
        if entry.tokens < 1.0:
            return (1.0 - entry.tokens) / rate
        entry.tokens -= 1.0
        return 0.0

    def sweep(self, now: float) -> None:
        """Drop the entries that hold nothing: no connection, a full handshake allowance."""
        rate = self.handshakes_per_second
        burst = math.inf if rate is None else max(1.0, rate)
        idle = [
            address
            for address, entry in self._entries.items()
            if entry.connections == 0
            and (rate is None or entry.tokens + (now - entry.updated_at) * rate >= burst)
        ]
        for address in idle:
            del self._entries[address]
        self._swept_size = len(self._entries)

    def _add(self, address: str, now: float) -> _Entry:
        if len(self._entries) > 2 * self._swept_size + _SWEEP_SLACK:
            self.sweep(now)
        entry = _Entry(tokens=max(1.0, self.handshakes_per_second or 1.0), updated_at=now)
        self._entries[address] = entry
        return entry
