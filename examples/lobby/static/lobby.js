// The lobby example's page: a lobby, a matchmaking queue, and a match drawn
// on a canvas from the tick state the match actor broadcasts.
import { Presence, TrioHub } from "/triohub.js";

const $ = (id) => document.getElementById(id);
const COLORS = ["#f66", "#6cf", "#fc5", "#9e6", "#c8f", "#f9c", "#8ff", "#fa6"];
const INPUT_HZ = 20;

let hub = null;
let me = null;
let lobby = null;
let lobbyPresence = null;
let lobbyState = null;
let queue = null;
let match = null;
let state = null;
let seq = 0;
let sparks = [];
const held = new Set();

function say(element, text, error = false) {
  element.textContent = text;
  element.classList.toggle("error", error);
}

function log(text) {
  const item = document.createElement("li");
  item.textContent = text;
  $("events").prepend(item);
  while ($("events").children.length > 30) $("events").lastChild.remove();
}

// --- connecting -------------------------------------------------------------

$("name").value = new URLSearchParams(location.search).get("name")
  ?? `player-${Math.floor(Math.random() * 1000)}`;

$("who").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (hub) return;
  me = $("name").value.trim();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  try {
    hub = await TrioHub.connect(`${scheme}://${location.host}/ws`, { params: { name: me } });
  } catch (error) {
    hub = null;
    say($("connection"), `cannot connect: ${error.message}`, true);
    return;
  }
  hub.on("state", (value) => {
    $("connection").dataset.state = value;
    say($("connection"), `${me}: ${value}`);
  });
  hub.on("ended", onEnded);
  $("connection").dataset.state = hub.state;
  say($("connection"), `${me}: ${hub.state}`);
  $("name").disabled = true;
  $("connect").disabled = true;
  // Back from a reload within the match's grace: the same slot is ours.
  const previous = sessionStorage.getItem(`lobby-match:${me}`);
  if (previous) goToMatch({ topic: previous, players: [] });
});

function onEnded({ topic, code, reason }) {
  if (lobby && topic === lobby.name) {
    say($("lobby-status"), `out of the lobby (${code}): ${reason}`, code !== "matched");
    leftLobby();
  } else if (queue && topic === queue.name) {
    if (code !== "matched") say($("queue-status"), `out of the queue (${code}): ${reason}`, true);
    leftQueue();
  } else if (match && topic === match.name) {
    say($("result"), `${code === "match_over" ? "Match over" : "Match ended"}: ${reason} (${code})`,
      code !== "match_over");
    match = null;
    sessionStorage.removeItem(`lobby-match:${me}`);
  }
}

// --- the lobby ----------------------------------------------------------------

$("lobby-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!hub || lobby) return;
  const topic = hub.topic(`lobby:${$("lobby-id").value.trim()}`);
  // Who is in comes from the hub's presence; who is ready from the lobby.
  const presence = new Presence(topic);
  presence.on("sync", () => renderLobby());
  topic.on("lobby", (value) => { lobbyState = value; renderLobby(); });
  topic.on("ready_check", ({ seconds }) => say($("lobby-status"), `Ready check: ${seconds} s to be ready`));
  topic.on("ready_check_failed", ({ not_ready: late }) =>
    say($("lobby-status"), `Not ready in time: ${late.join(", ")}`, true));
  topic.on("match_found", (found) => goToMatch(found));
  try {
    await topic.join({
      capacity: Number($("capacity").value),
      settings: { target: Number($("target").value) },
    });
  } catch (error) {
    say($("lobby-status"), `${error.code}: ${error.message}`, true);
    return;
  }
  lobby = topic;
  lobbyPresence = presence;
  renderLobby();
  say($("lobby-status"), `in ${topic.name}`);
  for (const id of ["ready", "start", "leave-lobby"]) $(id).disabled = false;
  $("join-lobby").disabled = true;
});

function renderLobby() {
  const value = lobbyState;
  if (!value || !lobbyPresence?.synced) return;
  const ready = new Map(value.players.map((player) => [player.name, player.ready]));
  const list = $("players");
  list.replaceChildren();
  for (const { user } of lobbyPresence.list()) {
    const player = { name: user, ready: ready.get(user) ?? false };
    const item = document.createElement("li");
    item.dataset.player = player.name;
    item.dataset.ready = player.ready;
    item.dataset.host = player.name === value.host;
    item.textContent = player.name;
    if (value.host === me && player.name !== me) {
      const kick = document.createElement("button");
      kick.textContent = "kick";
      kick.className = "kick";
      kick.addEventListener("click", () => lobby?.publish("kick", { player: player.name }, { ack: true })
        .catch((error) => say($("lobby-status"), error.message, true)));
      item.append(" ", kick);
    }
    list.append(item);
  }
  const mine = value.players.find((player) => player.name === me);
  $("ready").textContent = mine?.ready ? "Not ready" : "Ready";
  $("ready").dataset.ready = mine?.ready ?? false;
  $("start").disabled = value.host !== me;
  $("lobby-panel").dataset.capacity = value.capacity;
}

$("ready").addEventListener("click", () => {
  const ready = $("ready").dataset.ready !== "true";
  lobby?.publish("ready", { ready }, { ack: true }).catch((error) => say($("lobby-status"), error.message, true));
});

$("start").addEventListener("click", () => {
  lobby?.publish("start", null, { ack: true }).catch((error) => say($("lobby-status"), error.message, true));
});

