// lib.js: what every page shares: the DOM helper, the HTTP API client (token, scopes, leader
// redirects), formatting, Prometheus text parsing, polling and small SVG charts.
// The console is a client of the public HTTP API only (docs/HTTP_API.md).

// ---- DOM ---------------------------------------------------------------------------------
export function h(tag, attrs, ...kids) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else if (k === 'value' && 'value' in el) el.value = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  add(el, kids);
  return el;
}
function add(el, kids) {
  for (const k of kids) {
    if (k === null || k === undefined || k === false) continue;
    if (Array.isArray(k)) add(el, k);
    else el.append(k instanceof Node ? k : String(k));
  }
}
export function clear(el, ...kids) { el.replaceChildren(); add(el, kids); return el; }

// A table: cols = [{t: 'Title', num: bool, f: row => cell}]
export function table(cols, rows, opts = {}) {
  return h('div', {class: 'tw', tabindex: '0', role: 'region', 'aria-label': opts.label || 'table'},
    h('table', {},
      h('thead', {}, h('tr', {}, cols.map(c => h('th', {class: c.num ? 'num' : null, scope: 'col'}, c.t)))),
      h('tbody', {}, rows.length ? rows.map(r => h('tr', {}, cols.map(c =>
        h('td', {class: c.num ? 'num' : null}, c.f(r)))))
        : h('tr', {}, h('td', {colspan: cols.length, class: 'muted'}, opts.empty || 'Nothing yet.')))));
}

export function card(label, value, extra) {
  return h('div', {class: 'card'}, h('div', {class: 'label'}, label), h('div', {class: 'value'}, value), extra);
}

export function pill(text, kind) { return h('span', {class: 'pill ' + (kind || '')}, text); }

export function errorBox(e) {
  return h('p', {class: 'error', role: 'alert'}, e instanceof ApiError ? `${e.code}: ${e.message}` : String(e && e.message || e));
}

// ---- formatting ---------------------------------------------------------------------------
export function fmtNum(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(2) + ' G';
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + ' M';
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + ' k';
  return Number.isInteger(n) ? String(n) : n.toFixed(n < 10 ? 2 : 1);
}
export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + u[i];
}
export function fmtSecs(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return '—';
  if (s < 1e-3) return (s * 1e6).toFixed(0) + ' µs';
  if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + ' ms';
  return s.toFixed(2) + ' s';
}
export function fmtMs(ms) {
  if (!ms) return 'none';
  const s = ms / 1000;
  if (s < 120) return s + ' s';
  if (s < 7200) return (s / 60).toFixed(1).replace(/\.0$/, '') + ' min';
  if (s < 172800) return (s / 3600).toFixed(1).replace(/\.0$/, '') + ' h';
  return (s / 86400).toFixed(1).replace(/\.0$/, '') + ' d';
}
export function fmtTime(ms) { return ms ? new Date(ms).toISOString().replace('T', ' ').replace('Z', ' UTC') : '—'; }
export const enc = encodeURIComponent;

// ---- API ----------------------------------------------------------------------------------
const TOKEN_KEY = 'ayder.token'; // sessionStorage: this tab only, gone when it closes
export const auth = {token: sessionStorage.getItem(TOKEN_KEY) || '', scopes: new Set(), error: null};

export class ApiError extends Error {
  constructor(status, code, message, body) { super(message); this.status = status; this.code = code; this.body = body; }
}

export function can(scope) { return auth.scopes.has(scope); }

// A page that needs a token (and a scope): true (after saying why) when it cannot show anything.
export function needToken(el, scope) {
  if (!auth.token || auth.error) {
    el.append(h('p', {class: 'notice'}, 'Enter a bearer token (top right) to see this page. It is kept for this tab only.'));
    return true;
  }
  if (scope && !can(scope)) {
    el.append(h('p', {class: 'notice'}, `This token lacks the “${scope}” scope this page needs.`));
    return true;
  }
  return false;
}


export async function setToken(t) {
  auth.token = t || '';
  auth.scopes = new Set();
  auth.error = null;
  if (auth.token) sessionStorage.setItem(TOKEN_KEY, auth.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  if (!auth.token) return;
  try {
    const r = await api('GET', '/auth/whoami');
    auth.scopes = new Set(r.scopes);
  } catch (e) {
    auth.error = e.status === 401 ? 'This token is not known to the server.' : e.message;
  }
}

async function parse(res) {
  const text = await res.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!res.ok) {
    const o = data && typeof data === 'object' ? data : {};
    throw new ApiError(res.status, o.error || 'http_' + res.status, o.message || res.statusText || 'request failed', o);
  }
  return data;
}

