// Which EDS and RDS resources the accepted clusters and listeners need, read from their proto3
// JSON. These names are what the client subscribes to for EDS and RDS (make-before-break: a
// cluster is only "ready" once its endpoints are, a listener once its routes are).

import type { Json } from '../types';

const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';

/** The ClusterLoadAssignment name an EDS cluster needs (eds_cluster_config.service_name, else its name); undefined for other cluster types. */
export function edsNameOfCluster(cluster: Json): string | undefined {
  if (cluster.type !== 'EDS') return undefined;
  const eds = cluster.edsClusterConfig as Json | undefined;
  const service = typeof eds?.serviceName === 'string' ? eds.serviceName : '';
  return service || (typeof cluster.name === 'string' ? cluster.name : undefined);
}

function hcmRouteName(cfg: unknown): string | undefined {
  const c = cfg as Json | undefined;
  if (!c || c['@type'] !== HCM) return undefined;
  const rds = c.rds as Json | undefined;
  return typeof rds?.routeConfigName === 'string' && rds.routeConfigName ? rds.routeConfigName : undefined;
}

/** RouteConfiguration names a listener's HTTP connection managers load over RDS (filter chains and api_listener). */
export function rdsNamesOfListener(listener: Json): string[] {
  const out = new Set<string>();
  const chains = [...((listener.filterChains as Json[] | undefined) ?? [])];
  if (listener.defaultFilterChain) chains.push(listener.defaultFilterChain as Json);
  for (const fc of chains) {
    for (const f of (fc.filters as Json[] | undefined) ?? []) {
      const n = hcmRouteName(f.typedConfig);
      if (n) out.add(n);
    }
  }
  const api = (listener.apiListener as Json | undefined)?.apiListener;
  const n = hcmRouteName(api);
  if (n) out.add(n);
  return [...out];
}
