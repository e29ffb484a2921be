"""Services: what a topic does. One Service instance per live topic.

An application maps topic patterns to services (`hub.route("room:*", RoomService)`).
The hub starts a topic's actor on its first join and builds the service
there with the `Topic` it serves; every handler then runs in that actor,
one at a time, so a service's state needs no locks.
"""

from hub.services.base import Service
from hub.services.echo import EchoService
from hub.services.personal import PersonalService
from hub.services.rooms import RoomService

__all__ = ["EchoService", "PersonalService", "RoomService", "Service"]