// method, path (with query), {json, body, base, signal, raw}. Writes that a follower redirects
// (307 to the leader) are re-sent to the leader named by /ha/status: a browser drops the
// Authorization header on a redirect to another origin, so following it blindly would fail.
export async function api(method, path, o = {}) {
  const headers = {};
  if (auth.token) headers.Authorization = 'Bearer ' + auth.token;
  let body = o.body;
  if (o.json !== undefined) { body = JSON.stringify(o.json); headers['Content-Type'] = 'application/json'; }
  const write = method !== 'GET';
  const init = {method, headers, body, cache: 'no-store', signal: o.signal, redirect: write ? 'manual' : 'follow'};
  let res = await fetch((o.base || '') + path, init);
  if (write && (res.type === 'opaqueredirect' || res.status === 307)) {
    const st = await parse(await fetch((o.base || '') + '/ha/status', {cache: 'no-store'}));
    if (!st.leader_url) throw new ApiError(503, 'no_leader', 'No leader is known yet; try again in a moment');
    res = await fetch(st.leader_url + path, {...init, redirect: 'follow'});
  }
  return o.raw ? res : parse(res);
}

export async function publicGet(url, timeoutMs = 2000) {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), timeoutMs);
  try { return await parse(await fetch(url, {cache: 'no-store', signal: ctl.signal})); }
  finally { clearTimeout(t); }
}

