// sxtwin control room: plain JavaScript and SVG, no external resources.
// The bearer token lives in sessionStorage (gone when the tab closes). Live updates come over
// Server-Sent Events (/api/stream). Every plotted number is also in the DOM (data-values), so a
// test can check that the plot shows what /api/state returns.
"use strict";

const TOKEN_KEY = "sxtwin.token";
const SVGNS = "http://www.w3.org/2000/svg";
const COLORS = ["#58a6ff", "#3fb950", "#d29922", "#f778ba", "#a371f7", "#ff7b72", "#79c0ff", "#56d364"];
const $ = (sel) => document.querySelector(sel);
let me = null;
let plant = null;
let source = null;
let stateTimer = null;
let lastPlantTime = null;
let lastTrend = 0;

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (options.json !== undefined) { headers["Content-Type"] = "application/json"; options.body = JSON.stringify(options.json); }
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401) { logout("Session expired: log in again."); throw new Error("not authenticated"); }
  const text = await r.text();
  const body = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error(body && body.detail ? body.detail : r.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "" : String(c)));
  return e;
}

function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function fmt(v, digits = 4) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(digits - 1) : v.toPrecision(digits);
}

// ----------------------------------------------------------------------------- login

function showLogin(message) {
  $("#login-view").hidden = false; $("#main-view").hidden = true; $("#logout").hidden = true;
  $("#who").textContent = ""; $("#login-error").textContent = message || "";
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (source) { source.close(); source = null; }
  setLive(false);
  showLogin(message);
}

async function login(event) {
  event.preventDefault();
  const form = new URLSearchParams({ username: $("#login-user").value, password: $("#login-password").value });
  const r = await fetch("/auth/token", { method: "POST", body: form });
  const body = await r.json();
  if (!r.ok) { $("#login-error").textContent = body.detail || "log-in failed"; return; }
  sessionStorage.setItem(TOKEN_KEY, body.access_token);
  $("#login-password").value = "";
  await start();
}

// ----------------------------------------------------------------------------- start

async function start() {
  try {
    me = await api("/auth/me");
    plant = await api("/api/plant");
  } catch (e) { showLogin(token() ? String(e.message) : ""); return; }
  $("#login-view").hidden = true; $("#main-view").hidden = false; $("#logout").hidden = false;
  $("#who").textContent = me.user + " (" + me.role + ")";
  $("#plant-name").textContent = "— " + plant.name;
  const canOperate = me.permissions.includes("approve_proposal");
  document.querySelectorAll("button.op").forEach((b) => { b.disabled = !canOperate; });
  const select = $("#trend-tag");
  select.innerHTML = "";
  for (const ins of plant.instruments) {
    const names = ins.kind === "analyser" ? ins.elements.map((s) => ins.tag + "." + s) : [ins.tag + ".PV"];
    for (const n of names) select.append(el("option", { value: n }, n + (ins.description ? " — " + ins.description : "")));
  }
  select.value = plant.instruments.some((i) => i.tag === "AI-124") ? "AI-124.Dy" : select.options[0].value;
  await refreshState();
  await Promise.all([refreshTags(), refreshSetpoints(), refreshProposals(), refreshEvents(), refreshTrend()]);
  connectLive();
}

// ----------------------------------------------------------------------------- live updates

function setLive(on) {
  const b = $("#live-badge");
  b.textContent = on ? "live" : "offline";
  b.className = "badge " + (on ? "ok" : "off");
}

function connectLive() {
  if (source) source.close();
  source = new EventSource("/api/stream?access_token=" + encodeURIComponent(token()));
  source.onopen = () => setLive(true);
  source.onerror = () => setLive(false);
  source.addEventListener("state", () => scheduleState());
  source.addEventListener("tags", (m) => renderTags(JSON.parse(m.data).tags));
  source.addEventListener("proposal", () => { refreshProposals(); refreshSetpoints(); });
  source.addEventListener("write", () => refreshSetpoints());
  source.addEventListener("event", () => refreshEvents());
  source.addEventListener("event_ack", () => refreshEvents());
  source.addEventListener("mode", () => { refreshState(); refreshSetpoints(); });
}

function scheduleState() {
  if (stateTimer) return;  // at most one refresh in flight per burst of updates
  stateTimer = setTimeout(async () => {
    stateTimer = null;
    await refreshState();
    if (Date.now() - lastTrend > 10000) await refreshTrend();
  }, 100);
}

// ----------------------------------------------------------------------------- state and profiles

