"""Unique names and process groups, freed when their actors end."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import attrs

from .errors import ActorExitedError, NameTakenError, NoSuchActorError
from .ref import ActorRef, ExitReason


@attrs.define(eq=False)
class Registry:
    """Names (one actor each) and groups (any number of actors each) for one system.

    An actor leaves every name and group it holds the moment it ends, before
    its supervisor can restart it, so a restarted actor can take its name again.
    """

    _names: dict[Hashable, ActorRef] = attrs.Factory(dict)
    _groups: dict[Hashable, dict[ActorRef, None]] = attrs.Factory(dict)
    # ref -> (names, groups) it holds, to clean up when it ends.
    _held: dict[ActorRef, tuple[set[Hashable], set[Hashable]]] = attrs.Factory(dict)

    # --- names ---------------------------------------------------------------

    def register(self, name: Hashable, ref: ActorRef) -> None:
        """Give `ref` the unique `name`.

        Raises NameTakenError if a live actor holds it; registering a name an
        actor already holds again is a no-op. An ended actor cannot take a
        name (ActorExitedError).
        """
        holder = self._names.get(name)
        if holder is ref:
            return
        if holder is not None:
            raise NameTakenError(name, holder.name)
        self._hold(ref)[0].add(name)
        self._names[name] = ref

    def unregister(self, name: Hashable) -> None:
        """Free `name`; a name nobody holds is ignored."""
        ref = self._names.pop(name, None)
        if ref is not None and ref in self._held:
            self._held[ref][0].discard(name)

    def whereis(self, name: Hashable) -> ActorRef | None:
        """The live actor registered as `name`, or None."""
        return self._names.get(name)

    def lookup(self, name: Hashable) -> ActorRef:
        """The live actor registered as `name`; raise NoSuchActorError if none."""
        ref = self._names.get(name)
        if ref is None:
            raise NoSuchActorError(name)
        return ref

    async def send(self, name: Hashable, message: Any) -> bool:
        """Send to the actor registered as `name`; see ActorRef.send."""
        return await self.lookup(name).send(message)

    def send_nowait(self, name: Hashable, message: Any) -> bool:
        return self.lookup(name).send_nowait(message)

    def names(self) -> dict[Hashable, ActorRef]:
        return dict(self._names)

    # --- groups --------------------------------------------------------------

    def join(self, group: Hashable, ref: ActorRef) -> None:
        """Add `ref` to `group` (joining twice is a no-op)."""
        self._hold(ref)[1].add(group)
        members = self._groups.get(group)
        if members is None:
            members = self._groups[group] = {}
        members[ref] = None

    def leave(self, group: Hashable, ref: ActorRef) -> None:
        """Take `ref` out of `group`; not being a member is ignored."""
        members = self._groups.get(group)
        if members is not None:
            members.pop(ref, None)
            if not members:
                del self._groups[group]
        if ref in self._held:
            self._held[ref][1].discard(group)

    def members(self, group: Hashable) -> tuple[ActorRef, ...]:
        """The live members of `group`, in the order they joined."""
        return tuple(self._groups.get(group, ()))

    def groups(self) -> list[Hashable]:
        return list(self._groups)

    # --- cleanup ------------------------------------------------------------

    def _hold(self, ref: ActorRef) -> tuple[set[Hashable], set[Hashable]]:
        if ref.exit_reason is not None:
            raise ActorExitedError(ref.name, ref.exit_reason)
        held = self._held.get(ref)
        if held is None:
            held = self._held[ref] = (set(), set())
            ref._watch(self, self._release)
        return held

    def _release(self, ref: ActorRef, _reason: ExitReason) -> None:
        held = self._held.pop(ref, None)
        if held is None:
            return
        names, groups = held
        for name in names:
            if self._names.get(name) is ref:
                del self._names[name]
        for group in groups:
            members = self._groups.get(group)
            if members is not None:
                members.pop(ref, None)
                if not members:
                    del self._groups[group]
