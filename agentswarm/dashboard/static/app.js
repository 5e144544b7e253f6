// AgentSwarm dashboard: polls the JSON API every 2 s and renders with textContent only (model output is untrusted).
"use strict";

const POLL_MS = 2000;
const STATES = ["pending", "assigned", "running", "complete", "superseded", "failed", "blocked", "cancelled"];
const state = { run: null, config: {}, lastEvent: null, events: [], detailId: null, replay: null, failures: 0,
  shot: null, shotsKey: null, lastCheck: null, reconcileAsked: null, liveTranscript: null, transcriptKey: null };

window.addEventListener("error", (e) => { document.body.dataset.error = String(e.message || "error"); });
window.addEventListener("unhandledrejection", (e) => { document.body.dataset.error = String(e.reason || "rejection"); });

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "title") el.title = String(v);
    else if (k === "width") el.style.width = v; // CSSOM, not a style attribute: the CSP forbids those
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (id) => document.getElementById(id);
const fill = (el, ...children) => { el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined)); };
const badge = (s) => h("span", { class: `badge s-${s}` }, s);
const short = (sha) => (sha ? String(sha).slice(0, 10) : "—");
const num = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"));
const compact = (n) => (n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e3 ? (n / 1e3).toFixed(1) + "k" : String(n));
function dur(s) {
  if (s === null || s === undefined) return "—";
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0");
  return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0");
}
function clock(iso) { return iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : ""; }
function pct(frac) { return frac === null || frac === undefined ? "—" : (frac * 100).toFixed(frac < 0.1 ? 1 : 0) + "%"; }

// The token (AGENTSWARM_DASHBOARD_TOKEN) is asked for once per tab and kept in sessionStorage. Off loopback
// every API call needs it; on loopback only steering does (when one is set).
const TOKEN_KEY = "agentswarm-token";
let tokenDeclined = false;
function askToken() {
  const token = prompt("Dashboard token (AGENTSWARM_DASHBOARD_TOKEN):");
  if (!token) { tokenDeclined = true; sessionStorage.removeItem(TOKEN_KEY); return ""; }
  sessionStorage.setItem(TOKEN_KEY, token);
  return token;
}

async function api(path, options, retried) {
  const opts = Object.assign({}, options);
  const sent = sessionStorage.getItem(TOKEN_KEY) || "";
  opts.headers = Object.assign({}, opts.headers);
  if (sent) opts.headers.Authorization = "Bearer " + sent;
  const res = await fetch(path, opts);
  let body = null;
  try { body = await res.json(); } catch (_) { body = null; }
  if (res.status === 401 && !retried) {
    // A wrong or missing token: ask again, unless another request already did or the user declined.
    const now = sessionStorage.getItem(TOKEN_KEY) || "";
    if (now && now !== sent) return api(path, options, true);
    if (now) sessionStorage.removeItem(TOKEN_KEY);
    if (!tokenDeclined && askToken()) return api(path, options, true);
  }
  if (!res.ok) {
    const err = new Error((body && body.error) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return body;
}
const withRun = (path) => (state.run ? path + (path.includes("?") ? "&" : "?") + "run=" + encodeURIComponent(state.run) : path);

async function steer(path, body) {
  if (state.config.token_required && !sessionStorage.getItem(TOKEN_KEY)) {
    tokenDeclined = false; // a click is an explicit request: ask even if a poll's prompt was dismissed
    askToken();
  }
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
}

// ---- panels ----

function card(label, value, sub, bar) {
  return h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value),
    h("div", { class: "sub", title: sub || "" }, sub || ""), bar || null);
}
function budgetBar(frac, good) {
  const f = Math.min(frac || 0, 1);
  const cls = good ? "good" : frac >= 1 ? "over" : frac >= 0.8 ? "warn" : "used";
  return h("div", { class: "bar" }, h("span", { class: cls, width: `${(f * 100).toFixed(1)}%` }));
}
function stackBar(counts, total) {
  return h("div", { class: "bar stack" }, STATES.filter((s) => counts[s]).map((s) =>
    h("span", { class: s, width: `${((counts[s] / total) * 100).toFixed(2)}%`, title: `${s} ${counts[s]}` })));
}

