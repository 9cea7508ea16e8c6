// Envoy resources (CDS/EDS/LDS/RDS, or an admin config dump) → the sockmesh model.
//
// What becomes what:
// - A Service per service identity (see serviceOfCluster), with the VIPs and ports of every
//   destination (VIP:port, from listeners; see envoy-listeners.ts) whose cluster belongs to it.
// - Endpoints, per (service, port): the backends of the cluster the destination goes to. Several
//   weighted clusters (tcp_proxy weighted_clusters) are merged with effective weights
//   W_cluster * w_endpoint / Σw_cluster, which is what Envoy's per-connection choice amounts to.
//   An Istio service cluster `outbound|PORT||HOST` that no listener reaches (an endpoints-only dump,
//   an EDS-only stream) still yields its endpoints for PORT, so they are ready when a VIP arrives
//   from elsewhere; other unreached clusters do not (subsets are reached only by L7 routing).
// - Policies: the RBAC filters of each filter chain, split by splitRbacFilters for the chain's
//   destinations.
// Every resource is validated first (validate.ts); an invalid one contributes nothing.

import type { Endpoint, L4Policy, L7Policy, Model, Service, ServicePort } from '../../core/model';
import { serviceRef } from '../../core/model';
import { TYPE } from '../types';
import { Backend, buildClusters, ClusterInfo, MAX_WEIGHT, serviceOfCluster } from './envoy-clusters';
import { Candidate, PolicyInput, translateListener, WeightedCluster } from './envoy-listeners';
import { arr, errorText, field, isObj, Json, obj, shortType, stableJson, str } from './json';
import { splitRbacFilters } from './rbac';
import { DestinationInfo, TranslateResult, Warnings } from './result';
import { validateResource } from './validate';

export interface EnvoyResources {
  clusters?: unknown[];
  endpoints?: unknown[];
  listeners?: unknown[];
  routes?: unknown[];
}

const DISCOVERY_RESOURCE = 'envoy.service.discovery.v3.Resource';

/** A live resource may arrive wrapped in envoy.service.discovery.v3.Resource. */
function unwrap(r: unknown): unknown {
  if (isObj(r) && shortType(r['@type']) === DISCOVERY_RESOURCE) return field(r, 'resource');
  return r;
}

function validated(kind: string, typeUrl: string, list: unknown[] | undefined, nameField: string, w: Warnings): Map<string, Json> {
  const out = new Map<string, Json>();
  (Array.isArray(list) ? list : []).forEach((raw, i) => {
    const r = unwrap(raw);
    const name = str(r, nameField) ?? '';
    const label = `${kind} ${name || `#${i}`}`;
    const bad = validateResource(typeUrl, name || `#${i}`, r);
    if (bad) {
      w.add(label, `rejected: ${bad}`);
      return;
    }
    if (out.has(name)) w.add(label, 'given twice; the last one is used');
    out.set(name, r as Json);
  });
  return out;
}

