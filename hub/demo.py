"""The built-in demo: chat rooms (`room:*`) and an echo service (`echo:*`).

`hub serve` with no application runs this; open http://127.0.0.1:8000/ in
two browser tabs and chat.
"""

from hub.app import Hub
from hub.services import EchoService, RoomService

# The demo asks for its page (at /) and the plain WebSocket echo (at /echo).
app = Hub("triohub demo", demo_page=True, echo=True)
app.route("room:*", lambda topic: RoomService(topic, announce_members=True))
app.route("echo:*", EchoService)