function renderSummary(s) {
  state.config = s.config || {};
  document.querySelectorAll(".steer").forEach((el) => { el.hidden = !state.config.steering; });
  if (!s.run) {
    fill($("run-info"), h("span", {}, "no run yet: start one with `make swarm` or `agentswarm run start`"));
    fill($("metrics"));
    renderCulprits(null);
  } else {
    state.run = s.run;
    const c = state.config;
    fill($("run-info"),
      h("span", {}, "run ", h("b", { class: "mono" }, s.run)), badge(s.status),
      s.stop_reason ? h("span", { title: s.stop_reason }, "(" + s.stop_reason.slice(0, 60) + ")") : null,
      h("span", {}, "elapsed ", h("b", {}, dur(s.metrics.elapsed_s))),
      h("span", {}, "model ", h("b", {}, c.model)), h("span", {}, h("b", {}, c.workers), " workers"),
      h("span", {}, "merge ", h("b", {}, c.merge_strategy)), h("span", {}, "sandbox ", h("b", {}, c.sandbox)),
      c.unisolated ? h("span", { class: "warn", id: "unisolated",
                                 title: "SANDBOX_ISOLATION=none: agents run as this machine's user, with its network" },
                       "⚠ agents are not isolated") : null,
      s.paused_at ? h("span", { class: "warn", title: "nothing new is sent or planned until resumed" }, "⏸ paused") : null,
      s.blocked && s.blocked.stuck ? h("span", { class: "warn", title: s.blocked.stuck.reason },
                                       "⚠ stuck: nothing runnable, a person is needed") : null,
      s.blocked && s.blocked.blocked ? h("span", { class: "warn", title: s.blocked.features.map((r) =>
        `${r.feature} ${r.reason || "failed for good"}; blocks ${r.blocks.join(", ")}${r.retry ? `; retry ${r.retry}` : ""}`).join("\n") },
        `${s.blocked.blocked} features blocked`) : null,
      s.demo ? badge("demo") : null);
    state.paused = Boolean(s.paused_at);
    $("btn-pause").textContent = state.paused ? "Resume" : "Pause";
    $("btn-pause").disabled = s.status !== "active";
    $("btn-stop").disabled = s.status !== "active";
    $("btn-add").disabled = s.status !== "active";
    const t = s.tasks || {}, m = s.merges || {}, used = s.metrics.used, llm = s.llm;
    const total = Object.values(t).reduce((a, b) => a + b, 0);
    const inflight = (t.assigned || 0) + (t.running || 0);
    const decided = (m.merged || 0) + (m.conflict || 0) + (m.failed || 0) + (m.rejected || 0);
    const queues = s.queues ? Object.entries(s.queues).map(([q, n]) => `${q} ${n}`).join(" · ") : s.queues_error;
    fill($("metrics"),
      card("Commits / hour", num(s.metrics.commits_last_hour), `${num(s.merged_last_hour)} merges in the last hour`),
      card("Merged", num(m.merged || 0), `${pct(s.metrics.merge_success_rate)} success · ${m.conflict || 0} conflicts · ${m.failed || 0} failed${m.rejected ? ` · ${m.rejected} rejected` : ""}`,
        decided ? budgetBar((m.merged || 0) / decided, true) : null),
      card("Tasks", `${num(t.complete || 0)} / ${num(total)}`, STATES.filter((k) => t[k]).map((k) => `${k} ${t[k]}`).join(" · "),
        total ? stackBar(t, total) : null),
      gateCard(s.gate),
      card("In flight", num(inflight), `${t.pending || 0} pending · queues: ${queues || "—"}`),
      card("Tokens", compact(used.tokens), `${pct(used.tokens_frac)} of ${compact(s.budget.max_tokens)} · ${num(llm.calls)} calls`,
        budgetBar(used.tokens_frac)),
      card("Dollars", "$" + Number(used.dollars).toFixed(2), `${pct(used.dollars_frac)} of $${Number(s.budget.max_dollars).toFixed(2)}`,
        budgetBar(used.dollars_frac)),
      costCard(s.costs),
      card("Time", dur(s.metrics.elapsed_s), s.budget.deadline_at ? `${pct(used.time_frac)} of the deadline (${clock(s.budget.deadline_at)})` : "no deadline",
        budgetBar(used.time_frac)));
    renderCulprits(s.gate);
  }
  renderFeatures(s.features || {});
}

// Costs that add up: per merged commit, wasted (attempts that never landed), and each endpoint's share.
function costCard(c) {
  if (!c) return null;
  const usd = (x) => x == null ? "—" : "$" + Number(x).toFixed(4);
  const eps = c.endpoints.map((e) => `${e.endpoint}: ${num(e.calls)} calls, busy ${dur(e.busy_s)}, ${usd(e.cost_usd)}`);
  return card("Per merged commit", usd(c.per_merged_commit_usd),
    `${usd(c.per_task_usd)} a task · wasted ${usd(c.wasted.cost_usd)} · ${eps.join(" · ") || "no calls"}`);
}

