"""The built-in demo: chat rooms (`room:*`), crowds (`crowd:*`) and an echo service (`echo:*`).

`hub serve` with no application runs this; open http://127.0.0.1:8000/ in
two browser tabs and chat. Rooms keep full presence (RoomService's own);
crowds are rooms for many, whose presence diffs are coalesced (at most
one per `presence.interval_seconds` to each member).
"""

from hub.app import Hub
from hub.presence import Presence
from hub.services import EchoService, RoomService

app = Hub("triohub demo")
app.route("room:*", RoomService)
app.route("crowd:*", RoomService, presence=Presence(mode="coalesced", user_param="user"))
app.route("echo:*", EchoService)