async function refreshState() {
  let s;
  try { s = await api("/api/state"); } catch (e) { $("#estimator-line").textContent = e.message; return; }
  lastPlantTime = s.plant_time_h;
  $("#plant-time").textContent = s.plant_time_h.toFixed(2);
  $("#mode-badge").textContent = s.mode.replace("_", " ");
  $("#mode-badge").className = "badge " + s.mode;
  $("#mode-text").textContent = s.mode.replace("_", " ");
  $("#health-badge").textContent = s.healthy ? "estimator ok" : "estimator unhealthy";
  $("#health-badge").className = "badge " + (s.healthy ? "ok" : "bad");
  $("#estimator-line").textContent = "estimator: " + s.updates + " updates with data, last at " +
    fmt(s.last_update_plant_h, 4) + " h, " + fmt((s.estimator_wall_s || 0) * 1000, 3) + " ms per step";
  const kpis = $("#kpis");
  kpis.innerHTML = "";
  for (const [name, k] of Object.entries(s.kpis)) {
    kpis.append(el("div", { class: "kpi" + (k.on_spec ? "" : " off"), "data-product": name },
      el("div", {}, name + (k.on_spec ? " on spec" : " OFF SPEC")),
      el("b", {}, (100 * k.purity).toFixed(3) + " %"), " purity (min " + (100 * k.purity_min).toFixed(2) + " %)",
      el("br"), el("span", {}, (100 * k.recovery).toFixed(2) + " % recovery (min " + (100 * k.recovery_min).toFixed(1) + " %)")));
  }
  const box = $("#profiles");
  box.innerHTML = "";
  for (const c of s.circuits) box.append(profilePlot(c, s.plant_time_h));
}

function profilePlot(c, plantTime) {
  const W = 960, H = 340, L = 64, R = 12, T = 12, B = 36;
  const elements = c.elements.filter((e) => e !== "Na" && e !== "NH4");  // rare earths; the cation is not a product
  const n = c.stages.length;
  const series = [];
  for (const phase of ["aqueous", "organic"]) {
    for (const e of elements) {
      series.push({ phase, element: e, values: c[phase + "_mol_per_l"][e], low: c[phase + "_low_mol_per_l"][e],
                    high: c[phase + "_high_mol_per_l"][e] });
    }
  }
  let lo = Infinity, hi = -Infinity;
  for (const s of series) for (const arr of [s.low, s.high]) for (const v of arr) {
    if (v > 0) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  lo = Math.max(lo, hi * 1e-14);
  const y0 = Math.floor(Math.log10(lo)), y1 = Math.ceil(Math.log10(hi));
  const x = (i) => L + (W - L - R) * (n > 1 ? i / (n - 1) : 0.5);
  const y = (v) => T + (H - T - B) * (1 - (Math.log10(Math.max(v, lo)) - y0) / Math.max(y1 - y0, 1));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", class: "profile", role: "img",
                            "data-circuit": c.name, "data-plant-time-h": String(plantTime) });
  for (let d = y0; d <= y1; d++) {
    root.append(svg("line", { x1: L, x2: W - R, y1: y(10 ** d), y2: y(10 ** d), class: "grid" }));
    const t = svg("text", { x: L - 6, y: y(10 ** d) + 4, "text-anchor": "end" }); t.textContent = "1e" + d; root.append(t);
  }
  let prev = null;
  c.sections.forEach((sec, i) => {
    if (sec !== prev) {
      if (i > 0) root.append(svg("line", { x1: x(i - 0.5), x2: x(i - 0.5), y1: T, y2: H - B, class: "section-line" }));
      const t = svg("text", { x: x(i) + 4, y: H - B + 14 }); t.textContent = sec + " (" + c.stages[i] + ")"; root.append(t);
      prev = sec;
    }
  });
  root.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  root.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  const label = svg("text", { x: L, y: H - 4 }); label.textContent = "stage (organic flows left to right)"; root.append(label);
  series.forEach((s) => {
    const color = COLORS[elements.indexOf(s.element) % COLORS.length];
    const upper = s.high.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
    const lower = s.low.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).reverse();
    root.append(svg("polygon", { points: upper.concat(lower).join(" "), fill: color, "fill-opacity": s.phase === "aqueous" ? 0.18 : 0.09,
                                 stroke: "none", class: "band", "data-element": s.element, "data-phase": s.phase }));
    const d = s.values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join("");
    const path = svg("path", { d, fill: "none", stroke: color, "stroke-width": 1.8, class: "series",
                               "stroke-dasharray": s.phase === "organic" ? "5 3" : "none",
                               "data-element": s.element, "data-phase": s.phase });
    path.dataset.values = JSON.stringify(s.values);
    path.dataset.low = JSON.stringify(s.low);
    path.dataset.high = JSON.stringify(s.high);
    root.append(path);
  });
  const wrap = el("div", { class: "profile-wrap" }, el("h3", {}, c.name));
  const legend = el("div", { class: "legend" });
  elements.forEach((e, i) => legend.append(el("span", { style: "color:" + COLORS[i % COLORS.length] }, "■ " + e)));
  wrap.append(legend, root);
  return wrap;
}