// The gated merge queue: its mode, the batch in test, main's last green commit, red batches and culprits.
function gateCard(g) {
  if (!g) return null;
  if (g.mode === "off") {
    return h("div", { class: "card gate", id: "gate-card" }, h("div", { class: "label" }, "Gate"),
      h("div", { class: "value" }, "off"), h("div", { class: "sub" }, "main moves to whatever merges cleanly"));
  }
  const t = g.in_test;
  const testing = t ? `testing ${String(t.batch_id).slice(0, 6)}… · ${t.batch_size || t.size} branches · ${t.stage} · ${dur(t.batch_seconds)}` : "nothing in test";
  const counts = `${num(g.red_batches)}/${num(g.batches)} red batches · ${num(g.culprits)} culprits`;
  const detail = [`presubmit ${g.presubmit ? "on" : "off"}`, `${num(g.runs)} gate runs in ${dur(g.run_seconds)}`,
    `${num(g.landed)} landed through the gate`, `${num(g.flaky)} flaky`, `${num(g.presubmit_caught)} caught by presubmit`].join("\n");
  const flight = g.in_flight || [];
  const lanes = flight.map((r) => `${r.lane != null ? "lane " + r.lane : r.stage} · ${r.state} · ${r.branches} branches · ${short(r.sha)} on ${short(r.base)} · batch ${String(r.batch).slice(0, 6)} · ${r.worker || "no worker yet"} · ${dur(r.age_s)}`);
  const spec = `${num(flight.length)}/${num(g.parallel)} in flight · ${num(g.speculation_wasted)} wasted · capacity ${g.capacity_per_hour ? "~" + num(g.capacity_per_hour) + "/h" : "—"}`;
  return h("div", { class: "card gate", id: "gate-card", title: detail },
    h("div", { class: "label" }, "Gate"),
    h("div", { class: "value" }, g.mode, t ? h("span", { class: "pulse", id: "gate-testing" }, " testing") : null),
    h("div", { class: "sub", title: testing }, testing),
    h("div", { class: "sub", id: "gate-lanes", title: lanes.join("\n") || "no gate run in flight" }, spec),
    h("div", { class: "sub", title: counts }, "green ", h("span", { class: "mono", id: "gate-green" }, short(g.last_green)), ` · ${counts}`));
}

function renderCulprits(g) {
  const list = (g && g.recent_culprits) || [];
  $("culprit-count").textContent = g && g.culprits ? `${num(g.culprits)} in this run` : "";
  fill($("culprits"), list.length ? list.map((c) => h("li", { class: "rejected" },
    h("span", { class: "mono", onclick: () => openTask(c.task) }, c.task),
    h("span", { class: "grow", title: `${c.branch}\n${c.title || ""}\n${c.why}${c.batch ? "\nbatch " + c.batch : ""}`, onclick: () => openTask(c.task) },
      c.why),
    h("span", { class: "time" }, clock(c.at))))
    : h("li", { class: "empty" }, g && g.mode === "off" ? "the gate is off" : "no branch sent back by the gate"));
}

