-- report.lua: wrk `done` hook shared by the bench/run scripts. Prints one line
--   BENCHJSON {"requests":..,"secs":..,"rps":..,"p50_us":..,...}
-- that bench/lib/record.js parses. Latencies are wrk's (closed loop, measured from the
-- send of each request, so no coordinated-omission correction), in microseconds.
local M = {}

function M.done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local function pct(p) return latency:percentile(p) end
  io.write(string.format(
    'BENCHJSON {"requests":%d,"secs":%.3f,"rps":%.1f,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"non2xx":%d,"err_timeout":%d}\n',
    summary.requests, secs, summary.requests / secs, summary.bytes,
    pct(50), pct(90), pct(99), pct(99.9), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end

-- AUTH="Bearer dev" adds an Authorization header to every request.
function M.auth(w)
  local a = os.getenv("AUTH")
  if a and a ~= "" then w.headers["Authorization"] = a end
end

return M
