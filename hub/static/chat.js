// The demo chat page: rooms are topics `room:<name>` on the hub this page came from.
//
// Join params {user, $presence: {key, meta}}; after the Join Reply come the
// room's presence state and its recent history, as ordinary `message`
// Pushes, and so does every message anyone publishes: {user, text, at}.
// Who is here, their status (online / away) and who is typing come from the
// room's presence (docs/presence.md), which every page sees alike.

import { Presence, TrioHub } from "./triohub.js";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  roomLabel: $("room-label"),
  identity: $("identity"),
  name: $("name"),
  room: $("room"),
  members: $("members"),
  memberList: $("member-list"),
  typing: $("typing"),
  messages: $("messages"),
  error: $("error"),
  composer: $("composer"),
  message: $("message"),
  send: $("send"),
};

const ROOM_NAME = /^[\p{L}\p{N}_.-]{1,64}$/u;
const NAME_KEY = "triohub.demo.name";
const wsUrl = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;

// A user who typed nothing for this long is no longer shown typing.
const TYPING_IDLE_MS = 3000;

let hub = null;
let room = null; // the Topic of the room shown
let presence = null; // the room's Presence
let user = "";
let typingTimer = null; // set while this page tells the room it is typing
// Whether the name was chosen (?name=, or typed and joined): a name taken in
// the room is then reported; a remembered or random one is replaced instead
// (a second tab of the same browser remembers the same name).
let nameChosen = new URLSearchParams(location.search).has("name");

// For the curious, and for the browser tests: the live objects.
window.chatDemo = {
  get hub() {
    return hub;
  },
  get room() {
    return room;
  },
  get presence() {
    return presence;
  },
  closes: [], // every "close" event of the hub, newest last
};

function randomName() {
  const n = crypto.getRandomValues(new Uint16Array(1))[0] % 10000;
  return `guest-${String(n).padStart(4, "0")}`;
}

// The room named by the URL hash (#lobby), or lobby.
function roomFromHash() {
  const name = decodeURIComponent(location.hash.slice(1)).trim();
  return ROOM_NAME.test(name) ? name : "lobby";
}

function initialName() {
  const fromQuery = new URLSearchParams(location.search).get("name");
  let saved = null;
  try {
    saved = localStorage.getItem(NAME_KEY);
  } catch {
    // storage may be disabled
  }
  return (fromQuery || saved || randomName()).trim().slice(0, 32);
}

// ------------------------------------------------------------ status

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.dataset.transport = hub?.transport ?? "";
  ui.status.textContent = text;
  const usable = state === "joined";
  ui.message.disabled = !usable;
  ui.send.disabled = !usable;
}

function showStatus() {
  const roomName = room ? room.name.slice("room:".length) : roomFromHash();
  if (!hub || hub.state === "connecting") setStatus("connecting", "Connecting…");
  else if (hub.state === "reconnecting") setStatus("reconnecting", "Connection lost, reconnecting…");
  else if (hub.state === "closed") setStatus("offline", "Offline");
  else if (room && room.state === "joined") {
    // Where WebSockets fail (a proxy, an extension), the hub is reached by long-polling.
    const over = hub.transport === "longpoll" ? " (long-polling)" : "";
    setStatus("joined", `Online as ${user} in #${roomName}${over}`);
  }
  else setStatus("joining", `Joining #${roomName}…`);
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
}

// ------------------------------------------------------------ messages