// Main's health (the reconciler): the verdict of the current main, its figures, the newest checks, the
// tests under quarantine, and the screenshots of green mains (newest large, the others as thumbnails).
const KINDS_ORDER = ["type", "test", "build", "page", "other"];
function renderMain(m) {
  const note = $("main-note"), asked = state.reconcileAsked;
  if (!m) {
    note.textContent = "";
    fill($("main-verdict"), h("div", { class: "empty" }, "no run yet"));
    fill($("main-figures")); fill($("main-red")); fill($("main-checks")); fill($("quarantine"));
    $("quarantine-head").textContent = "";
    renderShots([]);
    return;
  }
  const hl = m.health, now = m.main, newest = m.checks.length ? m.checks[0].id : null;
  if (asked && (newest !== asked.after || Date.now() - asked.at > 600000)) state.reconcileAsked = null; // done, or lost
  state.lastCheck = newest;
  $("btn-reconcile").disabled = !!state.reconcileAsked;
  note.textContent = state.reconcileAsked ? `check asked for at ${clock(new Date(state.reconcileAsked.at).toISOString())}…`
    : `checked every ${dur(m.interval_s)}`;
  fill($("main-verdict"), now
    ? [h("span", { class: `badge s-${now.result}`, id: "main-badge" }, now.result),
      h("span", { class: "mono", id: "main-sha", title: now.sha }, short(now.sha)),
      h("span", { class: "muted", title: now.at }, `checked ${dur(now.age_s)} ago`),
      hl.red_for_s !== null ? h("span", { class: "warn" }, `red for ${dur(hl.red_for_s)}`) : null]
    : h("span", { class: "empty" }, `not checked yet: the reconciler checks main every ${dur(m.interval_s)}`));
  const ttg = hl.time_to_green_s, r = hl.reverts, f = m.flaky;
  const culprits = KINDS_ORDER.filter((k) => hl.culprits_by_kind[k]).map((k) => `${k} ${hl.culprits_by_kind[k]}`);
  fill($("main-figures"), [
    hl.shas_checked ? `${num(m.shas_green)}/${num(hl.shas_checked)} shas green (${pct(hl.green_share)})` : null,
    ttg.spells ? `time to green p50 ${dur(ttg.p50)} · p95 ${dur(ttg.p95)}` : null,
    r.made ? `${num(r.made)} reverts (${num(r.landed)} landed${r.failed ? `, ${num(r.failed)} failed` : ""})` : null,
    culprits.length ? "culprits " + culprits.join(", ") : null,
    hl.gate_seconds_per_landed !== null ? `gate ${dur(hl.gate_seconds_per_landed)} per landed commit` : null,
    f.observed || f.quarantined || f.released ? `flaky ${f.observed} observed · ${f.quarantined} quarantined · ${f.released} released` : null,
  ].filter(Boolean).map((text) => h("span", {}, text)));
  const red = m.last_red;
  fill($("main-red"), red ? [h("span", { class: "badge s-red" }, "last red"),
    h("span", { class: "mono", title: red.sha }, short(red.sha)), h("span", { class: "time" }, clock(red.at)),
    h("span", { class: "grow", title: [red.why, ...red.failing_tests].filter(Boolean).join("\n") },
      red.failing_tests.length ? red.failing_tests[0] + (red.failing_count > 1 ? ` +${red.failing_count - 1}` : "") : red.why || "checks failed"),
    red.culprit_task ? h("span", {}, "culprit ", h("span", { class: "mono link", onclick: () => openTask(red.culprit_task) }, red.culprit_task)) : null,
    red.revert_task ? h("span", {}, "revert ", h("span", { class: "mono link", onclick: () => openTask(red.revert_task) }, red.revert_task),
      ` ${red.revert_landed ? "landed" : red.revert_status || ""}`) : red.action === "fix" ? h("span", {}, "fix tasks asked for")
      : red.bisect_reason ? h("span", { title: red.bisect_reason }, "no revert") : null] : null);
  fill($("main-checks"), m.checks.map((c) => h("li", { class: `check-${c.result}` }, badge(c.result),
    h("span", { class: "mono", title: c.sha }, short(c.sha)),
    h("span", { class: "grow", title: [c.why, ...c.failing_tests, ...c.quarantined.map((q) => "tolerated: " + q)].filter(Boolean).join("\n") },
      c.result === "green" ? (c.quarantined_count ? `passes (${c.quarantined_count} quarantined tolerated)` : "passes")
        : c.why || (c.failing_tests[0] || "checks failed")),
    h("span", { class: "time" }, `${dur(c.seconds)} · ${clock(c.at)}`))));
  $("quarantine-head").textContent = m.quarantined.length ? `Quarantined tests (${m.flaky.quarantined})` : "";
  fill($("quarantine"), m.quarantined.map((q) => h("li", {},
    h("span", { class: "grow mono", title: `${q.name}\nquarantined ${q.quarantined_at || "?"} (seen by ${q.last_source || "?"})` }, q.name),
    h("span", { class: "time", title: `${q.observations} times red, then green on the same tree; released after ${q.release_after} reconciler runs in a row that pass it` },
      `${q.observations} obs · ${q.passes_in_row}/${q.release_after} to release`),
    q.fix_task ? h("span", { class: "mono link", title: "the fix task", onclick: () => openTask(q.fix_task) }, q.fix_task) : null)));
  renderShots(m.screenshots);
}

// Screenshots are re-rendered only when the list (or the one picked) changes, so a poll does not reload them.
// With a token kept for this tab (reads off loopback need it), an <img> cannot send it: the image is fetched
// with the token and shown as a data: URL (the CSP allows those for images).
const shotCache = new Map();
function shotImage(name, cls) {
  const path = "/api/screenshots/" + encodeURIComponent(name);
  const img = h("img", { class: cls, alt: `the game at main ${short(name)}`, title: name.replace(/\.png$/, "") });
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) { img.src = path; return img; }
  if (!shotCache.has(name)) {
    shotCache.set(name, fetch(path, { headers: { Authorization: "Bearer " + token } })
      .then((res) => { if (!res.ok) throw new Error(`${res.status}`); return res.blob(); })
      .then((blob) => new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => reject(reader.error);
        reader.readAsDataURL(blob);
      }))
      .catch((err) => { shotCache.delete(name); throw err; }));
  }
  shotCache.get(name).then((url) => { img.src = url; }, () => { img.alt = "screenshot unavailable"; });
  return img;
}
function renderShots(names) {
  if (!names.includes(state.shot)) state.shot = names[0] || null;
  const key = names.join(",") + "|" + state.shot;
  if (key === state.shotsKey) return;
  state.shotsKey = key;
  for (const name of shotCache.keys()) if (!names.includes(name)) shotCache.delete(name);
  if (!names.length) {
    fill($("main-shots"), h("div", { class: "empty" }, "no screenshot yet (one is kept for each green main)"));
    return;
  }
  const sha = state.shot.replace(/\.png$/, "");
  fill($("main-shots"),
    h("figure", { class: "shot" }, shotImage(state.shot, "shot-img"),
      h("figcaption", {}, h("span", { class: "mono", id: "shot-sha" }, sha), state.shot === names[0] ? " · newest green main" : "")),
    names.length > 1 ? h("div", { class: "thumbs" }, names.map((n) => {
      const img = shotImage(n, n === state.shot ? "thumb picked" : "thumb");
      img.addEventListener("click", () => { state.shot = n; renderShots(names); });
      return img;
    })) : null);
}

