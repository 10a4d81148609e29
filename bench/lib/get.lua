-- get.lua: GET wrk's URL (e.g. /health, or / on nginx); AUTH adds an Authorization header.
package.path = debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "?.lua;" .. package.path
local report = require "report"
report.auth(wrk)
done = report.done