// ----------------------------------------------------------------------------- tags and trends

async function refreshTags() { try { renderTags(await api("/api/tags")); } catch (e) { /* shown elsewhere */ } }

function renderTags(tags) {
  const rows = Array.isArray(tags) ? tags : Object.entries(tags).map(([tag, v]) => Object.assign({ tag }, v));
  const meta = {};
  if (plant) for (const ins of plant.instruments) meta[ins.tag] = ins;
  const body = $("#tags tbody");
  body.innerHTML = "";
  for (const t of rows) {
    const ins = meta[t.tag.split(".")[0]] || {};
    body.append(el("tr", { "data-tag": t.tag },
      el("td", {}, t.tag), el("td", { class: "num" }, fmt(t.value, 5)), el("td", {}, t.unit || ins.unit || ""),
      el("td", { class: "quality-" + t.quality }, t.quality), el("td", {}, t.used ? "yes" : (t.flag || "no")),
      el("td", { class: "muted" }, t.description || ins.description || "")));
  }
}

async function refreshTrend() {
  lastTrend = Date.now();
  const tag = $("#trend-tag").value;
  const box = $("#trend");
  if (!tag || lastPlantTime === null) { box.textContent = "no data yet"; return; }
  const tagRow = (await api("/api/tags")).find((t) => t.tag === tag);
  if (!tagRow || !tagRow.source_time) { box.textContent = "no data yet"; return; }
  const end = new Date(new Date(tagRow.source_time).getTime() + 1000);
  const start = new Date(end.getTime() - 24 * 3600 * 1000);
  const q = new URLSearchParams({ tag, start: start.toISOString(), end: end.toISOString(), interval_s: "900", aggregate: "mean" });
  const page = await api("/api/history/samples?" + q);
  box.innerHTML = "";
  box.append(trendPlot(tag, page.items, start, end, tagRow.unit));
}

function trendPlot(tag, points, start, end, unit) {
  const W = 560, H = 220, L = 60, R = 10, T = 10, B = 28;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", class: "trend", "data-tag": tag });
  const xs = points.map((p) => new Date(p.start).getTime());
  const ys = points.map((p) => p.value);
  let lo = Math.min(...ys), hi = Math.max(...ys);
  if (!isFinite(lo)) { lo = 0; hi = 1; }
  if (hi - lo < 1e-12) { lo -= Math.abs(lo) * 0.01 + 1e-9; hi += Math.abs(hi) * 0.01 + 1e-9; }
  const t0 = start.getTime(), t1 = end.getTime();
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  root.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  root.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  for (const v of [lo, (lo + hi) / 2, hi]) {
    const t = svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }); t.textContent = fmt(v, 4); root.append(t);
  }
  const lab = svg("text", { x: L, y: H - 6 }); lab.textContent = "plant hours −24 … now (" + (unit || "") + ")"; root.append(lab);
  if (points.length) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(xs[i]).toFixed(1)},${y(p.value).toFixed(1)}`).join("");
    const path = svg("path", { d, fill: "none", stroke: COLORS[0], "stroke-width": 1.8, class: "series" });
    path.dataset.values = JSON.stringify(ys);
    root.append(path);
  }
  return root;
}

// ----------------------------------------------------------------------------- setpoints and proposals

async function refreshSetpoints() {
  let sp;
  try { sp = await api("/api/setpoints"); } catch (e) { return; }
  const body = $("#setpoints tbody");
  body.innerHTML = "";
  for (const r of sp.setpoints) {
    body.append(el("tr", { "data-setpoint": r.name },
      el("td", {}, r.name), el("td", {}, r.tag || ""), el("td", { class: "num" }, fmt(r.value, 5)),
      el("td", { class: "num" + (r.proposed !== null ? " status-pending" : "") }, r.proposed === null ? "–" : fmt(r.proposed, 5)),
      el("td", { class: "muted" }, fmt(r.min, 4) + " … " + fmt(r.max, 4))));
  }
  const card = $("#proposal-card");
  card.innerHTML = "";
  if (!sp.advisor) card.append(el("p", { class: "muted" }, "No setpoint optimiser is configured: no proposals."));
  if (sp.pending_proposal_id !== null) card.append(await proposalCard(sp.pending_proposal_id));
}

async function proposalCard(id) {
  const p = await api("/api/proposals/" + id);
  const comment = el("textarea", { rows: 2, placeholder: "comment (optional)", id: "decision-comment" });
  const decide = (verdict) => async () => {
    $("#proposal-error").textContent = "";
    try {
      await api(`/api/proposals/${id}/${verdict}`, { method: "POST", json: { comment: comment.value } });
    } catch (e) { $("#proposal-error").textContent = e.message; }
    await Promise.all([refreshProposals(), refreshSetpoints()]);
  };
  const canApprove = me && me.permissions.includes("approve_proposal");
  const effect = Object.entries(p.predicted_effect).map(([k, v]) => `${k} ${fmt(v, 5)}`).join(", ");
  const card = el("div", { class: "proposal", "data-proposal-id": String(id) },
    el("b", {}, `Proposal #${p.id}`), ` by ${p.created_by}: ${p.reason}`, el("br"),
    el("span", { class: "muted" }, "predicted: " + effect), el("br"),
    el("span", { class: "muted" }, "active constraints: " + (p.active_constraints.join(", ") || "none")), el("br"), comment);
  const approve = el("button", { type: "button", class: "approve op", id: "approve-" + id, onclick: decide("approve") }, "Approve");
  const reject = el("button", { type: "button", class: "reject op", id: "reject-" + id, onclick: decide("reject") }, "Reject");
  approve.disabled = reject.disabled = !canApprove;
  card.append(approve, " ", reject);
  return card;
}