// The preview: the newest (or the picked) kept green main's built game in an iframe that runs it in an opaque
// origin (sandbox="allow-scripts", no allow-same-origin: it can read nothing of this page, its token included),
// and a strip of the kept ones with their screenshot, sha and time. The iframe is rebuilt only when its URL changes.
function renderPreviews(data) {
  const list = (data && data.previews) || [];
  const shown = list.find((p) => p.sha === state.previewSha) || list[0] || null;
  const key = list.map((p) => p.sha + p.at).join(",") + "|" + (shown ? shown.url : "");
  if (key === state.previewKey) return;
  state.previewKey = key;
  $("preview-note").textContent = data && data.keep ? `the last ${data.keep} green mains the reconciler built` : "";
  if (!shown) {
    fill($("preview"), h("div", { class: "empty" }, data && data.keep === 0 ? "previews are off (RECONCILE_PREVIEWS_KEEP=0)"
      : "no preview yet: one is kept for each green main the reconciler builds"));
    fill($("preview-strip"));
    return;
  }
  const frame = $("preview-frame");
  if (!frame || frame.dataset.sha !== shown.sha) { // a new iframe only for another build: moving one reloads it
    fill($("preview"), h("iframe", { sandbox: "allow-scripts", referrerpolicy: "no-referrer", id: "preview-frame",
      "data-sha": shown.sha, title: `VoxelCraft at main ${short(shown.sha)}`, src: shown.url }),
    h("div", { class: "caption", id: "preview-caption" }));
  }
  fill($("preview-caption"),
    h("span", { class: "mono", id: "preview-sha", title: shown.sha }, shown.sha),
    ` · built ${clock(shown.at)}`, shown === list[0] ? " · newest green main" : "",
    " · ", h("a", { href: shown.url, target: "_blank", rel: "noopener noreferrer" }, "open"));
  fill($("preview-strip"), list.map((p) => h("figure", { class: p.sha === shown.sha ? "picked" : "",
    onclick: () => { state.previewSha = p.sha; renderPreviews(data); } },
  p.screenshot ? shotImage(p.screenshot, "") : h("div", { class: "noshot" }),
  h("figcaption", {}, h("span", { class: "mono", title: p.sha }, short(p.sha)), " ", h("span", { title: p.at }, clock(p.at))))));
}

function renderFeatures(progress) {
  let done = 0, all = 0;
  const rows = Object.entries(progress).map(([cat, counts]) => {
    const n = Object.values(counts).reduce((a, b) => a + b, 0);
    done += counts.done || 0; all += n;
    const parts = ["done", "in_progress", "failed", "blocked"].filter((k) => counts[k]).map((k) =>
      h("span", { class: k, width: `${((counts[k] / n) * 100).toFixed(1)}%`, title: `${k} ${counts[k]}` }));
    return h("div", { class: "feat" }, h("span", { title: cat }, cat), h("div", { class: "bar" }, parts),
      h("span", { class: "n" }, `${counts.done || 0}/${n}`));
  });
  $("feature-total").textContent = all ? `${done}/${all} done` : "";
  fill($("features"), rows.length ? rows : h("div", { class: "empty" }, "no features loaded (agentswarm init)"));
}

function renderGrid(tasks) {
  $("grid-count").textContent = `${tasks.filter((t) => t.status === "running" || t.status === "assigned").length} in flight`;
  fill($("grid"), tasks.length ? tasks.map((t) => h("div", {
    class: `tile ${t.status}`, title: `${t.title}\n${t.status} · ${(t.scope || []).join(", ")}`, onclick: () => openTask(t.id),
  }, h("div", { class: "t-meta" }, h("span", { class: "mono" }, t.id), h("span", {}, t.kind)),
  h("div", { class: "t-title" }, t.title || "(untitled)"),
  h("div", { class: "t-meta" }, h("span", {}, t.status), h("span", {}, `try ${t.attempts}/${t.max_attempts}`),
    h("span", {}, dur(t.elapsed_s))))) : h("div", { class: "empty" }, "no agents working"));
}

