-- wrk script of bench/l7.ts: prints one JSON line with what wrk measured, so the harness does not
-- have to parse wrk's human-readable summary.
--
-- Only `done` is defined: defining `response` would make wrk hand every response's headers and
-- body to Lua, which costs CPU in the load generator on every request.
--
-- wrk 4.1 (Debian) keeps latencies in a linear histogram with 1 µs buckets up to --timeout
-- (src/stats.c), so latency:percentile(p) is exact to the microsecond. Before `done` runs, wrk
-- adds synthetic samples for requests slower than twice the mean per-connection interval
-- (stats_correct, a partial coordinated-omission correction): a stall raises the tail it reports.
-- summary.errors.status counts responses with status > 399.

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"wrk_report":1,"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.3f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
