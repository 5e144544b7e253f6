// History: the monitor's snapshots of the run (GET /api/history) as small line charts, drawn here as inline SVG
// (no library, nothing fetched from elsewhere: the page works offline). Values are set with textContent and
// SVG attributes only; the CSP allows no inline style, so colours come from history.css classes.
"use strict";

const HISTORY_MS = 15000; // the monitor takes one snapshot per tick (MONITOR_INTERVAL_S, 15 s by default)
const SVG_NS = "http://www.w3.org/2000/svg";
const CHART_W = 240, CHART_H = 56;
const CHARTS = [
  { key: "landed_last_hour", label: "Landed / hour" },
  { key: "in_flight", label: "In flight", extra: "pending" },
  { key: "queues", label: "Queue depths", multi: true },
  { key: "tokens", label: "Tokens", fmt: "compact" },
  { key: "cost_usd", label: "Dollars", fmt: "dollars" },
  { key: "main", label: "Main", strip: true },
  { key: "gate_seconds", label: "Gate seconds", fmt: "compact" },
];

function svgEl(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function fmtValue(v, fmt) {
  if (v === null || v === undefined) return "—";
  if (fmt === "dollars") return "$" + Number(v).toFixed(v < 10 ? 2 : 0);
  if (fmt === "compact") return v >= 1e6 ? (v / 1e6).toFixed(1) + "M" : v >= 1e3 ? (v / 1e3).toFixed(1) + "k" : String(Math.round(v));
  return String(Math.round(v * 100) / 100);
}

function lastOf(values) {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return values[i];
  return null;
}

// One polyline per series over the shared time axis; a gap (null) ends a segment.
function drawLines(svg, t, lines) {
  const t0 = t[0], span = Math.max(t[t.length - 1] - t0, 1);
  const max = Math.max(1, ...lines.flatMap((l) => l.values.filter((v) => v !== null)));
  const x = (i) => (t.length === 1 ? CHART_W / 2 : ((t[i] - t0) / span) * CHART_W);
  const y = (v) => CHART_H - 2 - (v / max) * (CHART_H - 4);
  lines.forEach((line, n) => {
    let seg = [];
    const flush = () => {
      if (seg.length === 1) svg.append(svgEl("circle", { class: `pt c${n}`, cx: seg[0][0], cy: seg[0][1], r: 1.5 }));
      else if (seg.length > 1) svg.append(svgEl("polyline", { class: `line c${n}`, points: seg.map((p) => p.join(",")).join(" ") }));
      seg = [];
    };
    line.values.forEach((v, i) => { if (v === null || v === undefined) flush(); else seg.push([x(i).toFixed(1), y(v).toFixed(1)]); });
    flush();
  });
  const top = svgEl("text", { class: "axis", x: CHART_W - 2, y: 9, "text-anchor": "end" });
  top.textContent = fmtValue(max);
  svg.append(top);
}

// Main's verdicts as a strip: green, red, or grey where no verdict was known.
function drawStrip(svg, t, values) {
  const t0 = t[0], span = Math.max(t[t.length - 1] - t0, 1);
  values.forEach((v, i) => {
    const x0 = t.length === 1 ? 0 : ((t[i] - t0) / span) * CHART_W;
    const x1 = i + 1 < t.length ? ((t[i + 1] - t0) / span) * CHART_W : CHART_W;
    svg.append(svgEl("rect", { class: v === 1 ? "green" : v === 0 ? "red" : "unknown", x: x0.toFixed(1), y: 8,
      width: Math.max(x1 - x0, 1).toFixed(1), height: CHART_H - 16 }));
  });
}

function chart(spec, data) {
  const t = data.t, s = data.series;
  const fig = document.createElement("figure");
  fig.className = "chart";
  fig.id = "chart-" + spec.key;
  const value = document.createElement("span");
  value.className = "value";
  const legend = document.createElement("span");
  legend.className = "legend";
  const cap = document.createElement("figcaption");
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = spec.label;
  cap.append(label, " ", value, " ", legend);
  const svg = svgEl("svg", { viewBox: `0 0 ${CHART_W} ${CHART_H}`, preserveAspectRatio: "none", role: "img" });
  svg.append(svgEl("line", { class: "base", x1: 0, y1: CHART_H - 2, x2: CHART_W, y2: CHART_H - 2 }));
  let lines = [];
  if (spec.strip) {
    drawStrip(svg, t, s.main || []);
    const last = lastOf(s.main || []);
    value.textContent = last === 1 ? "green" : last === 0 ? "red" : "—";
  } else if (spec.multi) {
    lines = Object.entries(s.queues || {}).map(([name, values]) => ({ name, values }));
    value.textContent = fmtValue(lines.reduce((a, l) => a + (lastOf(l.values) || 0), 0));
    lines.forEach((l, n) => { const k = document.createElement("span"); k.className = `key c${n}`; k.textContent = l.name; legend.append(k, " "); });
  } else {
    lines = [{ name: spec.key, values: s[spec.key] || [] }];
    if (spec.extra) {
      lines.push({ name: spec.extra, values: s[spec.extra] || [] });
      const k = document.createElement("span");
      k.className = "key c1";
      k.textContent = `${spec.extra} ${fmtValue(lastOf(s[spec.extra] || []))}`;
      legend.append(k);
    }
    value.textContent = fmtValue(lastOf(lines[0].values), spec.fmt);
  }
  if (lines.length) drawLines(svg, t, lines);
  fig.dataset.points = String(spec.strip ? (s.main || []).filter((v) => v !== null).length
    : Math.max(0, ...lines.map((l) => l.values.filter((v) => v !== null).length)));
  fig.append(cap, svg);
  return fig;
}

function renderHistory(data) {
  const box = document.getElementById("history");
  const note = document.getElementById("history-note");
  if (!box) return;
  if (!data.run || !data.t.length) {
    box.replaceChildren(Object.assign(document.createElement("div"), { className: "empty",
      textContent: data.run ? "no snapshots yet: the monitor takes one every tick" : "no run yet" }));
    note.textContent = "";
    box.dataset.points = "0";
    return;
  }
  box.replaceChildren(...CHARTS.map((spec) => chart(spec, data)));
  const from = new Date(data.t[0] * 1000), to = new Date(data.t[data.t.length - 1] * 1000);
  const clock = (d) => d.toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit" });
  note.textContent = `${clock(from)}–${clock(to)} · ${data.t.length} points`;
  box.dataset.points = String(data.t.length);
}

async function pollHistory() {
  const run = typeof state !== "undefined" && state.run ? "&run=" + encodeURIComponent(state.run) : "";
  const token = sessionStorage.getItem("agentswarm-token");
  try {
    const res = await fetch(`/api/history?points=120${run}`, // since the run started, six hours at most
      { headers: token ? { Authorization: "Bearer " + token } : {} });
    if (!res.ok) return; // the main poll reports an unreachable API (and asks for a token)
    renderHistory(await res.json());
  } catch (_) { /* the next poll tries again */ }
}

pollHistory();
setInterval(pollHistory, HISTORY_MS);
