#!/usr/bin/env node
// summary.js -- build RESULTS_DIR/summary.md (and summary.json) from a bench/run results dir.
//   node summary.js RESULTS_DIR
// Inputs: raw.jsonl (one record per run, from record.js / the recovery section), machine.md,
// load.txt, notes.txt, commands.txt, and peers-<label>/summary.json written by peers.sh.
// Every figure is the median over the reps with its min–max spread; ratios are paired by rep
// when both sides come from our own interleaved runs, and ratios of medians (marked so) when the
// peer side comes from peers.sh's block of the same invocation.
"use strict";
const fs = require("fs");
const path = require("path");

const dir = process.argv[2];
const rd = (f) => { try { return fs.readFileSync(path.join(dir, f), "utf8"); } catch (e) { return ""; } };
const rdJson = (f) => { try { return JSON.parse(rd(f)); } catch (e) { return null; } };
const recs = rd("raw.jsonl").split("\n").filter(Boolean).map((l) => JSON.parse(l));

const num = (x) => typeof x === "number" && Number.isFinite(x);
const median = (xs) => {
  const s = xs.filter(num).sort((a, b) => a - b);
  if (!s.length) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const minOf = (xs) => (xs.filter(num).length ? Math.min(...xs.filter(num)) : null);
const maxOf = (xs) => (xs.filter(num).length ? Math.max(...xs.filter(num)) : null);
const fr = (x) => {
  if (!num(x)) return "–";
  if (x >= 1e6) return (x / 1e6).toFixed(2) + " M";
  if (x >= 1e4) return (x / 1e3).toFixed(1) + " k";
  if (x >= 100) return Math.round(x).toLocaleString("en-US");
  return x.toFixed(1);
};
const fus = (x) => (!num(x) ? "–" : x >= 1e6 ? (x / 1e6).toFixed(2) + " s" : x >= 1000 ? (x / 1000).toFixed(2) + " ms" : Math.round(x) + " µs");
const f1 = (x) => (num(x) ? x.toFixed(1) : "–");
const f2 = (x) => (num(x) ? x.toFixed(2) : "–");
const spread = (xs, fmt) => { const a = minOf(xs), b = maxOf(xs); return a === null ? "–" : fmt(a) + "–" + fmt(b); };
const pm = (xs) => { const m = median(xs), a = minOf(xs), b = maxOf(xs); return m ? Math.round(((b - a) / 2 / m) * 100) + "" : "–"; };

// group our records by section+config (first-seen order)
const groups = new Map();
for (const r of recs) {
  const k = r.section + "\u0000" + r.config;
  if (!groups.has(k)) groups.set(k, []);
  groups.get(k).push(r);
}
const rowsOf = (sec) => [...groups.values()].filter((g) => g[0].section === sec);
const get = (sec, cfg) => (groups.get(sec + "\u0000" + cfg) || []).filter((r) => r.ok);
const medOf = (sec, cfg, f = "rate") => median(get(sec, cfg).map((r) => r[f]));
const paired = (sec, a, b, f = "rate") => {
  const A = get(sec, a), B = get(sec, b), per = [];
  for (const x of A) { const y = B.find((z) => z.rep === x.rep); if (y && num(y[f]) && y[f] > 0 && num(x[f])) per.push(x[f] / y[f]); }
  return per;
};
const ratioRow = (label, per, how) =>
  `| ${label} | ${per.length ? f2(median(per)) : "–"} | ${per.length ? f2(Math.min(...per)) + "–" + f2(Math.max(...per)) : "–"} | ${how} |\n`;

// peers.sh results of this invocation
const peers = {};
for (const label of ["http", "broker"]) peers[label] = rdJson(`peers-${label}/summary.json`);
const peerRow = (label, sec, cfg) => {
  const p = peers[label];
  if (!p) return null;
  return p.rows.find((r) => r.section === sec && r.config === cfg) || null;
};

let md = "";
const h = (s) => (md += `\n## ${s}\n\n`);
const stamp = path.basename(dir);
md += `# Ayder benchmark run ${stamp}\n\n`;
md += "Produced by `bench/run`. Every figure: median over the repetitions, then the min–max spread and ±% (half the " +
  "range as a % of the median). Load generators run on the same cores as the servers. Only compare figures from the same " +
  "run; use the paired ratios.\n\n";
md += "### Machine\n\n" + rd("machine.md") + "\n";

// box load
const waits = recs.filter((r) => num(r.quiet_wait_s));
const busy = recs.filter((r) => num(r.busy_cpu));
md += "### How busy the box was\n\n";
md += `Before each run the script waited for the box to be < QUIET_PCT % of one core busy for QUIET_SECS s (at most QUIET_WAIT s). ` +
  `Runs: ${recs.length}; median wait ${f1(median(waits.map((r) => r.quiet_wait_s)))} s, max ${f1(maxOf(waits.map((r) => r.quiet_wait_s)))} s; ` +
  `busy % in the last second before the run (of one core, ${"200"}% = 2 cores): median ${f1(median(waits.map((r) => r.quiet_busy_pct)))}, max ${f1(maxOf(waits.map((r) => r.quiet_busy_pct)))}. ` +
  `Whole-box CPU during runs (server + generator + others): median ${f1(median(busy.map((r) => r.busy_cpu)))} %, ` +
  `foreign (box − server − generator) median ${f1(median(busy.map((r) => (num(r.srv_cpu) ? r.busy_cpu - r.srv_cpu - r.cli_cpu : null))))} %, ` +
  `max ${f1(maxOf(busy.map((r) => (num(r.srv_cpu) ? r.busy_cpu - r.srv_cpu - r.cli_cpu : null))))} %.\n\n`;
const load = rd("load.txt").trim();
if (load) md += "Load average per section:\n\n```\n" + load + "\n```\n";
const notes = rd("notes.txt").trim();
if (notes) md += "\n### Notes and failures\n\n" + notes.split("\n").map((l) => "- " + l).join("\n") + "\n";

// generic table of our rows
const table = (sec, withMsgs) => {
  const rows = rowsOf(sec);
  if (!rows.length) return "";
  let t = `| config | req/s median | req/s min–max | ±% |${withMsgs ? " msg/s median | msg/s min–max |" : ""} p50 | p99 | errors | srv % | gen % | box % | ok/reps |\n`;
  t += `|---|---:|---:|---:|${withMsgs ? "---:|---:|" : ""}---:|---:|---:|---:|---:|---:|---:|\n`;
  for (const g of rows) {
    const ok = g.filter((r) => r.ok);
    const rate = ok.map((r) => r.rate), msgs = ok.map((r) => r.msgs);
    t += `| ${g[0].config} | ${fr(median(rate))} | ${spread(rate, fr)} | ${pm(rate)} |` +
      (withMsgs ? ` ${fr(median(msgs))} | ${spread(msgs, fr)} |` : "") +
      ` ${fus(median(ok.map((r) => r.p50_us)))} | ${fus(median(ok.map((r) => r.p99_us)))} | ${ok.reduce((a, r) => a + (r.errors || 0), 0)} |` +
      ` ${f1(median(ok.map((r) => r.srv_cpu)))} | ${f1(median(ok.map((r) => r.cli_cpu)))} | ${f1(median(ok.map((r) => r.busy_cpu)))} | ${ok.length}/${g.length} |\n`;
  }
  return t + "\nsrv % / gen % / box %: CPU of the server / the load generator / the whole box during the run, in % of one core. " +
    "errors: non-2xx responses plus socket errors, summed over the reps.\n";
};
const ratioHead = "| ratio | median | min–max | how |\n|---|---:|---:|---|\n";
const summary = { sections: {} };

// ---- http
if (rowsOf("http").length || peers.http) {
  h("http (issue 2): the HTTP exchange beside nginx");
  md += table("http", false);
  const p = peers.http;
  if (p) {
    md += "\nFrom `peers.sh http` in this run (PEER_URL = our produce route; `ayder` rows interleaved with nginx in every rep):\n\n";
    md += "| config | req/s median | min–max | ±% | p50 | p99 | srv % | srv µs/req | n |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const r of p.rows.filter((x) => x.section === "http")) {
      md += `| ${r.config} | ${fr(r.median)} | ${fr(r.min)}–${fr(r.max)} | ${f1(r.spread_pct)} | ${fus(r.p50_us)} | ${fus(r.p99_us)} | ${f1(r.srv_cpu)} | ${f1(r.srv_us_op)} | ${r.n}/${r.reps} |\n`;
    }
    const rs = p.ratios.filter((q) => /ayder/.test(q.label));
    if (rs.length) {
      md += "\n" + ratioHead;
      for (const q of rs) md += `| ${q.label} | ${f2(q.median)} | ${f2(q.min)}–${f2(q.max)} | paired by rep (peers.sh) |\n`;
    }
    md += "\nFull peers.sh tables: `peers-http/summary.md`.\n";
  } else {
    md += "\n(no peers.sh http results in this run)\n";
  }
}

