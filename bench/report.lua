-- Shared by the bench/*.lua wrk scripts: at the end of a run, writes one JSON object with the
-- throughput and latency percentiles (milliseconds) to the file named by BENCH_OUT.
function done(summary, latency, _requests)
  local path = os.getenv("BENCH_OUT")
  if not path then return end
  local seconds = summary.duration / 1e6
  local e = summary.errors
  local f = assert(io.open(path, "w"))
  f:write(string.format(
    '{"requests": %d, "seconds": %.3f, "rps": %.2f, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, ' ..
    '"max_ms": %.3f, "mean_ms": %.3f, "errors_status": %d, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_timeout": %d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000,
    e.status, e.connect, e.read, e.write, e.timeout))
  f:close()
end