function gcd(a: bigint, b: bigint): bigint {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Backends of several clusters chosen per connection by weight, as one weighted set. Exact
 * (integer arithmetic) when the result fits the model's weight limit, else scaled.
 */
function mergeWeighted(parts: Array<{ weight: number; backends: Backend[] }>, label: string, w: Warnings): Backend[] {
  const live = parts.filter((p) => p.weight > 0 && p.backends.length);
  const sums = live.map((p) => {
    const healthy = p.backends.filter((b) => b.healthy);
    return BigInt((healthy.length ? healthy : p.backends).reduce((s, b) => s + b.weight, 0));
  });
  const lcm = sums.reduce((l, s) => (l * s) / gcd(l, s), 1n);
  const nums = live.flatMap((p, i) => p.backends.map((b) => BigInt(p.weight) * BigInt(b.weight) * (lcm / sums[i])));
  const g = nums.reduce((a, b) => gcd(a, b), 0n) || 1n;
  const ints = nums.map((n) => n / g);
  const max = ints.reduce((a, b) => (a > b ? a : b), 0n);
  const out = live.flatMap((p) => p.backends.map((b) => ({ ...b })));
  if (max <= BigInt(MAX_WEIGHT)) out.forEach((b, i) => (b.weight = Number(ints[i])));
  else {
    out.forEach((b, i) => (b.weight = Math.max(1, Math.round((Number(ints[i]) / Number(max)) * MAX_WEIGHT))));
    w.add(label, `the weighted clusters' effective endpoint weights exceed ${MAX_WEIGHT} and are approximated`);
  }
  return out;
}

function emptyPolicyModel(): Model {
  return { services: [], endpoints: [], workloads: [], policies: { l4: [], l7: [] } };
}

/**
 * Translate Envoy resources (proto3 JSON, either field spelling) into a model. Never throws;
 * everything left out is named in `warnings`.
 */
export function translateEnvoy(input: EnvoyResources): TranslateResult {
  const w = new Warnings();
  const model = emptyPolicyModel();
  const destinations: DestinationInfo[] = [];
  try {
    const inp: EnvoyResources = isObj(input) ? input : {};
    const clas = validated('ClusterLoadAssignment', TYPE.ENDPOINT, inp.endpoints, 'clusterName', w);
    const clusterJsons = validated('cluster', TYPE.CLUSTER, inp.clusters, 'name', w);
    const listeners = validated('listener', TYPE.LISTENER, inp.listeners, 'name', w);
    const routes = validated('route', TYPE.ROUTE, inp.routes, 'name', w);
    const clusters = buildClusters([...clusterJsons.values()], clas, w);

    const candidates: Candidate[] = [];
    const policyInputs: PolicyInput[] = [];
    const usedRoutes = new Set<string>();
    for (const [name, l] of listeners) {
      try {
        const out = translateListener(l, routes, usedRoutes, w);
        candidates.push(...out.candidates);
        policyInputs.push(...out.policies);
      } catch (e) {
        w.add(`listener ${name}`, `not translated: internal error: ${errorText(e)}`);
      }
    }
    for (const name of routes.keys()) {
      if (!usedRoutes.has(name)) w.add(`route ${name}`, 'not used by any listener, so no VIP:port leads to it; not translated');
    }

    const built = buildServices(candidates, clusters, w);
    model.services = built.services;
    model.endpoints = built.endpoints;
    destinations.push(...built.destinations);
    model.policies = buildPolicies(policyInputs, built.serviceAt, w);
  } catch (e) {
    // Defensive: a bug must not leave a half-built model behind.
    return { model: emptyPolicyModel(), warnings: [...w.list, { resource: 'envoy resources', reason: `not translated: internal error: ${errorText(e)}` }] };
  }
  return { model, warnings: w.list, destinations };
}

const clusterKey = (cs: WeightedCluster[]): string => cs.map((c) => `${c.name}*${c.weight}`).join(',');

function pick(group: Candidate[], w: Warnings): Candidate {
  const distinct = new Map<string, Candidate>();
  for (const c of group) if (!distinct.has(clusterKey(c.clusters))) distinct.set(clusterKey(c.clusters), c);
  const first = group[0];
  const label = `destination ${first.vip}:${first.port}/${first.protocol}`;
  if (distinct.size === 1) {
    if (group.every((c) => c.selectedBy)) {
      w.add(label, `served by a filter chain selected by ${first.selectedBy}, which the kernel cannot see at connect(); every connection goes to ${first.clusters.map((c) => c.name).join(', ')}`);
    }
    return first;
  }
  const plain = group.filter((c) => !c.selectedBy);
  const chosen = (plain.length ? plain : group)[0];
  w.add(
    label,
    `filter chains send it to different clusters (${[...distinct.values()]
      .map((c) => `${c.clusters.map((x) => x.name).join('+')} via ${c.via}${c.selectedBy ? ` [${c.selectedBy}]` : ''}`)
      .join('; ')}); the kernel cannot tell them apart, so all connections go to ${chosen.clusters.map((x) => x.name).join('+')}`,
  );
  return chosen;
}

interface Built {
  services: Service[];
  endpoints: Endpoint[];
  destinations: DestinationInfo[];
  /** `ip|port` → service, for policy destinations. */
  serviceAt: Map<string, string>;
}

function buildServices(candidates: Candidate[], clusters: Map<string, ClusterInfo>, w: Warnings): Built {
  const groups = new Map<string, Candidate[]>();
  for (const c of candidates) {
    const k = `${c.vip}|${c.port}|${c.protocol}`;
    groups.set(k, [...(groups.get(k) ?? []), c]);
  }
  const services = new Map<string, { svc: Service; vipsByPort: Map<string, Set<string>> }>();
  const endpoints: Endpoint[] = [];
  const destinations: DestinationInfo[] = [];
  const serviceAt = new Map<string, string>();
  /** `service|port` → the cluster set whose endpoints serve it. */
  const assigned = new Map<string, string>();
  const usedClusters = new Set<string>();

  const served = new Set<string>(); // `service|port` with at least one endpoint
  const emit = (ref: string, port: number, backends: Backend[]): void => {
    if (backends.length) served.add(`${ref}|${port}`);
    for (const b of backends) {
      endpoints.push({
        service: ref,
        address: b.address,
        servicePort: port,
        port: b.port,
        weight: b.weight,
        healthy: b.healthy,
        ...(b.locality ? { locality: { ...b.locality } } : {}),
        ...(b.priority ? { priority: b.priority } : {}),
        ...(b.workload ? { workload: b.workload } : {}),
      });
    }
  };

  for (const group of groups.values()) {
    const c = pick(group, w);
    const label = `destination ${c.vip}:${c.port}/${c.protocol} (${c.via})`;
    const parts = c.clusters.map((x) => ({ ...x, info: clusters.get(x.name) }));
    const primary = parts.reduce((a, b) => (b.weight > a.weight ? b : a), parts[0]);
    if (!primary) continue;
    if (primary.info?.skipped) {
      w.add(label, `goes to cluster ${primary.name}, which is skipped (${primary.info.skipped.split(':')[0]}); not translated`);
      continue;
    }
    const kept = parts.filter((p) => {
      if (p.info?.skipped) w.add(label, `weighted cluster ${p.name} is skipped (${p.info.skipped.split(':')[0]}); its share goes to the others`);
      return !p.info?.skipped;
    });
    const id = serviceOfCluster(primary.name, primary.info?.json);
    const ref = serviceRef(id);
    let entry = services.get(ref);
    if (!entry) {
      entry = { svc: { namespace: id.namespace, name: id.name, vips: [], ports: [] }, vipsByPort: new Map() };
      services.set(ref, entry);
    }
    if (!entry.svc.vips.includes(c.vip)) entry.svc.vips.push(c.vip);
    const pk = `${c.port}/${c.protocol}`;
    if (!entry.svc.ports.some((p) => p.port === c.port && p.protocol === c.protocol)) {
      const sp: ServicePort = { port: c.port, protocol: c.protocol };
      entry.svc.ports.push(sp);
    }
    entry.vipsByPort.set(pk, (entry.vipsByPort.get(pk) ?? new Set()).add(c.vip));
    serviceAt.set(`${c.vip}|${c.port}`, ref);
    destinations.push({ vip: c.vip, port: c.port, protocol: c.protocol, service: ref, clusters: kept.map((p) => ({ name: p.name, weight: p.weight })), via: c.via });

    const key = `${ref}|${c.port}`;
    const sig = clusterKey(kept);
    if (assigned.has(key)) {
      if (assigned.get(key) !== sig) {
        w.add(label, `service ${ref} port ${c.port} is already served by ${assigned.get(key)}; the model has one backend set per service port, so this VIP gets those backends, not ${sig}`);
      }
      continue;
    }
    assigned.set(key, sig);
    kept.forEach((p) => usedClusters.add(p.name));
    for (const p of kept) {
      if (!p.info) w.add(label, `cluster ${p.name} is not known (no cluster and no endpoints); it adds no backends`);
      else if (!p.info.backends) w.add(label, `EDS cluster ${p.name} has no ClusterLoadAssignment; it adds no backends`);
    }
    const withBackends = kept.filter((p) => p.info?.backends);
    if (withBackends.length === 1 && kept.length === 1) emit(ref, c.port, withBackends[0].info!.backends!);
    else if (withBackends.length) emit(ref, c.port, mergeWeighted(withBackends.map((p) => ({ weight: p.weight, backends: p.info!.backends! })), label, w));
    if (!served.has(key)) {
      w.add(label, `service ${ref} port ${c.port} has no backends: connections to it are refused`);
    }
  }

  // Istio service clusters no listener reaches: their endpoints, ready for a VIP from elsewhere.
  for (const info of clusters.values()) {
    if (info.skipped || !info.backends?.length || usedClusters.has(info.name)) continue;
    const id = serviceOfCluster(info.name, info.json);
    const isService = ((id.direction === 'outbound' && !id.subset) || id.direction === 'inbound-vip') && id.from !== 'fallback' && id.port;
    if (isService) {
      const key = `${serviceRef(id)}|${id.port}`;
      if (!assigned.has(key)) {
        assigned.set(key, info.name);
        emit(serviceRef(id), id.port!, info.backends);
      }
    } else if (!id.subset) {
      const label = info.implicit ? `ClusterLoadAssignment ${info.name}` : `cluster ${info.name}`;
      w.add(label, `not reached from any listener and not an Istio service cluster (outbound|PORT||HOST); its ${info.backends.length} endpoint(s) are not in the model`);
    }
  }

  for (const { svc, vipsByPort } of services.values()) {
    const sets = [...vipsByPort.values()].map((s) => [...s].sort().join(','));
    if (new Set(sets).size > 1) {
      w.add(`service ${serviceRef(svc)}`, `its ports have different VIPs (${[...vipsByPort].map(([p, s]) => `${p}: ${[...s].join(' ')}`).join('; ')}); the model serves every port on every VIP`);
    }
  }
  return { services: [...services.values()].map((s) => s.svc), endpoints, destinations, serviceAt };
}

function buildPolicies(inputs: PolicyInput[], serviceAt: Map<string, string>, w: Warnings): { l4: L4Policy[]; l7: L7Policy[] } {
  const l4: L4Policy[] = [];
  const l4Keys = new Set<string>();
  const l7 = new Map<string, L7Policy>();
  for (const p of inputs) {
    const dests = p.dests.map((d) => {
      const svc = d.ip !== undefined ? serviceAt.get(`${d.ip}|${d.port}`) : undefined;
      return { ...d, ...(svc ? { service: svc } : {}) };
    });
    const r = splitRbacFilters(dests, p.filters, p.opts);
    for (const x of r.warnings) w.add(`${p.via}: ${x.resource}`, x.reason);
    if (r.rejected) continue;
    for (const pol of r.l4) {
      const k = stableJson(pol);
      if (l4Keys.has(k)) continue;
      l4Keys.add(k);
      l4.push(pol);
    }
    for (const pol of r.l7) {
      const k = `${pol.destination.ip ?? '*'}|${pol.destination.port}`;
      const prev = l7.get(k);
      if (!prev) l7.set(k, pol);
      else if (stableJson(prev.filters) !== stableJson(pol.filters)) {
        w.add(p.via, `destination ${pol.destination.ip ?? '*'}:${pol.destination.port} already has different L7 RBAC filters from another chain; those are kept`);
      }
    }
  }
  return { l4, l7: [...l7.values()] };
}

// --- admin config dump ------------------------------------------------------------------------

/**
 * Translate an Envoy admin ConfigDump (`/config_dump`: `{configs: [BootstrapConfigDump,
 * ClustersConfigDump, ListenersConfigDump, RoutesConfigDump, EndpointsConfigDump, ...]}`) or one of
 * its per-type dumps on its own (e.g. a bare EndpointsConfigDump). Active resources are used;
 * warming ones only when there is no active one of that name (with a warning); draining listeners
 * are ignored; listeners in error state are reported.
 */
export function translateConfigDump(json: unknown): TranslateResult {
  const w = new Warnings();
  const res: Required<EnvoyResources> = { clusters: [], endpoints: [], listeners: [], routes: [] };
  const configs = Array.isArray(field(json, 'configs')) ? arr(json, 'configs') : isObj(json) && typeof json['@type'] === 'string' ? [json] : undefined;
  if (!configs) {
    return { model: emptyPolicyModel(), warnings: [{ resource: 'config dump', reason: 'not an Envoy admin ConfigDump (no "configs" list and no "@type")' }] };
  }
  for (const c of configs) {
    const t = shortType(isObj(c) ? c['@type'] : undefined);
    switch (t) {
      case 'envoy.admin.v3.ClustersConfigDump': {
        const active = [...arr(c, 'staticClusters'), ...arr(c, 'dynamicActiveClusters')].map((e) => field(e, 'cluster'));
        res.clusters.push(...active);
        const names = new Set(active.map((x) => str(x, 'name')));
        for (const e of arr(c, 'dynamicWarmingClusters')) {
          const x = field(e, 'cluster');
          if (names.has(str(x, 'name'))) continue;
          w.add(`cluster ${str(x, 'name') ?? '?'}`, 'is warming (not yet active in Envoy); its pending version is used');
          res.clusters.push(x);
        }
        break;
      }
      case 'envoy.admin.v3.ListenersConfigDump': {
        arr(c, 'staticListeners').forEach((e, i) => {
          const l = field(e, 'listener');
          if (isObj(l) && !str(l, 'name')) {
            const sa = obj(obj(l, 'address'), 'socketAddress');
            res.listeners.push({ ...l, name: sa ? `static ${str(sa, 'address')}:${field(sa, 'portValue')}` : `static #${i}` });
          } else res.listeners.push(l);
        });
        for (const e of arr(c, 'dynamicListeners')) {
          const name = str(e, 'name') ?? '?';
          const active = field(obj(e, 'activeState'), 'listener');
          const warming = field(obj(e, 'warmingState'), 'listener');
          const err = obj(e, 'errorState');
          if (err) w.add(`listener ${name}`, `Envoy rejected its last update: ${str(err, 'details') ?? '(no details)'}`);
          const named = (l: unknown) => (isObj(l) && !str(l, 'name') && name !== '?' ? { ...l, name } : l);
          if (active) res.listeners.push(named(active));
          else if (warming) {
            w.add(`listener ${name}`, 'is warming (not yet active in Envoy); its pending version is used');
            res.listeners.push(named(warming));
          }
        }
        break;
      }
      case 'envoy.admin.v3.RoutesConfigDump':
        for (const e of [...arr(c, 'staticRouteConfigs'), ...arr(c, 'dynamicRouteConfigs')]) res.routes.push(field(e, 'routeConfig'));
        break;
      case 'envoy.admin.v3.EndpointsConfigDump':
        for (const e of [...arr(c, 'staticEndpointConfigs'), ...arr(c, 'dynamicEndpointConfigs')]) res.endpoints.push(field(e, 'endpointConfig'));
        break;
      case 'envoy.admin.v3.ScopedRoutesConfigDump':
        if ([...arr(c, 'inlineScopedRouteConfigs'), ...arr(c, 'dynamicScopedRouteConfigs')].length) {
          w.add('scoped routes', 'scoped route configurations (SRDS) are not translated');
        }
        break;
      default:
        break; // bootstrap (its static resources are repeated in the per-type dumps), secrets, ...
    }
  }
  const r = translateEnvoy(res);
  return { ...r, warnings: [...w.list, ...r.warnings] };
}