// ---- broker
if (rowsOf("broker").length) {
  h("broker (issue 4): produce, NDJSON, consume, 1 KiB, open-loop latency");
  md += table("broker", true);
  const nd = medOf("broker", "sealed NDJSON 1000 x 64 B (ayder bench c64)", "msgs");
  const cons = medOf("broker", "consume 1000 x 64 B b64 (ayder bench c64)", "msgs");
  md += "\nGoals (issue 4):\n\n| goal | measured (median) | met |\n|---|---:|---|\n";
  md += `| sealed NDJSON ≥ 3 M msg/s | ${fr(nd)} msg/s | ${nd === null ? "–" : nd >= 3e6 ? "yes" : "**no**"} |\n`;
  md += `| consume (1000/req, b64) ≥ 2 M msg/s | ${fr(cons)} msg/s | ${cons === null ? "–" : cons >= 2e6 ? "yes" : "**no**"} |\n`;
  summary.sections.broker = { ndjson_msgs: nd, consume_msgs: cons };
  // open loop
  const ol = rowsOf("broker").find((g) => g[0].open_loop === 1);
  if (ol) {
    const ok = ol.filter((r) => r.ok && r.pcts);
    if (ok.length) {
      const keys = Object.keys(ok[0].pcts);
      md += `\nOpen-loop latency, ${ol[0].config} (latency from the intended send time, i.e. corrected for coordinated omission):\n\n`;
      md += "| percentile | median | min–max |\n|---|---:|---:|\n";
      for (const k of keys) { const xs = ok.map((r) => r.pcts[k]); md += `| ${k} | ${fus(median(xs))} | ${spread(xs, fus)} |\n`; }
      md += `\nAchieved rate: ${fr(median(ok.map((r) => r.rate)))} req/s (offered ${fr(ok[0].offered_rate)}).\n`;
    }
  }
  const p = peers.broker;
  md += "\nAyder against the peers from `peers.sh redis nats` of this run (ratio of medians; the peer side ran in its own block, " +
    "so these are not paired by rep):\n\n";
  if (p) {
    const pr = (cfg, sec) => peerRow("broker", sec, cfg);
    const items = (r) => (r ? (num(r.items_per_s) && r.items_per_s ? r.items_per_s : r.median) : null);
    const rows = [
      ["sealed 64 B produce (wrk t2 c64)", "rate", "redis", "always XADD c50 P1", "Redis XADD appendfsync always, c50"],
      ["sealed 64 B produce (wrk t2 c64)", "rate", "redis", "everysec XADD c50 P1", "Redis XADD everysec, c50"],
      ["rocket 64 B produce (wrk t2 c64)", "rate", "redis", "everysec XADD c50 P1", "Redis XADD everysec, c50"],
      ["rocket 64 B produce (wrk t2 c64)", "rate", "nats", "R1 pub async w256", "JetStream R1 publish, 256 in flight"],
      ["sealed NDJSON 1000 x 64 B (ayder bench c64)", "msgs", "redis", "always XADD c50 P16", "Redis XADD always, c50 pipeline 16"],
      ["sealed NDJSON 1000 x 64 B (ayder bench c64)", "msgs", "nats", "R1 pub async w256", "JetStream R1 publish, 256 in flight"],
      ["consume 1000 x 64 B b64 (ayder bench c64)", "msgs", "redis", "everysec XRANGE100 c50 P1", "Redis XRANGE 100 entries (entries/s)"],
      ["consume 1000 x 64 B b64 (ayder bench c64)", "msgs", "nats", "R1 fetch b100", "JetStream R1 fetch batch 100 (msg/s)"],
    ];
    md += "| Ayder | Ayder median | peer | peer median | ratio |\n|---|---:|---|---:|---:|\n";
    for (const [cfg, f, psec, pcfg, plabel] of rows) {
      const a = medOf("broker", cfg, f);
      const r = pr(pcfg, psec);
      const b = pcfg.includes("XRANGE") ? items(r) : r ? r.median : null;
      md += `| ${cfg} (${f === "rate" ? "req/s" : "msg/s"}) | ${fr(a)} | ${plabel} | ${fr(b)} | ${a !== null && b ? f2(a / b) : "–"} |\n`;
    }
    md += "\nFull peers.sh tables (durability of each peer: see shared/reference/peers.md): `peers-broker/summary.md`.\n";
  } else {
    md += "(no peers.sh redis/nats results in this run)\n";
  }
}

