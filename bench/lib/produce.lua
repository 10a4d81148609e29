-- produce.lua: POST a fixed body of BODY_BYTES bytes (default 64) to wrk's URL, e.g.
--   BODY_BYTES=1024 AUTH="Bearer dev" wrk -t2 -c64 -d10s -s produce.lua \
--     'http://127.0.0.1:PORT/broker/topics/bench/produce?partition=0&mode=sealed'
-- The body is printable ASCII (a JSON object padded with 'x'), so any server stores it as is.
package.path = debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "?.lua;" .. package.path
local report = require "report"

local n = tonumber(os.getenv("BODY_BYTES") or "64")
local head, tail = '{"seq":12345678,"v":"', '"}'
assert(n >= #head + #tail, "BODY_BYTES too small")
wrk.method = "POST"
wrk.body = head .. string.rep("x", n - #head - #tail) .. tail
assert(#wrk.body == n)
wrk.headers["Content-Type"] = "application/octet-stream"
report.auth(wrk)
done = report.done