function addMessage(payload, offset) {
  const list = ui.messages;
  // Keep the view pinned to the newest message unless the reader scrolled up.
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const item = document.createElement("li");
  if (offset != null) item.dataset.offset = String(offset);
  if (payload.user === user) item.classList.add("mine");

  const who = document.createElement("span");
  who.className = "user";
  who.textContent = payload.user;
  const when = document.createElement("time");
  const at = new Date(payload.at * 1000);
  when.dateTime = at.toISOString();
  when.textContent = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = payload.text;

  item.append(when, who, text);
  list.append(item);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function addNotice(text) {
  const item = document.createElement("li");
  item.className = "notice";
  item.textContent = text;
  ui.messages.append(item);
}

// ------------------------------------------------------------ presence

function myStatus() {
  return document.visibilityState === "hidden" ? "away" : "online";
}

function renderPresence() {
  if (!presence) return;
  const members = presence.list();
  ui.members.textContent = presence.count === 1 ? "1 member" : `${presence.count} members`;
  const items = members.map(({ user: name, entries }) => {
    const item = document.createElement("li");
    // A user with several devices is online if any of them is.
    const status = entries.some((e) => e.meta.status === "online") ? "online" : entries[0]?.meta.status || "online";
    item.dataset.user = name;
    item.dataset.status = status;
    if (name === user) item.classList.add("me");
    const label = document.createElement("span");
    label.className = "presence-name";
    label.textContent = name;
    const state = document.createElement("span");
    state.className = "presence-status";
    state.textContent = status;
    item.append(label, state);
    if (entries.length > 1) item.title = `${entries.length} devices`;
    return item;
  });
  ui.memberList.replaceChildren(...items);
  const typing = members
    .filter(({ user: name, entries }) => name !== user && entries.some((e) => e.meta.typing))
    .map(({ user: name }) => name);
  ui.typing.textContent =
    typing.length === 0
      ? ""
      : typing.length === 1
        ? `${typing[0]} is typing…`
        : `${typing.slice(0, -1).join(", ")} and ${typing.at(-1)} are typing…`;
}

function updatePresence(meta) {
  if (!presence || !room || room.state !== "joined" || !hub.connected) return;
  presence.update(meta).catch((err) => console.warn("triohub: presence:", err.code, err.message));
}

function typed() {
  if (!ui.message.value.trim()) {
    stopTyping();
    return;
  }
  if (typingTimer === null) updatePresence({ typing: true });
  clearTimeout(typingTimer);
  typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  if (typingTimer === null) return;
  clearTimeout(typingTimer);
  typingTimer = null;
  updatePresence({ typing: null });
}

// ------------------------------------------------------------ rooms

async function enterRoom() {
  const roomName = roomFromHash();
  user = ui.name.value.trim() || randomName();
  ui.name.value = user;
  ui.room.value = roomName;
  ui.roomLabel.textContent = `#${roomName}`;
  document.title = `#${roomName} · triohub chat`;
  try {
    localStorage.setItem(NAME_KEY, user);
  } catch {
    // storage may be disabled
  }

  if (room) {
    const old = room;
    room = null;
    old.leave().catch(() => {}); // the connection may be down: nothing to undo then
  }
  ui.messages.replaceChildren(); // this room's history comes with the join
  ui.members.textContent = "";
  ui.memberList.replaceChildren();
  ui.typing.textContent = "";
  clearTimeout(typingTimer);
  typingTimer = null;
  showError("");

  // Handlers go on before the join, so no Push after the Reply is missed.
  const topic = hub.topic(`room:${roomName}`);
  const here = new Presence(topic);
  topic.on("message", addMessage);
  here.on("sync", () => room === topic && renderPresence());
  here.on("join", (name) => room === topic && name !== user && addNotice(`${name} joined`));
  here.on("leave", (name) => room === topic && name !== user && addNotice(`${name} left`));
  room = topic;
  presence = here;
  showStatus();
  try {
    // The key is this tab's: reconnecting, it takes its own entry back.
    await topic.join({ user, $presence: { key: Presence.deviceKey(), meta: { status: myStatus() } } });
  } catch (err) {
    if (room !== topic) return;
    if (err.code === "name_taken" && !nameChosen) {
      ui.name.value = randomName();
      nameChosen = true; // one new name; if that is taken too, say so
      enterRoom();
      return;
    }
    const why =
      err.code === "name_taken"
        ? `the name ${user} is taken there; choose another`
        : err.message || err.code;
    showError(`Could not join #${roomName}: ${why}`);
  }
  showStatus();
}

async function sendMessage() {
  const text = ui.message.value.trim();
  if (!text || !room) return;
  ui.send.disabled = true;
  try {
    stopTyping();
    // The message shows up when the room broadcasts it back, like everyone's.
    await room.publish("message", { text }, { ack: true });
    ui.message.value = "";
    showError("");
  } catch (err) {
    showError(`Not sent: ${err.message || err.code}`);
  } finally {
    showStatus();
    ui.message.focus();
  }
}

// ------------------------------------------------------------ wiring

function connectHub() {
  hub = new TrioHub(wsUrl);
  hub.on("state", showStatus);
  hub.on("joined", ({ topic, payload, rejoined }) => {
    if (room && topic === room.name && rejoined) addNotice("Reconnected.");
    showStatus();
  });
  hub.on("unrecovered", ({ topic }) => {
    // The hub could not replay all that was said while we were away.
    if (room && topic === room.name) addNotice("Some messages were missed while offline.");
  });
  hub.on("ended", ({ topic, code, reason, rejoinInMs }) => {
    if (!room || topic !== room.name) return;
    if (rejoinInMs != null) addNotice(`The room restarted (${code}); joining again…`);
    else showError(`You left #${topic.slice("room:".length)}: ${reason || code}`);
    showStatus();
  });
  hub.on("close", (event) => {
    window.chatDemo.closes.push(event);
    if (event.reconnectInMs == null && event.code === 1008) {
      showError(`The hub closed the connection: ${event.reason || "policy violation"}. Reload to try again.`);
    }
  });
  hub.on("error", (err) => console.warn("triohub:", err.code, err.message));

  hub.open().then(enterRoom, (err) => {
    // The first attempt failed: the hub does not retry that one by itself.
    setStatus("offline", "Cannot reach the hub; retrying…");
    console.warn("triohub:", err.message);
    setTimeout(connectHub, 3000);
  });
}

ui.identity.addEventListener("submit", (event) => {
  event.preventDefault();
  nameChosen = true;
  const wanted = ui.room.value.trim();
  if (ROOM_NAME.test(wanted) && wanted !== roomFromHash()) {
    location.hash = wanted; // hashchange joins it
  } else if (hub && hub.state !== "closed") {
    enterRoom(); // same room, maybe a new name (a join waits for the connection)
  }
});

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage();
});

ui.message.addEventListener("input", typed);

document.addEventListener("visibilitychange", () => updatePresence({ status: myStatus() }));

window.addEventListener("hashchange", () => {
  if (hub && hub.state !== "closed") enterRoom();
});

ui.name.value = initialName();
ui.room.value = roomFromHash();
showStatus();
connectHub();
