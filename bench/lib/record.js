#!/usr/bin/env node
// record.js -- turn the output of one load run into one JSON record (one line on stdout).
//   node record.js kind=wrk|ab|rb out=FILE section=S config=C rep=N [key=value ...]
// kind wrk: the BENCHJSON line printed by report.lua; ab: `ayder bench --json`; rb: the last CSV
// line of redis-benchmark --csv. Every other key=value is copied into the record (numbers as
// numbers). The record always has: ok, rate (requests/s), msgs (messages/s), p50_us, p99_us,
// errors; `pcts` (percentile -> us) when the generator reports a full table.
"use strict";
const fs = require("fs");

const a = {};
for (const kv of process.argv.slice(2)) {
  const i = kv.indexOf("=");
  if (i < 0) continue;
  const k = kv.slice(0, i), v = kv.slice(i + 1);
  a[k] = v !== "" && /^-?[0-9]+(\.[0-9]+)?$/.test(v) ? Number(v) : v;
}
let text = "";
try { text = fs.readFileSync(a.out, "utf8"); } catch (e) { /* missing output: failed run */ }
const rec = Object.assign({}, a, { ok: false, rate: null, msgs: null, p50_us: null, p99_us: null, errors: null });
delete rec.out;
const per = Number(a.msgs_per_req || 1);

try {
  if (a.kind === "wrk") {
    const line = text.split("\n").find((l) => l.startsWith("BENCHJSON "));
    if (line) {
      const j = JSON.parse(line.slice(10));
      rec.rate = j.rps; rec.msgs = j.rps * per; rec.p50_us = j.p50_us; rec.p99_us = j.p99_us;
      rec.pcts = { p50: j.p50_us, p90: j.p90_us, p99: j.p99_us, "p99.9": j.p999_us, max: j.max_us };
      rec.errors = j.err_connect + j.err_read + j.err_write + j.non2xx + j.err_timeout;
      rec.requests = j.requests;
      rec.ok = j.requests > 0;
    }
  } else if (a.kind === "ab") {
    const start = text.indexOf("{");
    if (start >= 0) {
      const j = JSON.parse(text.slice(start, text.lastIndexOf("}") + 1));
      rec.rate = j.req_per_s; rec.msgs = j.msg_per_s;
      rec.p50_us = j.latency_us.p50; rec.p99_us = j.latency_us.p99;
      rec.pcts = j.latency_us; rec.errors = j.errors; rec.requests = j.requests;
      rec.gen_cpu = j.cpu ? j.cpu.percent : null;
      rec.latency_from = j.latency_from; rec.offered_rate = j.rate;
      rec.ok = j.requests > 0;
    }
  } else if (a.kind === "rb") {
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    const lines = text.split("\n").filter((l) => /^"[A-Z]/.test(l) && !l.startsWith('"test"'));
    if (lines.length) {
      const f = lines[lines.length - 1].split('","').map((s) => s.replace(/"/g, ""));
      rec.rate = Number(f[1]); rec.msgs = rec.rate * per;
      rec.p50_us = Number(f[4]) * 1000; rec.p99_us = Number(f[6]) * 1000;
      rec.pcts = { p50: rec.p50_us, p95: Number(f[5]) * 1000, p99: rec.p99_us, max: Number(f[7]) * 1000 };
      rec.errors = 0;
      rec.ok = rec.rate > 0;
    }
  }
} catch (e) {
  rec.parse_error = String(e.message || e);
}
if (a.exit !== undefined && a.exit !== 0) rec.ok = false;
process.stdout.write(JSON.stringify(rec) + "\n");
