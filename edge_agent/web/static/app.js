// The status page: polls /api/status every 2 s, appends new score points per machine, and sends
// operator commands with the password (kept in this tab's sessionStorage only). No libraries, no
// other origin: a plant network has no internet.
"use strict";

const POLL_MS = 2000;
const HOUR = 3600;
const cards = new Map(); // machine -> {el, points, lastTs}
const tiles = new Map(); // machine -> the overview's tile
const DETAIL_ALL_UP_TO = 4; // up to this many machines every detail shows; beyond, the one picked
let controls = false;
let firstPoll = true;

function selected() {
  const m = /^#m=(.+)$/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

function shown(machine, count) {
  const s = selected();
  return s ? s === machine : count <= DETAIL_ALL_UP_TO;
}

function $(root, sel) { return root.querySelector(sel); }

function fmt(x, digits) { return x === null || x === undefined ? "-" : Number(x).toFixed(digits); }

function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

function card(m) {
  let c = cards.get(m.machine);
  if (c) return c;
  const el = document.getElementById("machine-card").content.firstElementChild.cloneNode(true);
  el.id = `machine-${m.machine}`;
  el.dataset.machine = m.machine;
  $(el, ".name").textContent = m.machine;
  for (const b of el.querySelectorAll("button[data-command]")) {
    b.addEventListener("click", () => command(m.machine, b.dataset.command, el));
  }
  for (const b of el.querySelectorAll("button[data-range]")) {
    b.addEventListener("click", () => trend(cards.get(m.machine), m.machine, b.dataset.range));
  }
  document.getElementById("machines").appendChild(el);
  c = { el, points: [], lastTs: null, alarms: new Map() };
  cards.set(m.machine, c);
  return c;
}

function tile(m) {
  let el = tiles.get(m.machine);
  if (!el) {
    el = document.getElementById("machine-tile").content.firstElementChild.cloneNode(true);
    el.dataset.machine = m.machine;
    $(el, ".name").textContent = m.machine;
    el.addEventListener("click", () => { location.hash = `m=${encodeURIComponent(m.machine)}`; });
    document.getElementById("overview").appendChild(el);
    tiles.set(m.machine, el);
  }
  badges(el, m);
  const last = m.alarms.length ? m.alarms[0] : null;
  $(el, ".last-alarm").textContent = last ? `last alarm ${when(last.started_at)}` : "no alarm since the agent started";
  spark($(el, ".spark"), m.day || [], m.threshold);
}

// The last day's hourly median scores (and the threshold) as a small line: a drift shows at a glance.
function spark(canvas, pts, thr) {
  const g = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  g.clearRect(0, 0, W, H);
  const vals = pts.map((p) => p[1]).filter((v) => v !== null);
  if (!vals.length) return;
  const hi = Math.max(...vals, thr || 0) * 1.1 || 1;
  const t1 = Math.floor(Date.now() / 1000 / HOUR) * HOUR, t0 = t1 - 23 * HOUR;
  const x = (t) => 2 + ((t - t0) / (23 * HOUR)) * (W - 4);
  const y = (v) => H - 2 - (v / hi) * (H - 4);
  if (thr) {
    g.strokeStyle = "#d62828";
    g.setLineDash([4, 3]);
    g.beginPath(); g.moveTo(0, y(thr)); g.lineTo(W, y(thr)); g.stroke();
    g.setLineDash([]);
  }
  g.strokeStyle = "#2060c0";
  g.lineWidth = 1.5;
  g.beginPath();
  let on = false;
  for (const p of pts) {
    if (p[1] === null) { on = false; continue; }
    on ? g.lineTo(x(p[0]), y(p[1])) : g.moveTo(x(p[0]), y(p[1]));
    on = true;
  }
  g.stroke();
}

async function trend(c, machine, range) {
  const r = await getJSON(`/api/machines/${encodeURIComponent(machine)}/trend?range=${range}`);
  const canvas = $(c.el, ".trend");
  canvas.hidden = false;
  c.el.dataset.trendHours = String(r.hours.length);
  const g = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = 4;
  g.clearRect(0, 0, W, H);
  if (!r.hours.length) return;
  const t0 = r.since, t1 = r.until;
  let hi = 0;
  for (const h of r.hours) hi = Math.max(hi, h[2] || 0, h[3] || 0);
  hi = hi * 1.1 || 1;
  const x = (t) => pad + ((t - t0) / Math.max(1, t1 - t0)) * (W - 2 * pad);
  const y = (v) => H - pad - (v / hi) * (H - 2 * pad);
  for (const [col, k, dash] of [["#9bb7e0", 2, []], ["#2060c0", 1, []], ["#d62828", 3, [6, 4]]]) {
    g.strokeStyle = col;
    g.setLineDash(dash);
    g.beginPath();
    let on = false;
    for (const h of r.hours) {
      if (h[k] === null) { on = false; continue; }
      on ? g.lineTo(x(h[0]), y(h[k])) : g.moveTo(x(h[0]), y(h[k]));
      on = true;
    }
    g.stroke();
  }
  g.setLineDash([]);
  g.fillStyle = "#d62828";
  for (const h of r.hours) if (h[4]) g.fillRect(x(h[0]) - 1, 0, 2, 6); // hours with an alarm
}

// The state, alarm-state and severity badges of a tile or a detail card, and the data-* the tests read
function badges(el, m) {
  const state = $(el, ".state");
  state.textContent = m.state;
  state.className = `state badge state-${m.state}`;
  const alarm = (m.alarm && m.alarm.state) || "normal";
  const a = $(el, ".alarm-state");
  a.textContent = alarm.replace("_", " ");
  a.className = `alarm-state badge alarm-${alarm}`;
  const sev = $(el, ".severity");
  sev.hidden = m.severity !== "watch";
  sev.title = m.severity_reason || "";
  el.dataset.state = m.state;
  el.dataset.alarmState = alarm;
  el.dataset.severity = m.severity || "normal";
}

function render(m) {
  const c = card(m);
  const el = c.el;
  badges(el, m);
  let reason = m.reason || "";
  if (m.learning_progress !== null && m.learning_progress !== undefined && !reason) {
    reason = `learning: ${(100 * m.learning_progress).toFixed(0)} %`;
  }
  $(el, ".reason").textContent = reason;
  const inp = m.input || {};
  $(el, ".address").textContent = inp.address || "";
  const online = $(el, ".online");
  online.textContent = inp.online ? "online" : `offline${inp.error ? ": " + inp.error : ""}`;
  online.className = `online badge ${inp.online ? "input-online" : "input-offline"}`;
  el.dataset.inputOnline = inp.online ? "yes" : "no";
  $(el, ".score").textContent = fmt(m.score, 4);
  $(el, ".threshold").textContent = fmt(m.threshold, 4);
  $(el, ".level").textContent = m.level_dbfs === null ? "-" : `${fmt(m.level_dbfs, 1)} dBFS`;
  $(el, ".scale").textContent = m.threshold_scale !== 1 ? `(threshold x${m.threshold_scale} by an operator)` : "";
  for (const b of el.querySelectorAll(".controls button, .controls input, .mark-normal")) b.disabled = !controls;
  renderAlarms(c, m);
  renderNormal(c, m.normal_clips || []);
}

// A/B listening: the enrolled normal clips, created once (re-creating would stop one playing)
function renderNormal(c, urls) {
  const p = $(c.el, ".normal");
  p.hidden = !urls.length;
  if (p.dataset.urls === urls.join(" ")) return;
  p.dataset.urls = urls.join(" ");
  for (const old of p.querySelectorAll("audio")) old.remove();
  for (const u of urls) {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "metadata";
    audio.src = u;
    p.appendChild(audio);
  }
}

function renderAlarms(c, m) {
  const list = $(c.el, ".alarms");
  $(c.el, ".no-alarms").hidden = m.alarms.length > 0;
  // Items are created once and updated in place: re-creating them would stop a playing clip.
  for (const a of m.alarms.slice().reverse()) {
    let li = c.alarms.get(a.alarm_id);
    if (!li) {
      li = document.createElement("li");
      li.dataset.alarmId = a.alarm_id;
      li.innerHTML =
        '<span class="what"></span> <button class="mark-normal" type="button">this was normal</button>' +
        '<div class="changed"></div><div class="evidence"></div>';
      const id = a.alarm_id;
      $(li, ".mark-normal").addEventListener("click", () => command(m.machine, "normal", c.el, { alarm_id: id }));
      $(li, ".mark-normal").disabled = !controls;
      list.prepend(li);
      c.alarms.set(a.alarm_id, li);
    }
    const ended = a.ended_at ? `ended ${when(a.ended_at)} (${a.reason})` : "active";
    $(li, ".what").textContent =
      `${when(a.started_at)}: peak ${fmt(a.peak_score, 4)} over threshold ${fmt(a.threshold, 4)}, ${ended}`;
    // what changed, against the enrolled sound: the bands furthest from normal and the level
    const x = a.explanation;
    $(li, ".changed").textContent = x
      ? "changed: " +
        x.bands.map((b) => `${b.centre_hz} Hz ${b.change_db > 0 ? "+" : ""}${b.change_db} dB`).join(", ") +
        (x.level_change_db != null ? `; level ${x.level_change_db > 0 ? "+" : ""}${x.level_change_db} dB` : "")
      : "";
    const ev = $(li, ".evidence");
    if (a.evidence && a.evidence.ready && !$(ev, "audio")) {
      ev.textContent = "";
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.preload = "metadata";
      audio.src = a.evidence.wav_url;
      const link = document.createElement("a");
      link.href = a.evidence.png_url;
      const img = document.createElement("img");
      img.src = a.evidence.png_url;
      img.alt = `spectrogram and scores of alarm ${a.alarm_id}`;
      img.loading = "lazy";
      link.appendChild(img);
      ev.append(audio, link);
    } else if (a.evidence && a.evidence.error) {
      ev.textContent = `evidence ${a.evidence.error}`;
    } else if (a.evidence && !a.evidence.ready) {
      ev.textContent = "evidence: being recorded";
    }
  }
  for (const [id, li] of c.alarms) {
    if (!m.alarms.some((a) => a.alarm_id === id)) { li.remove(); c.alarms.delete(id); }
  }
}

async function updateScores(m) {
  const c = card(m);
  const after = c.lastTs === null ? "" : `?after=${c.lastTs}`;
  const r = await getJSON(`/api/machines/${encodeURIComponent(m.machine)}/scores${after}`);
  if (r.points.length) {
    c.points.push(...r.points);
    c.lastTs = r.points[r.points.length - 1][0];
    const horizon = c.lastTs - HOUR;
    while (c.points.length && c.points[0][0] < horizon) c.points.shift();
  }
  c.el.dataset.points = String(c.points.length);
  draw($(c.el, "canvas"), c.points);
}

function draw(canvas, pts) {
  const g = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = 4;
  g.clearRect(0, 0, W, H);
  if (!pts.length) return;
  const t1 = pts[pts.length - 1][0], t0 = t1 - HOUR;
  let hi = 0;
  for (const p of pts) hi = Math.max(hi, p[1] || 0, p[2] || 0);
  hi = hi * 1.1 || 1;
  const x = (t) => pad + ((t - t0) / HOUR) * (W - 2 * pad);
  const y = (v) => H - pad - (v / hi) * (H - 2 * pad);
  g.lineWidth = 1.5;
  g.strokeStyle = "#2060c0";
  g.beginPath();
  pts.forEach((p, i) => (i ? g.lineTo(x(p[0]), y(p[1])) : g.moveTo(x(p[0]), y(p[1]))));
  g.stroke();
  g.strokeStyle = "#d62828";
  g.setLineDash([6, 4]);
  g.beginPath();
  pts.forEach((p, i) => {
    if (p[2] === null) return;
    i ? g.lineTo(x(p[0]), y(p[2])) : g.moveTo(x(p[0]), y(p[2]));
  });
  g.stroke();
  g.setLineDash([]);
}

async function command(machine, name, el, extra) {
  const result = $(el, ".result");
  const body = { command: name, ...(extra || {}) };
  if (name === "shelve") body.minutes = Number($(el, ".minutes").value);
  const password = document.getElementById("password").value;
  sessionStorage.setItem("edge-agent-password", password);
  result.className = "result";
  result.textContent = "…";
  try {
    const r = await fetch(`/api/machines/${encodeURIComponent(machine)}/command`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${password}` },
      body: JSON.stringify(body),
    });
    const answer = await r.json();
    result.className = `result ${answer.ok ? "ok" : "error"}`;
    result.textContent = answer.ok ? answer.message : answer.error;
    if (answer.state) render({ ...lastSeen.get(machine), ...answer, machine, alarms: lastSeen.get(machine).alarms });
  } catch (e) {
    result.className = "result error";
    result.textContent = `no answer: ${e.message}`;
  }
}

const lastSeen = new Map();

async function poll() {
  try {
    const s = await getJSON("/api/status");
    document.getElementById("offline").hidden = true;
    document.getElementById("node").textContent = s.node;
    document.getElementById("model").textContent = `model ${s.model.name} ${s.model.version}`;
    document.getElementById("updated").textContent = `updated ${new Date(s.ts).toLocaleTimeString()}`;
    controls = s.controls;
    document.getElementById("login").hidden = !controls;
    document.getElementById("readonly").hidden = controls;
    const count = s.machines.length;
    document.getElementById("overview").hidden = count <= 1 || selected() !== null;
    document.getElementById("back").hidden = selected() === null;
    const polls = [];
    for (const m of s.machines) {
      lastSeen.set(m.machine, m);
      tile(m);
      render(m);
      const c = cards.get(m.machine);
      c.el.hidden = !shown(m.machine, count);
      if (!c.el.hidden) polls.push(updateScores(m)); // only what is shown polls its scores
    }
    await Promise.all(polls);
    document.body.dataset.loaded = "true";
    if (firstPoll) {
      firstPoll = false;
      window.edgeAgentLoadedMs = performance.now(); // benchmarks/page.py reads it
    }
  } catch (e) {
    document.getElementById("offline").hidden = false;
  }
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, POLL_MS);
}

let pollTimer = null;

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("password").value = sessionStorage.getItem("edge-agent-password") || "";
  document.getElementById("login").addEventListener("submit", (e) => e.preventDefault());
  window.addEventListener("hashchange", () => {
    window.scrollTo(0, 0);
    const s = selected();
    if (s && cards.get(s)) trend(cards.get(s), s, "day");
    clearTimeout(pollTimer);
    poll();
  });
  poll();
});
