// observer.js: the observer page. It joins the hub's `$observer` topic over
// the hub's own protocol (/observer/ws, with the admin token when the page's
// URL has one) and draws every `snapshot` the hub pushes: the supervision
// tree, the topics, the connections and the last crashes. Nothing is
// polled: the hub pushes a snapshot every admin.observer_interval_seconds.
//
// Every value from the hub goes into the page as text (textContent), never
// as HTML: topic names and tracebacks come from clients and services.

import { TrioHub } from "/triohub.js";

const TOPIC = "$observer";
const TOKEN_KEY = "triohub-observer-token";
const RETRY_MS = 2000;

const $ = (id) => document.getElementById(id);

// Supervisors the viewer folded, by path, and crashes it opened, kept across redraws.
const folded = new Set();
const openCrashes = new Set();
let lastSnapshotAt = 0;
let interval = 1;

/** The admin token: from ?token= (then taken out of the address bar), or this tab's storage. */
function takeToken() {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    params.delete("token");
    const query = params.toString();
    history.replaceState(null, "", location.pathname + (query ? `?${query}` : "") + location.hash);
    return token;
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

function element(tag, { text = null, className = null, title = null, data = {} } = {}) {
  const node = document.createElement(tag);
  if (text !== null && text !== undefined) node.textContent = String(text);
  if (className) node.className = className;
  if (title) node.title = title;
  for (const [key, value] of Object.entries(data)) node.dataset[key] = String(value);
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function rate(value) {
  return value === null || value === undefined ? "–" : `${value}/s`;
}

// ------------------------------------------------------------------ the tree

function actorRow(actor) {
  const row = element("div", { className: `actor ${actor.kind}` });
  row.append(element("span", { text: actor.name, className: "name", title: `child id: ${actor.child_id}` }));
  row.append(element("span", { text: actor.state, className: `state state-${actor.state}` }));
  const mailbox = element("span", { className: "mailbox", title: "mailbox depth / capacity" });
  const meter = element("meter");
  meter.min = 0;
  meter.max = Math.max(1, actor.capacity);
  meter.value = actor.mailbox;
  meter.high = meter.max * 0.5;
  meter.optimum = 0;
  mailbox.append(meter, element("span", { text: `${actor.mailbox}/${actor.capacity}` }));
  row.append(mailbox);
  row.append(element("span", { text: `drops ${actor.dropped}`, className: actor.dropped ? "drops warn" : "drops" }));
  row.append(
    element("span", { text: `restarts ${actor.restarts}`, className: actor.restarts ? "restarts bad" : "restarts" }),
  );
  if (actor.kind === "supervisor") {
    const below = childRestarts(actor);
    const count = actor.children.length + actor.more;
    row.append(element("span", { text: count === 1 ? "1 child" : `${count} children`, className: "count" }));
    row.append(
      element("span", {
        text: `${plural(below, "restart")} below`,
        className: below ? "below bad" : "below",
        data: { childRestarts: below },
      }),
    );
  }
  return row;
}

function childRestarts(actor) {
  return actor.children.reduce((sum, child) => sum + child.restarts, 0);
}

function actorNode(actor, path) {
  const item = element("li", {
    data: {
      actor: actor.name,
      childId: actor.child_id,
      kind: actor.kind,
      state: actor.state,
      restarts: actor.restarts,
      mailbox: actor.mailbox,
    },
  });
  if (actor.kind !== "supervisor" || (actor.children.length === 0 && actor.more === 0)) {
    item.append(actorRow(actor));
    return item;
  }
  const details = element("details");
  details.open = !folded.has(path);
  details.addEventListener("toggle", () => {
    if (details.open) folded.delete(path);
    else folded.add(path);
  });
  const summary = element("summary");
  summary.append(actorRow(actor));
  const list = element("ul");
  for (const child of actor.children) list.append(actorNode(child, `${path}/${child.child_id}`));
  if (actor.more) list.append(element("li", { text: `… and ${actor.more} more`, className: "more" }));
  details.append(summary, list);
  item.append(details);
  return item;
}

function drawTree(tree) {
  const root = element("ul", { className: "root" });
  root.append(actorNode(tree, tree.child_id));
  $("tree").replaceChildren(root);
}

// ------------------------------------------------------------ topics, connections

function cell(text, className = null) {
  return element("td", { text, className });
}

function drawTopics(topics, more) {
  const rows = topics.map((topic) => {
    const row = element("tr", { data: { topic: topic.name } });
    const busy = topic.mailbox > topic.capacity / 2;
    row.append(
      cell(topic.name, "name"),
      cell(topic.route ?? ""),
      cell(topic.members, "num"),
      cell(rate(topic.rate), "num"),
      cell(`${topic.mailbox}/${topic.capacity}`, busy ? "num warn" : "num"),
    );
    return row;
  });
  if (rows.length === 0) {
    const row = element("tr");
    const empty = cell("no live topic", "quiet");
    empty.colSpan = 5;
    row.append(empty);
    rows.push(row);
  }
  $("topics").tBodies[0].replaceChildren(...rows);
  $("topics-more").textContent = more ? `(and ${more} more)` : "";
}

function drawConnections(connections, more) {
  const rows = connections.map((connection) => {
    const row = element("tr", { data: { connection: connection.id } });
    const extra = connection.topic_count - connection.topics.length;
    const topics = connection.topics.join(", ") + (extra > 0 ? ` (+${extra})` : "");
    const kind = connection.transport + (connection.observer ? " (observer)" : "");
    row.append(
      cell(connection.id, "name"),
      cell(kind),
      cell(connection.remote ?? ""),
      cell(topics),
      cell(connection.outbox, connection.outbox ? "num warn" : "num"),
      cell(duration(connection.age), "num"),
    );
    return row;
  });
  $("connections").tBodies[0].replaceChildren(...rows);
  $("connections-more").textContent = more ? `(and ${more} more)` : "";
}

// ------------------------------------------------------------------ crashes

function drawCrashes(crashes) {
  const items = crashes.map((crash) => {
    const item = element("li", { data: { actor: crash.actor } });
    const key = `${crash.actor}@${crash.at}`;
    const details = element("details");
    details.open = openCrashes.has(key);
    details.addEventListener("toggle", () => {
      if (details.open) openCrashes.add(key);
      else openCrashes.delete(key);
    });
    const summary = element("summary");
    const at = new Date(crash.at * 1000).toLocaleTimeString();
    summary.append(
      element("time", { text: at }),
      element("span", { text: crash.actor, className: "name" }),
      element("span", { text: ` under ${crash.supervisor} (${crash.restart}): ` }),
      element("span", { text: crash.error, className: "error-text" }),
    );
    details.append(summary, element("pre", { text: crash.traceback, className: "traceback" }));
    item.append(details);
    return item;
  });
  $("crashes").replaceChildren(...items);
  $("no-crashes").hidden = crashes.length > 0;
}

// ------------------------------------------------------------------ the whole

function draw(snapshot) {
  const hub = snapshot.hub;
  interval = hub.interval || 1;
  lastSnapshotAt = Date.now();
  document.title = `${hub.name} · triohub observer`;
  $("hub-name").textContent = hub.name;
  $("stat-uptime").textContent = duration(hub.uptime);
  $("stat-connections").textContent = hub.connections;
  $("stat-topics").textContent = hub.topics;
  $("stat-in").textContent = rate(hub.messages_in_rate);
  $("stat-out").textContent = rate(hub.messages_out_rate);
  $("stat-version").textContent = hub.version;
  drawTree(snapshot.tree);
  drawTopics(snapshot.topics, snapshot.topics_more);
  drawConnections(snapshot.connections, snapshot.connections_more);
  drawCrashes(snapshot.crashes);
  setStatus("live", `Live · updated ${new Date().toLocaleTimeString()}`);
  document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots || 0) + 1);
}