// ---- kv
if (rowsOf("kv").length) {
  h("kv (issue 5): KV put/get beside Redis SET/GET with appendfsync always");
  md += table("kv", false);
  md += "\n" + ratioHead;
  md += ratioRow("Ayder KV put (sealed) / Redis SET (always)", paired("kv", "ayder KV put 64 B sealed (ayder bench c64)", "redis SET 64 B appendfsync always (c64)"), "paired by rep");
  md += ratioRow("Ayder KV get / Redis GET", paired("kv", "ayder KV get 64 B (ayder bench c64)", "redis GET 64 B appendfsync always (c64)"), "paired by rep");
  md += "\nAyder is loaded by `ayder bench`, Redis by `redis-benchmark` (different generators; see the generator section for how much that matters).\n";
}

// ---- recovery
const rec = recs.filter((r) => r.section === "recovery");
if (rec.length) {
  h("recovery (issue 3): restart after SIGKILL, disk footprint, memory");
  const col = (f) => rec.map((r) => r[f]);
  const bpr = rec.map((r) => (num(r.disk_bytes) && r.n ? r.disk_bytes / r.n : null));
  const abpr = rec.map((r) => (num(r.disk_alloc_bytes) && r.n ? r.disk_alloc_bytes / r.n : null));
  const line = (name, xs, fmt) => `| ${name} | ${fmt(median(xs))} | ${spread(xs, fmt)} |\n`;
  const mib = (x) => (num(x) ? (x / 1024).toFixed(1) + " MiB" : "–");
  md += `N = ${fr(rec[0].n)} records of 64 bytes, produced as sealed NDJSON batches of 1000 over one connection; then SIGKILL, ` +
    "restart, /ready polled every 10 ms; then a clean stop (SIGTERM) and `du` of the data dir.\n\n";
  md += "| figure | median | min–max |\n|---|---:|---:|\n";
  md += line("time to /ready after SIGKILL (from process start)", col("ready_ms"), (x) => (num(x) ? x.toLocaleString("en-US") + " ms" : "–"));
  md += line("records present after restart", col("records_after"), fr);
  md += line("produce rate while filling (msg/s)", col("produce_rate"), fr);
  md += line("disk bytes per record (du --apparent-size / N)", bpr, f1);
  md += line("footprint ratio vs raw 64 B (apparent)", bpr.map((x) => (num(x) ? x / 64 : null)), f2);
  md += line("disk bytes per record (allocated blocks / N)", abpr, f1);
  md += line("footprint ratio vs raw 64 B (allocated)", abpr.map((x) => (num(x) ? x / 64 : null)), f2);
  const tpr = rec.map((r) => (num(r.topics_bytes) && r.n ? r.topics_bytes / r.n : null));
  md += line("partition logs only (topics/, apparent) bytes per record", tpr, f1);
  md += line("footprint ratio vs raw 64 B (partition logs only)", tpr.map((x) => (num(x) ? x / 64 : null)), f2);
  md += line("peak RSS while producing (VmHWM)", col("rss_produce_kb"), mib);
  md += line("peak RSS of the restarted process at ready (VmHWM)", col("rss_recovery_kb"), mib);
  md += "\nThe totals include the journal's preallocated segment files (and its spare), which do not grow with N; at small N they dominate.\n";
  md += `\nok reps: ${rec.filter((r) => r.ok).length}/${rec.length}. Largest files of the data dir: \`out/recovery-du-*.txt\`.\n`;
}

