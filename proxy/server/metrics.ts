// Prometheus metrics of the proxy, in a registry of its own (never prom-client's global one, so
// several proxies — or the agent's metrics — can live in one process).
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * decision label values:
 *   allow           the evaluator allowed
 *   deny            the evaluator denied (403 / grpc-status 7)
 *   no_table        no policy table received yet (a proxy that just started): refused, 503 / grpc-status 14
 *   no_policy       the table has no evaluator for the destination: refused, 503 / grpc-status 14 (the
 *                   kernel steers only destinations with rules, so their rules are not here yet)
 *   error           the evaluator threw: denied (fail closed)
 *   unknown_origin  the datapath has no record of the connection: refused (403)
 *   rejected        refused before any policy: malformed, too large, too slow, CONNECT, pipelining overflow
 */
export type DecisionLabel = 'allow' | 'deny' | 'no_table' | 'no_policy' | 'error' | 'unknown_origin' | 'rejected';

/**
 * reason label values of sockmesh_proxy_upstream_errors_total: connect_refused, connect_failed,
 * connect_timeout, headers_timeout, idle_timeout, reset, protocol, overflow, invalid_request, other.
 */
export type UpstreamErrorReason =
  | 'connect_refused'
  | 'connect_failed'
  | 'connect_timeout'
  | 'headers_timeout'
  | 'idle_timeout'
  | 'reset'
  | 'protocol'
  | 'overflow'
  | 'invalid_request'
  | 'other';

export interface ProxyMetrics {
  registry: Registry;
  requests: Counter<'decision' | 'policy' | 'code'>;
  duration: Histogram<string>;
  upstreamErrors: Counter<'reason'>;
  connectionsActive: Gauge<string>;
  dryRunMatches: Counter<'policy'>;
}

export function createProxyMetrics(registry: Registry = new Registry()): ProxyMetrics {
  return {
    registry,
    requests: new Counter({
      name: 'sockmesh_proxy_requests_total',
      help: 'Requests handled by the L7 proxy, by policy decision, deciding policy ("" if none) and response status',
      labelNames: ['decision', 'policy', 'code'],
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'sockmesh_proxy_request_duration_seconds',
      help: 'From the request head to the end of the response (to the 101 for upgrades)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    upstreamErrors: new Counter({
      name: 'sockmesh_proxy_upstream_errors_total',
      help: 'Failures reaching or talking to the original destination',
      labelNames: ['reason'],
      registers: [registry],
    }),
    connectionsActive: new Gauge({
      name: 'sockmesh_proxy_connections_active',
      help: 'Downstream connections open on the proxy',
      registers: [registry],
    }),
    dryRunMatches: new Counter({
      name: 'sockmesh_proxy_dry_run_matches_total',
      help: 'Shadow (dry-run) policies that matched a request',
      labelNames: ['policy'],
      registers: [registry],
    }),
  };
}
