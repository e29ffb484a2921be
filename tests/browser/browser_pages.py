"""Helpers that drive pages: the demo chat page, and the JS client module in a page."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from browser_support import HubProcess
from playwright.sync_api import Page, expect


def unique_room() -> str:
    """A room of the test's own on a shared hub."""
    return f"t{uuid.uuid4().hex[:10]}"


def open_chat(page: Page, hub: HubProcess, room: str, name: str) -> Page:
    """Open the demo as `name` in `room` (name from ?name=, room from the hash)."""
    page.goto(f"{hub.url}?name={name}#{room}")
    expect(page.locator("#status")).to_have_attribute("data-state", "joined")
    expect(page.locator("#room-label")).to_have_text(f"#{room}")
    return page


def send(page: Page, text: str) -> None:
    """Type `text` in the demo's message box and press Send."""
    page.locator("#message").fill(text)
    page.locator("#send").click()


def client_page(hub: HubProcess, new_page: Callable[[], Page]) -> Page:
    """A page of the hub's origin with the client module as `window.triohub`.

    The page is the module's own URL (shown as text): any page of the origin
    would do, and this one runs no script of its own.
    """
    page = new_page()
    page.goto(hub.url + "triohub.js")
    page.evaluate("async () => { window.triohub = await import('/triohub.js'); }")
    return page


def ws_url(hub: HubProcess) -> str:
    return f"ws://127.0.0.1:{hub.port}/ws"


def run(page: Page, script: str, **arg: Any) -> Any:
    """Evaluate an async JS function body with `arg` and the module's exports in scope."""
    return page.evaluate(
        "async (arg) => { const { TrioHub, HubError, connect } = window.triohub;\n"
        + script
        + "\n}",
        arg,
    )


# A WebSocket stand-in for what a real hub cannot be made to do (crash a topic
# on demand, refuse attempts in a row, answer a recovery as a test wants).
FAKE_SOCKET = """
class FakeSocket {
  static instances = [];
  static refuse = false;  // new sockets fail to open (close 1006)
  constructor(url, protocols) {
    this.url = url;
    this.protocol = "";
    this.sent = [];
    this.taken = 0;
    this.waiters = [];
    FakeSocket.instances.push(this);
    setTimeout(() => {
      if (FakeSocket.refuse) {
        this.onclose?.({ code: 1006, reason: "", wasClean: false });
      } else {
        this.protocol = protocols[0];
        this.onopen?.({});
      }
    }, 0);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
    for (const waiter of this.waiters.splice(0)) waiter();
  }
  close(code, reason) { this.closedWith = { code, reason }; }
  // Resolve with the next frame sent with kind `tag` that no call took yet.
  nextSent(tag) {
    return new Promise((resolve) => {
      const check = () => {
        while (this.taken < this.sent.length) {
          const frame = this.sent[this.taken++];
          if (frame[0] === tag) { resolve(frame); return; }
        }
        this.waiters.push(check);
      };
      check();
    });
  }
  receive(message) { this.onmessage?.({ data: JSON.stringify(message) }); }
  serverClose(code, reason = "") { this.onclose?.({ code, reason, wasClean: true }); }
}
const latest = () => FakeSocket.instances[FakeSocket.instances.length - 1];
// The next `event` of `emitter`, as a promise.
const once = (emitter, event) =>
  new Promise((resolve) => {
    const off = emitter.on(event, (value) => {
      off();
      resolve(value);
    });
  });
const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));
"""