// A hub that stops pushing (stopped, or frozen) shows as stale.
setInterval(() => {
  if (lastSnapshotAt && Date.now() - lastSnapshotAt > 3000 * interval) {
    setStatus("stale", `No snapshot for ${Math.round((Date.now() - lastSnapshotAt) / 1000)} s`);
  }
}, 1000);

/** Connect (trying again until the hub answers), then join the observer's topic. */
async function start() {
  const token = takeToken();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/observer/ws`;
  let hub;
  for (;;) {
    hub = new TrioHub(url, { params: token ? { token } : {} });
    try {
      await hub.open();
      break;
    } catch (error) {
      setStatus("error", `Cannot reach the hub (${error.message}); trying again…`);
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  }
  // Once connected, the client reconnects and joins again by itself.
  hub.on("state", (state) => {
    if (state === "reconnecting") setStatus("reconnecting", "Connection lost; reconnecting…");
    if (state === "closed") setStatus("closed", "Closed");
  });
  hub.on("ended", ({ reason }) => setStatus("reconnecting", `The observer ended (${reason}); joining again…`));
  const topic = hub.topic(TOPIC);
  topic.on("snapshot", draw);
  try {
    await topic.join();
  } catch (error) {
    setStatus("error", `The hub refused the observer: ${error.message}`);
  }
}

start();