// ---- bytes --------------------------------------------------------------------------------
export function b64ToBytes(s) {
  const bin = atob(s || '');
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
export function bytesToB64(b) {
  let s = '';
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}
const utf8 = new TextDecoder('utf-8', {fatal: true});
export function asText(b) {
  try {
    const s = utf8.decode(b);
    return /[\u0000-\u0008\u000e-\u001f\u007f]/.test(s) ? null : s;
  } catch { return null; }
}
export function hexDump(b, max = 4096) {
  const lines = [];
  for (let i = 0; i < Math.min(b.length, max); i += 16) {
    const row = b.subarray(i, Math.min(i + 16, b.length));
    const hex = Array.from(row, x => x.toString(16).padStart(2, '0')).join(' ');
    const asc = Array.from(row, x => (x >= 32 && x < 127 ? String.fromCharCode(x) : '.')).join('');
    lines.push(i.toString(16).padStart(6, '0') + '  ' + hex.padEnd(48) + '  ' + asc);
  }
  if (b.length > max) lines.push(`… ${b.length - max} more bytes`);
  return lines.join('\n');
}

// ---- Prometheus text ------------------------------------------------------------------------
// name -> [{labels: {k: v}, value}]
export function parseMetrics(text) {
  const m = new Map();
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const mm = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!mm) continue;
    const labels = {};
    if (mm[3]) for (const l of mm[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    const v = mm[4] === '+Inf' ? Infinity : Number(mm[4]);
    if (!m.has(mm[1])) m.set(mm[1], []);
    m.get(mm[1]).push({labels, value: v});
  }
  return m;
}
export function metricSum(m, name, pred = () => true) {
  return (m.get(name) || []).filter(s => pred(s.labels)).reduce((a, s) => a + s.value, 0);
}
// Cumulative buckets {le -> count} of a histogram, summed over the series pred selects.
export function buckets(m, name, pred = () => true) {
  const b = new Map();
  for (const s of m.get(name + '_bucket') || []) {
    if (!pred(s.labels)) continue;
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    b.set(le, (b.get(le) || 0) + s.value);
  }
  return b;
}
// Quantile q of the observations between two bucket snapshots (older may be null).
export function quantile(q, now, old) {
  const les = [...now.keys()].sort((a, b) => a - b);
  const cnt = les.map(le => now.get(le) - (old && old.get(le) || 0));
  const total = cnt[cnt.length - 1];
  if (!total) return null;
  const want = q * total;
  let prevLe = 0, prevC = 0;
  for (let i = 0; i < les.length; i++) {
    if (cnt[i] >= want) {
      if (les[i] === Infinity) return prevLe;
      return prevLe + (les[i] - prevLe) * ((want - prevC) / Math.max(1, cnt[i] - prevC));
    }
    prevLe = les[i]; prevC = cnt[i];
  }
  return prevLe;
}

// ---- polling ------------------------------------------------------------------------------
// Calls fn now and every ms while the tab is visible; returns stop().
export function poll(fn, ms) {
  let stopped = false, timer = null;
  const run = async () => {
    timer = null;
    if (stopped) return;
    if (!document.hidden) { try { await fn(); } catch (e) { console.warn(e); } }
    if (!stopped) timer = setTimeout(run, ms);
  };
  const vis = () => { if (!document.hidden && timer !== null && !stopped) { clearTimeout(timer); run(); } };
  document.addEventListener('visibilitychange', vis);
  run();
  return () => { stopped = true; clearTimeout(timer); document.removeEventListener('visibilitychange', vis); };
}

// ---- charts -------------------------------------------------------------------------------
export const COLORS = ['#1f6feb', '#d1242f', '#1a7f37', '#9a6700', '#8250df', '#bf3989', '#0a7f7f', '#6e7781'];

export function sparkline(values, color = COLORS[0]) {
  const w = 160, hgt = 34;
  const svg = h('svg:svg', {viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: 'none', 'aria-hidden': 'true'});
  const v = values.filter(x => x !== null && Number.isFinite(x));
  if (v.length < 2) return svg;
  const max = Math.max(...v, 1e-12), n = values.length;
  const pts = values.map((x, i) => `${(i / (n - 1)) * w},${hgt - 2 - ((x || 0) / max) * (hgt - 4)}`).join(' ');
  svg.append(h('svg:polyline', {points: pts, fill: 'none', stroke: color, 'stroke-width': '1.5', 'vector-effect': 'non-scaling-stroke'}));
  return svg;
}

// series: [{name, points: [[t_ms, value], ...]}]; a line chart with a y scale and a legend.
export function lineChart(series, opts = {}) {
  const w = 600, hgt = 160, left = 0, bottom = 4;
  const all = series.flatMap(s => s.points);
  const svg = h('svg:svg', {viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: 'none', role: 'img',
    'aria-label': opts.label || 'chart'});
  const box = h('div', {class: 'chart panel'}, svg);
  if (!all.length) { box.append(h('p', {class: 'muted small'}, opts.empty || 'Collecting data…')); return box; }
  const t0 = Math.min(...all.map(p => p[0])), t1 = Math.max(...all.map(p => p[0]), t0 + 1);
  const max = Math.max(...all.map(p => p[1]), 1);
  const x = t => left + ((t - t0) / (t1 - t0)) * (w - left - 4);
  const y = v => hgt - bottom - (v / max) * (hgt - bottom - 8);
  for (const f of [0, 0.5, 1]) {
    svg.append(h('svg:line', {x1: 0, x2: w, y1: y(max * f), y2: y(max * f), class: 'grid', 'stroke-width': '1', 'vector-effect': 'non-scaling-stroke'}));
  }
  // Labels are HTML, not SVG text: the drawing stretches to the box, text must not.
  box.prepend(h('div', {class: 'axis'}, h('span', {}, 'max ' + fmtNum(max)), h('span', {}, opts.unit || '')));
  box.append(h('div', {class: 'axis'}, h('span', {}, new Date(t0).toLocaleTimeString()), h('span', {}, new Date(t1).toLocaleTimeString())));
  series.forEach((s, i) => {
    if (!s.points.length) return;
    svg.append(h('svg:polyline', {points: s.points.map(p => `${x(p[0])},${y(p[1])}`).join(' '), fill: 'none',
      stroke: COLORS[i % COLORS.length], 'stroke-width': '2', 'vector-effect': 'non-scaling-stroke'}));
  });
  const legend = h('div', {class: 'legend'});
  series.forEach((s, i) => {
    const span = h('span', {}, s.name);
    span.style.setProperty('--c', COLORS[i % COLORS.length]);
    legend.append(span);
  });
  box.append(legend);
  return box;
}

// ---- confirmation (a modal <dialog>: keyboard-usable, Esc cancels) ----------------------------
export function confirmDialog(title, text, okLabel = 'Confirm', typeToConfirm = null) {
  const d = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  const ok = document.getElementById('confirm-ok');
  ok.textContent = okLabel;
  const extra = clear(document.getElementById('confirm-extra'));
  let input = null;
  if (typeToConfirm) {
    input = h('input', {'aria-label': 'Type ' + typeToConfirm + ' to confirm', autocomplete: 'off'});
    extra.append(h('label', {}, `Type “${typeToConfirm}” to confirm`, input));
    ok.disabled = true;
    input.addEventListener('input', () => { ok.disabled = input.value !== typeToConfirm; });
    // Enter would submit the dialog's first button (Cancel): make it confirm once the name matches.
    input.addEventListener('keydown', ev => {
      if (ev.key === 'Enter') { ev.preventDefault(); if (!ok.disabled) d.close('ok'); }
    });
  } else ok.disabled = false;
  d.returnValue = '';
  d.showModal();
  (input || document.getElementById('confirm-cancel')).focus();
  return new Promise(resolve => d.addEventListener('close', () => resolve(d.returnValue === 'ok'), {once: true}));
}

// A form's submit handler that shows progress and errors in `out`.
export function action(out, fn) {
  return async ev => {
    if (ev) ev.preventDefault();
    const btn = ev && ev.submitter;
    if (btn) btn.disabled = true;
    clear(out, h('span', {class: 'muted'}, 'Working…'));
    try { const r = await fn(); clear(out, r ? h('span', {class: 'ok-text', role: 'status'}, r) : ''); }
    catch (e) { clear(out, errorBox(e)); }
    finally { if (btn) btn.disabled = false; }
  };
}