// ---- generator
if (rowsOf("generator").length) {
  h("generator: is the load generator the bottleneck?");
  md += table("generator", false);
  md += "\n" + ratioHead;
  md += ratioRow("ayder bench / wrk, nginx GET /", paired("generator", "nginx GET / (ayder bench t2 c64)", "nginx GET / (wrk t2 c64)"), "paired by rep");
  md += ratioRow("ayder bench / wrk, Ayder GET /health", paired("generator", "ayder GET /health (ayder bench t2 c64)", "ayder GET /health (wrk t2 c64)"), "paired by rep");
  md += ratioRow("Ayder /health / nginx (wrk)", paired("generator", "ayder GET /health (wrk t2 c64)", "nginx GET / (wrk t2 c64)"), "paired by rep");
  md += "\nA ratio ≥ 1 for ayder bench / wrk against the same nginx means `ayder bench` drives at least as much load as wrk " +
    "with the same threads and connections; gen % shows what each generator itself costs.\n";
}

// ---- commands
h("Commands");
const seen = new Set();
let cmds = "";
const lines = rd("commands.txt").split("\n");
for (let i = 0; i + 1 < lines.length; i += 2) {
  const label = lines[i].replace(/^# /, "").replace(/ \(rep \d+\)$/, "").replace(/ \(pid \d+\)$/, "");
  const cmd = lines[i + 1];
  const key = label + "\u0000" + cmd.replace(/ --?rep=?\d+/, "");
  if (seen.has(key)) continue;
  seen.add(key);
  cmds += `# ${label}\n${cmd}\n`;
}
md += "Every distinct command, as run (the per-rep list is in `commands.txt`, raw output under `out/`):\n\n```\n" + cmds + "```\n";

fs.writeFileSync(path.join(dir, "summary.md"), md);
summary.records = recs.length;
fs.writeFileSync(path.join(dir, "summary.json"), JSON.stringify(summary, null, 1));