async function refreshProposals() {
  let page;
  try { page = await api("/api/proposals?limit=10"); } catch (e) { return; }
  const body = $("#proposals tbody");
  body.innerHTML = "";
  for (const p of page.items) {
    const status = p.decision ? `${p.status} (${p.decision.verdict === "approve" ? "approved" : "rejected"} by ${p.decision.decided_by})` : p.status;
    body.append(el("tr", { "data-proposal-id": String(p.id), "data-status": p.status },
      el("td", {}, p.id), el("td", { class: "status-" + p.status }, status), el("td", {}, p.created_by),
      el("td", { class: "muted" }, p.reason)));
  }
}

async function runCycle() {
  $("#proposal-error").textContent = "";
  try { await api("/api/proposals", { method: "POST" }); } catch (e) { $("#proposal-error").textContent = e.message; }
  await Promise.all([refreshProposals(), refreshSetpoints()]);
}

async function setMode(mode) {
  $("#mode-error").textContent = "";
  try { await api("/api/mode", { method: "PUT", json: { mode, reason: "from the dashboard" } }); }
  catch (e) { $("#mode-error").textContent = e.message; }
  await refreshState();
}

// ----------------------------------------------------------------------------- events

async function refreshEvents() {
  let page;
  try { page = await api("/api/events?limit=30"); } catch (e) { return; }
  const body = $("#events tbody");
  body.innerHTML = "";
  const canAck = me && me.permissions.includes("acknowledge_alarm");
  for (const e of page.items) {
    const ack = e.acknowledged ? el("span", { class: "muted" }, "ack " + e.acknowledged_by)
      : el("button", { type: "button", class: "op", "data-ack": String(e.id), onclick: async () => {
          try { await api(`/api/events/${e.id}/acknowledge`, { method: "POST", json: { comment: "" } }); } catch (err) { /* shown by refresh */ }
          await refreshEvents();
        } }, "Acknowledge");
    if (ack.tagName === "BUTTON") ack.disabled = !canAck;
    body.append(el("tr", { class: e.acknowledged ? "acked" : "", "data-event-id": String(e.id) },
      el("td", { class: "muted" }, e.plant_time_h === null ? new Date(e.time).toLocaleTimeString() : fmt(e.plant_time_h, 4) + " h"),
      el("td", {}, e.kind), el("td", { class: "sev-" + e.severity }, e.severity), el("td", {}, e.message), el("td", {}, ack)));
  }
}

// ----------------------------------------------------------------------------- wiring

$("#login-form").addEventListener("submit", login);
$("#logout").addEventListener("click", () => logout(""));
$("#run-cycle").addEventListener("click", runCycle);
$("#mode-advisory").addEventListener("click", () => setMode("advisory"));
$("#mode-closed").addEventListener("click", () => setMode("closed_loop"));
$("#trend-tag").addEventListener("change", refreshTrend);
if (token()) start(); else showLogin("");