function renderTasks(tasks) {
  fill($("task-rows"), tasks.map((t) => h("tr", { onclick: () => openTask(t.id) },
    h("td", { class: "mono" }, t.id), h("td", {}, badge(t.status)), h("td", {}, t.kind), h("td", {}, t.priority),
    h("td", { title: t.error || t.summary || t.title }, t.title),
    h("td", { class: "mono", title: (t.scope || []).join("\n") }, (t.scope || []).join(", ")),
    h("td", {}, `${t.attempts}/${t.max_attempts}`), h("td", {}, dur(t.elapsed_s)),
    h("td", {}, cancellable(t) ? cancelButton(t.id) : null, retryable(t) ? retryButton(t.id) : null))));
}
const retryable = (t) => state.config.steering && (t.status === "failed" || t.status === "blocked");
function retryButton(id) {
  return h("button", { type: "button", class: "small", onclick: async (e) => {
    e.stopPropagation();
    try { await steer(`/api/tasks/${encodeURIComponent(id)}/retry`, {}); poll(); if (state.detailId === id) openTask(id); }
    catch (err) { alert("retry failed: " + err.message); }
  } }, "retry");
}
const cancellable = (t) => state.config.steering && (t.status === "pending" || t.status === "blocked");
function cancelButton(id) {
  return h("button", { type: "button", class: "small", onclick: async (e) => {
    e.stopPropagation();
    if (!confirm(`Cancel task ${id}?`)) return;
    try { await steer(`/api/tasks/${encodeURIComponent(id)}/cancel`, {}); poll(); if (state.detailId === id) openTask(id); }
    catch (err) { alert("cancel failed: " + err.message); }
  } }, "cancel");
}

function mergeText(m) {
  if (m.status === "rejected") return "rejected by gate: " + (m.why || m.title || m.branch);
  if (m.conflict_files.length) return "conflict: " + m.conflict_files.join(", ");
  return (m.title || m.branch) + (m.flaky ? " (flaky test passed on retry)" : "");
}
const batchOf = (m) => (m.batch ? `\nbatch ${m.batch}${m.position === null ? "" : " #" + (m.position + 1)}${m.tree ? " · tree " + short(m.tree) : ""}` : "");

function renderMerges(merges) {
  fill($("merges"), merges.length ? merges.map((m) => h("li", { class: m.status === "rejected" ? "rejected" : null },
    badge(m.status), h("span", { class: "mono" }, m.status === "merged" ? short(m.main_after) : short(m.task)),
    h("span", { class: "grow", title: `${m.branch}\n${m.title || ""}${m.conflict_files.length ? "\nconflicts: " + m.conflict_files.join(", ") : ""}${m.why ? "\n" + m.why : ""}${m.error ? "\n" + m.error : ""}${batchOf(m)}`,
      onclick: () => openTask(m.task) },
    mergeText(m)),
    h("span", { class: "time", title: `${m.commits} commits · ${m.strategy} · ${m.duration_ms === null ? "—" : Math.round(m.duration_ms) + " ms"}` },
      `${m.commits}c · ${m.duration_ms === null ? "—" : Math.round(m.duration_ms) + "ms"} · ${clock(m.finished_at || m.queued_at)}`)))
    : h("li", { class: "empty" }, "nothing merged yet"));
}

function renderEvents(fresh) {
  state.events = fresh.slice().reverse().concat(state.events).slice(0, 300);
  fill($("events"), state.events.length ? state.events.map((e) => {
    const tone = /fail|error|conflict|red|unparseable|stale|culprit|cannot|needs_person|\.blocked|\.stuck/.test(e.kind) ? "bad" : /merged|complete|green/.test(e.kind) ? "good" : "";
    return h("li", {}, h("span", { class: "time" }, clock(e.at)), h("span", { class: `kind ${tone}` }, e.kind),
      e.task ? h("span", { class: "mono", onclick: () => openTask(e.task) }, e.task) : null,
      h("span", { class: "grow", title: e.message }, e.message));
  }) : h("li", { class: "empty" }, "no events"));
}

// ---- polling ----

async function poll() {
  try {
    const summary = await api(withRun("/api/summary"));
    renderSummary(summary);
    const filter = $("task-filter").value;
    const [inflight, recent, merges, events, main] = await Promise.all([
      api(withRun("/api/tasks?status=assigned,running&limit=200")),
      api(withRun(`/api/tasks?limit=40${filter ? "&status=" + encodeURIComponent(filter) : ""}`)),
      api(withRun("/api/merges?limit=40")),
      api(withRun("/api/events" + (state.lastEvent === null ? "?limit=150" : `?after=${state.lastEvent}`))),
      state.run ? api(`/api/runs/${encodeURIComponent(state.run)}/main`) : null,
    ]);
    renderPreviews(await api("/api/previews"));
    const ended = recent.tasks.filter((t) => ["complete", "failed", "blocked"].includes(t.status)).slice(0, 12);
    renderGrid(inflight.tasks.concat(filter ? [] : ended));
    renderTasks(recent.tasks);
    renderMerges(merges.merges);
    state.lastEvent = events.last_id;
    renderEvents(events.events);
    renderMain(main);
    if (state.liveTranscript && state.liveTranscript === state.detailId && !state.replay) await refreshTranscript(state.detailId);
    state.failures = 0;
    $("conn").textContent = "";
    document.body.dataset.ready = "1";
  } catch (err) {
    state.failures += 1;
    $("conn").textContent = `cannot reach the API (${err.message}); retrying`;
  }
}

