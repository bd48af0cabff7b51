-- wrk script: POST the body in $BENCH_BODY (a file) to the URL; print a JSON summary line.
-- Headers: Content-Type plus whatever $BENCH_HEADERS holds ("Name: value|Name: value").
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
for h in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^|]+") do
  local name, value = string.match(h, "^%s*([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end

-- BENCH_VARY=1: every request's first message text starts with a number not sent before, so
-- that no two requests are alike (a response cache then misses on every one).
if os.getenv("BENCH_VARY") then
  math.randomseed(os.time())
  local run = math.random(1, 1000000000)
  local head, tail = string.match(wrk.body, '^(.-"content":%s*")(.*)$')
  assert(head, "BENCH_VARY: the body has no \"content\" string")
  local n = 0
  request = function()
    n = n + 1
    return wrk.format(nil, nil, nil, head .. run .. "-" .. n .. " " .. tail)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
