"""An echo service in a few lines, and a Python client talking to it.

    .venv/bin/python examples/echo.py       # runs a hub and a client, prints, exits
    .venv/bin/hub serve examples.echo:app   # or serve it for other clients

Calls on `echo:*` answer with their payload; a published event comes back
to its sender only. It asks the hub for the plain WebSocket echo at /echo
too (no hub protocol), for testing WebSocket clients.
"""

from __future__ import annotations

try:
    import trio

    from hub import Hub, HubConfig, Member, Payload, ServerConfig, Service, client, serve_hub
except ModuleNotFoundError as missing:  # a Python without triohub, such as the system's
    raise SystemExit(
        f"{missing}: run this with .venv/bin/python (./scripts/demo creates .venv), "
        "or activate .venv first"
    ) from None


class Echo(Service):
    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        return {"event": event, "payload": payload}

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        self.topic.push(member, event, payload)


app = Hub("echo example", echo=True)
app.route("echo:*", Echo)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve_hub, app, HubConfig(server=ServerConfig(port=0)))
        print(f"hub at {running.websocket_url}")
        async with client.connect(running.websocket_url) as connection:
            echo = await connection.join("echo:demo")
            print("call ->", await echo.call("ping", {"n": 1}, timeout=2.0))
            got = trio.Event()
            echo.on("shout", lambda payload: (print("push ->", payload), got.set()))
            await echo.publish("shout", "hello")
            await got.wait()
        running.request_shutdown()


if __name__ == "__main__":
    trio.run(main)