// ---- task detail and transcript replay ----

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

async function openTask(id) {
  state.detailId = id;
  stopReplay();
  $("detail").hidden = false;
  $("detail-title").textContent = `Task ${id}`;
  fill($("detail-body"), h("div", { class: "empty" }, "loading…"));
  fill($("transcript"));
  try {
    const [t, tr] = await Promise.all([api(`/api/tasks/${encodeURIComponent(id)}`), api(`/api/tasks/${encodeURIComponent(id)}/transcript`)]);
    if (state.detailId !== id) return;
    fill($("detail-title"), `Task ${t.id} `, badge(t.status), " ", t.title);
    fill($("detail-body"), kv([
      ["kind", `${t.kind} · priority ${t.priority} · depth ${t.depth}`],
      ["attempts", `${t.attempts} of ${t.max_attempts}`], ["sandbox", t.sandbox], ["branch", t.branch],
      ["scope", (t.scope || []).join(", ")], ["timing", `created ${clock(t.created_at)} · started ${clock(t.started_at) || "—"} · ${t.finished_at ? "finished " + clock(t.finished_at) : "elapsed"} ${dur(t.elapsed_s)}`],
      ["description", t.description], ["acceptance", (t.acceptance || []).join("\n")], ["summary", t.summary], ["error", t.error],
      ["handoffs", t.handoffs.length ? h("ul", { class: "sub-list" }, t.handoffs.map((x) => h("li", {},
        `attempt ${x.attempt}: `, badge(x.status), ` ${x.commits.length} commits, +${x.insertions}/-${x.deletions}, ${num(x.prompt_tokens + x.completion_tokens)} tokens, ${x.llm_calls} calls, ${dur(x.duration_s)}${x.error ? " · " + x.error : ""}`))) : null],
      ["merges", t.merges.length ? h("ul", { class: "sub-list" }, t.merges.map((m) => h("li", {},
        badge(m.status), ` ${m.strategy} ${short(m.main_before)} → ${short(m.main_after)} ${m.duration_ms === null ? "" : Math.round(m.duration_ms) + "ms"}${m.batch ? " · batch " + m.batch : ""}${m.conflict_files.length ? " · conflicts: " + m.conflict_files.join(", ") : ""}${m.why ? " · rejected by gate: " + m.why : ""}${m.error ? " · " + m.error : ""}`))) : null],
      ["", cancellable(t) ? cancelButton(t.id) : null],
    ]));
    renderTranscript(tr);
  } catch (err) {
    fill($("detail-body"), h("p", { class: "error" }, err.message));
  }
}

