-- wrk script: sends WRK_METHOD (default GET) with WRK_BODY as a JSON body and WRK_TOKEN as a
-- bearer token, all from the environment; at the end prints one line "WRK_JSON {...}".
-- WRK_TOKENS (comma-separated) instead takes the tokens of several users in turn.
wrk.method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY")
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
local token = os.getenv("WRK_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

local tokens = os.getenv("WRK_TOKENS")
if tokens and tokens ~= "" then
  -- Made once: a request per user, sent in turn, so the rotation costs wrk nothing per request.
  local prepared = {}
  init = function(args)
    for each in string.gmatch(tokens, "[^,]+") do
      wrk.headers["Authorization"] = "Bearer " .. each
      prepared[#prepared + 1] = wrk.format()
    end
  end
  local next_one = 0
  request = function()
    next_one = next_one % #prepared + 1
    return prepared[next_one]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d,'
      .. ' "write": %d, "status": %d, "timeout": %d}, "latency_us": {"p50": %d, "p90": %d,'
      .. ' "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
