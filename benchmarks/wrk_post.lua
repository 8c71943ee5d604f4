-- wrk script for benchmarks/bench_service.py: POST JSON bodies taken in turn from a file (one
-- per line), stop after a maximum number of answers, print one JSON summary line at the end.
--   wrk -t1 -c32 -d15s -s benchmarks/wrk_post.lua URL -- BODIES_FILE MAX_REQUESTS [API_KEY]
local bodies, answered, max_requests, next_body = {}, 0, 0, 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then bodies[#bodies + 1] = line end
  end
  if #bodies == 0 then error("no request bodies in " .. args[1]) end
  max_requests = tonumber(args[2]) or 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if args[3] ~= nil and #args[3] > 0 then wrk.headers["X-API-Key"] = args[3] end
end

function request()
  next_body = next_body % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[next_body])
end

function response(status, headers, body)
  answered = answered + 1
  if max_requests > 0 and answered >= max_requests then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\n{"requests": %d, "duration_us": %d, "bytes": %d, "non_2xx_3xx": %d, ' ..
    '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