function block(text, open) {
  text = text === null || text === undefined ? "" : typeof text === "string" ? text : JSON.stringify(text, null, 2);
  if (!text) return null;
  if (text.length <= 600 || open) return h("pre", {}, text);
  return h("details", {}, h("summary", {}, `${text.slice(0, 90).replace(/\s+/g, " ")}… (${text.length} chars)`), h("pre", {}, text));
}
function args(raw) {
  try { return JSON.stringify(JSON.parse(raw), null, 2); } catch (_) { return String(raw); }
}
function entry(e, t0) {
  const at = typeof e.t === "number" && t0 !== null ? `+${(e.t - t0).toFixed(1)}s` : "";
  const who = (...parts) => h("div", { class: "who" }, h("b", {}, e.kind), ...parts, h("span", {}, at));
  const rest = Object.fromEntries(Object.entries(e).filter(([k]) => !["t", "kind"].includes(k)));
  switch (e.kind) {
    case "system": case "user":
      return [who(), block(e.content)];
    case "assistant":
      return [who(e.step ? h("span", {}, `step ${e.step}`) : null,
        h("span", {}, `${num(e.prompt_tokens)} → ${num(e.completion_tokens)} tokens`), e.latency_ms ? h("span", {}, `${(e.latency_ms / 1000).toFixed(1)}s`) : null),
      e.reasoning ? h("details", {}, h("summary", {}, "reasoning"), h("pre", {}, e.reasoning)) : null,
      e.content ? h("div", {}, e.content) : null,
      (e.tool_calls || []).map((c) => [h("div", { class: "call mono" }, `→ ${c.name}`), block(args(c.arguments))])];
    case "tool":
      return [who(h("span", { class: "call" }, e.name || ""), e.exit_code !== undefined ? h("span", {}, `exit ${e.exit_code}`) : null),
        block(e.result !== undefined ? e.result : e.summary !== undefined ? `${e.status}: ${e.summary}` : rest)];
    case "llm_error":
      return [who(), h("pre", {}, String(e.error))];
    case "unparsed":
      return [who(), h("pre", {}, String(e.text))];
    default:
      return [who(), h("div", { class: "mono" }, JSON.stringify(rest))];
  }
}
// A running attempt's transcript is its lines read so far (`live`): it is fetched again on every poll.
function renderTranscript(tr) {
  const entries = tr.entries || [];
  const t0 = entries.length && typeof entries[0].t === "number" ? entries[0].t : null;
  const running = tr.live && tr.status === "running";
  state.liveTranscript = running ? tr.task : null;
  state.transcriptKey = `${tr.task} ${tr.attempt} ${tr.lines} ${tr.status}`;
  const how = running ? "live · " : tr.live ? "unfinished: its worker was lost · " : "";
  $("tr-meta").textContent = entries.length
    ? `${how}attempt ${tr.attempt} · ${entries.length} of ${tr.lines} entries${tr.truncated ? " (cut)" : ""} · ${num(tr.tokens.prompt)} prompt + ${num(tr.tokens.completion)} completion tokens`
    : running ? `live · attempt ${tr.attempt} · no step yet` : "no transcript yet";
  fill($("transcript"), entries.map((e) => h("li", { class: String(e.kind).replace(/[^a-z_]/g, "") }, entry(e, t0))));
}
async function refreshTranscript(id) {
  const tr = await api(`/api/tasks/${encodeURIComponent(id)}/transcript`);
  // Only what changed is drawn again, so an opened entry stays open between polls.
  if (state.detailId === id && `${tr.task} ${tr.attempt} ${tr.lines} ${tr.status}` !== state.transcriptKey) renderTranscript(tr);
}
function stopReplay() { if (state.replay) clearInterval(state.replay); state.replay = null; }
function replay() {
  stopReplay();
  const items = Array.from($("transcript").children);
  items.forEach((li) => li.classList.add("hidden"));
  let i = 0;
  state.replay = setInterval(() => {
    if (i >= items.length) return stopReplay();
    items[i].classList.remove("hidden");
    items[i].scrollIntoView({ block: "nearest" });
    i += 1;
  }, 400);
}

// ---- controls ----

function wire() {
  document.querySelectorAll("[data-close]").forEach((b) => b.addEventListener("click", () => {
    $(b.dataset.close).hidden = true;
    if (b.dataset.close === "detail") { state.detailId = null; stopReplay(); }
  }));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { $("detail").hidden = true; $("add").hidden = true; state.detailId = null; stopReplay(); }
  });
  $("tr-replay").addEventListener("click", replay);
  $("tr-all").addEventListener("click", () => { stopReplay(); Array.from($("transcript").children).forEach((li) => li.classList.remove("hidden")); });
  $("task-filter").addEventListener("change", poll);
  $("btn-add").addEventListener("click", () => { $("add-error").textContent = ""; $("add").hidden = false; });
  $("btn-stop").addEventListener("click", async () => {
    if (!state.run) return;
    const reason = prompt(`Stop run ${state.run}? Tasks in flight finish; unsent work is cancelled.\nReason:`, "stopped from the dashboard");
    if (reason === null) return;
    try { await steer(`/api/runs/${encodeURIComponent(state.run)}/stop`, { reason }); poll(); }
    catch (err) { alert("stop failed: " + err.message); }
  });
  $("btn-pause").addEventListener("click", async () => {
    if (!state.run) return;
    const verb = state.paused ? "resume" : "pause";
    try { await steer(`/api/runs/${encodeURIComponent(state.run)}/${verb}`, {}); poll(); }
    catch (err) { alert(verb + " failed: " + err.message); }
  });
  $("btn-reconcile").addEventListener("click", async () => {
    try {
      await steer("/api/reconcile", { force: true }); // a person asked: check even a sha checked already
      state.reconcileAsked = { at: Date.now(), after: state.lastCheck };
      $("btn-reconcile").disabled = true;
      $("main-note").textContent = "check asked for…";
    } catch (err) { alert("check of main not requested: " + err.message); }
  });
  $("add-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { description: f.get("description"), title: f.get("title"), priority: Number(f.get("priority")),
      scope: String(f.get("scope") || "").split(/[\n,]/).map((s) => s.trim()).filter(Boolean), run: state.run };
    try {
      const r = await steer("/api/tasks", body);
      e.target.reset();
      $("add").hidden = true;
      poll();
      openTask(r.task);
    } catch (err) { $("add-error").textContent = err.message; }
  });
}

function openFromHash() {
  const m = /^#task=([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
  if (m) openTask(m[1]);
}

wire();
poll();
openFromHash();
window.addEventListener("hashchange", openFromHash);
setInterval(poll, POLL_MS);