$("leave-lobby").addEventListener("click", async () => {
  await lobby?.leave();
  leftLobby();
  say($("lobby-status"), "left the lobby");
});

function leftLobby() {
  lobby = null;
  lobbyPresence = null;
  lobbyState = null;
  $("players").replaceChildren();
  for (const id of ["ready", "start", "leave-lobby"]) $(id).disabled = true;
  $("join-lobby").disabled = false;
}

// --- the queue ------------------------------------------------------------------

$("queue-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!hub || queue) return;
  const topic = hub.topic(`queue:${$("mode").value}`);
  topic.on("queued", ({ players }) => say($("queue-status"), `queued: ${players} waiting`));
  topic.on("match_found", (found) => goToMatch(found));
  try {
    await topic.join({ rating: Number($("rating").value) });
  } catch (error) {
    say($("queue-status"), `${error.code}: ${error.message}`, true);
    return;
  }
  queue = topic;
  $("queue").disabled = true;
  $("leave-queue").disabled = false;
});

$("leave-queue").addEventListener("click", async () => {
  await queue?.leave();
  leftQueue();
  say($("queue-status"), "left the queue");
});

function leftQueue() {
  queue = null;
  $("queue").disabled = false;
  $("leave-queue").disabled = true;
}

// --- the match --------------------------------------------------------------------

async function goToMatch({ topic: name, players }) {
  if (match) return;
  if (players.length) say($("queue-status"), `matched with ${players.filter((p) => p !== me).join(", ")}`);
  const topic = hub.topic(name);
  topic.on("state", (value) => { state = value; });
  topic.on("scores", renderScores);
  topic.on("spark", ({ x, y }) => sparks.push({ x, y, until: performance.now() + 400 }));
  topic.on("scored", ({ name: who, score }) => log(`${who} took a coin (${score})`));
  for (const event of ["player_arrived", "player_away", "player_back", "player_left"]) {
    topic.on(event, ({ name: who }) => log(`${who}: ${event.replace("player_", "")}`));
  }
  topic.on("match_over", ({ winner, reason }) => log(`match over: ${winner ? `${winner} won` : reason}`));
  try {
    const reply = await topic.join({});
    state = reply.state;
  } catch (error) {
    say($("result"), `${error.code}: ${error.message}`, true);
    sessionStorage.removeItem(`lobby-match:${me}`);
    return;
  }
  match = topic;
  sessionStorage.setItem(`lobby-match:${me}`, name);
  $("match-name").textContent = name;
  $("match-panel").dataset.match = name;
  say($("result"), "");
}

function renderScores(scores) {
  const list = $("scores");
  list.replaceChildren();
  for (const [name, score] of Object.entries(scores).sort((a, b) => b[1] - a[1])) {
    const item = document.createElement("li");
    item.dataset.player = name;
    item.dataset.score = score;
    item.textContent = `${name}: ${score}`;
    list.append(item);
  }
}

const KEYS = {
  ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1],
  a: [-1, 0], d: [1, 0], w: [0, -1], s: [0, 1],
};
addEventListener("keydown", (event) => {
  if (KEYS[event.key] && document.activeElement?.tagName !== "INPUT") {
    held.add(event.key);
    event.preventDefault();
  }
});
addEventListener("keyup", (event) => held.delete(event.key));

function steering() {
  if ($("autopilot").checked && state) {
    const mine = state.players.find((player) => player.name === me);
    if (mine) {
      const dx = state.coin[0] - mine.x;
      const dy = state.coin[1] - mine.y;
      const length = Math.hypot(dx, dy) || 1;
      return [dx / length, dy / length];
    }
  }
  let dx = 0;
  let dy = 0;
  for (const key of held) {
    dx += KEYS[key][0];
    dy += KEYS[key][1];
  }
  return [dx, dy];
}

// Inputs go at a fixed rate, as the match ticks; the match applies them in order.
setInterval(() => {
  if (!match || match.state !== "joined") return;
  const [dx, dy] = steering();
  seq += 1;
  match.publish("input", { dx, dy, seq }).catch(() => {});
}, 1000 / INPUT_HZ);

function draw() {
  const canvas = $("arena");
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (state) {
    context.fillStyle = "#fd3";
    context.beginPath();
    context.arc(state.coin[0], state.coin[1], 7, 0, 2 * Math.PI);
    context.fill();
    for (const player of state.players) {
      context.globalAlpha = player.present ? 1 : 0.35;
      context.fillStyle = COLORS[player.slot % COLORS.length];
      context.beginPath();
      context.arc(player.x, player.y, player.name === me ? 10 : 8, 0, 2 * Math.PI);
      context.fill();
      context.fillText(player.name, player.x + 12, player.y + 4);
    }
    context.globalAlpha = 1;
    const now = performance.now();
    sparks = sparks.filter((spark) => spark.until > now);
    context.strokeStyle = "#fff";
    for (const spark of sparks) {
      context.beginPath();
      context.arc(spark.x, spark.y, 20 - (spark.until - now) / 25, 0, 2 * Math.PI);
      context.stroke();
    }
    $("match-panel").dataset.tick = state.tick;
    if (match) {
      say($("match-status"), `tick ${state.tick} · tick lateness ${state.late_ms} ms · missed ${state.missed}`);
    }
  }
  requestAnimationFrame(draw);
}
requestAnimationFrame(draw);
