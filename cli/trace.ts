// `sockmesh trace --from POD_IP --to VIP:PORT [--proto tcp|udp]`: what the datapath will do with
// such a connection, worked out from the kernel maps the way the programs do it:
//   connect4/6 (bpf/sock_lb.c):  sm_services lookup -> no entry: not translated; 0 slots:
//                                ECONNREFUSED; else a uniformly random slot of the current
//                                generation (so a backend's share is its slots / slot count);
//                                SM_SVC_F_L7 + a proxy of the family in sm_config: TCP steered to
//                                the proxy (unless the caller is in the proxy's cgroup); no proxy
//                                of the family: ECONNREFUSED (fail closed);
//   sockops (bpf/sock_redir.c):  TCP with both ends in sm_local_eps -> sockhash -> redirected;
//   L4 policy (bpf/include/policy.h): policyDecision() below.
// It reads, never writes, and cannot know which cgroup the client runs in: it assumes a client in
// the meshed cgroup that is not the L7 proxy.
import { parseArgs } from 'node:util';
import {
  Backend,
  backend as backendCodec,
  cgroupId,
  l7ReadyValue,
  IPPROTO_TCP,
  IPPROTO_UDP,
  ipKey,
  localEp,
  policyDst,
  policyKey,
  policyValue,
  slotKey,
  svcKey,
  svcValue,
  EP_F_PROXY,
  IDENTITY_L7_PORTS,
  IDENTITY_UNRESOLVED,
  PDST_F_L7,
  VERDICT_ALLOW,
  VERDICT_DENY,
  VERDICT_L7,
} from '../abi/codecs';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { DEFAULT_BPFFS_DIR } from '../abi/pins';
import { TypedMap } from '../mesh-agent/datapath/maps';
import { SVC_F_L7 } from '../mesh-agent/datapath/reconciler';
import { canonicalIp, familyOf } from '../core/ip';
import { aggregateSlots, hostPort, policyMaps, protoName, readLocalEps, svcFlagNames } from './dump';

export interface TraceQuery {
  from: string;
  to: { ip: string; port: number };
  proto: 'tcp' | 'udp';
}

export interface PolicyDecision {
  verdict: 'allow' | 'deny' | 'not_evaluated';
  reason: string;
  /** The rule that decided (sm_policy_value.rule; 0: no policy matched), when evaluated. */
  rule?: number;
  /** Where the kernel refuses: at connect() (EACCES) or the destination pod's ingress (SYN dropped). */
  stage?: 'connect' | 'ingress';
}

/** sm_policy_verdict() of bpf/include/policy.h: most specific row first; a set without rows denies. */
function verdictFor(dp: Datapath, dst: { ip: string; port: number }, identity: number): { verdict: number; rule: number } | 'no_policy' {
  const pd = new TypedMap(dp.maps.sm_policy_dst, ipKey, policyDst).get({ ip: dst.ip });
  if (!pd) return 'no_policy';
  const pol = new TypedMap(dp.maps.sm_policy, policyKey, policyValue);
  for (const [id, port] of [
    [identity, dst.port],
    [identity, 0],
    [0, dst.port],
    [0, 0],
  ]) {
    const v = pol.get({ set: pd.set, identity: id, port });
    if (v) return v;
  }
  return { verdict: VERDICT_DENY, rule: 0 };
}

/**
 * THE HOOK for L4 policy: the kernel's verdict for a connection from `sourceIp` to `dst` (the
 * chosen backend, or the destination itself when it is not a service), as the programs reach it:
 *  - at connect()/sendmsg() (bpf/sock_lb.c), for the caller's identity, which the kernel takes from
 *    the caller's cgroup (sm_cgroup_identity). trace only knows the source IP: it takes the IP's
 *    identity, and says so when no pod cgroup of this node carries that identity (the kernel then
 *    sees SM_IDENTITY_UNRESOLVED);
 *  - for TCP to a local pod, again at its ingress on the SYN (bpf/skb_policy.c), for the identity
 *    of the source IP (sm_ip_identity).
 */
export function policyDecision(
  dp: Datapath,
  q: { sourceIp: string; dst: { ip: string; port: number }; proto: number; dstLocal: boolean },
): PolicyDecision {
  if (!policyMaps(dp).length || !dp.maps.sm_policy_dst || !dp.maps.sm_policy) {
    return { verdict: 'not_evaluated', reason: 'not evaluated: no L4 policy in this datapath' };
  }
  const ipIds = new TypedMap(dp.maps.sm_ip_identity, ipKey, localEp);
  const ipIdentity = ipIds.get({ ip: q.sourceIp })?.identity ?? 0;
  // The kernel names a caller by its pod cgroup, else by its network namespace (sm_netns_identity).
  const cgroupIdentities = new Set(
    [dp.maps.sm_cgroup_identity, dp.maps.sm_netns_identity].flatMap((m) => (m ? new TypedMap(m, cgroupId, localEp).entries().map(([, v]) => v.identity) : [])),
  );
  // A caller whose pod cgroup is not mapped is SM_IDENTITY_UNRESOLVED at connect() (fail closed).
  const connectIdentity = ipIdentity && cgroupIdentities.has(ipIdentity) ? ipIdentity : IDENTITY_UNRESOLVED;
  const idNote =
    connectIdentity === ipIdentity
      ? `identity ${ipIdentity}`
      : `unresolved identity: no pod cgroup or network namespace on this node carries the source's identity ${ipIdentity || '(none)'}; judged fail closed`;
  const pd = new TypedMap(dp.maps.sm_policy_dst, ipKey, policyDst).get({ ip: q.dst.ip });
  if (pd && ((pd.flags ?? 0) & PDST_F_L7)) {
    const marker = new TypedMap(dp.maps.sm_policy, policyKey, policyValue).get({ set: pd.set, identity: IDENTITY_L7_PORTS, port: q.dst.port });
    if (marker?.verdict === VERDICT_L7) {
      // sm_l7_port(): only the L7 proxy may open this port, and it is not judged again there.
      if ((ipIds.get({ ip: q.sourceIp })?.flags ?? 0) & EP_F_PROXY) {
        return { verdict: 'allow', rule: 0, reason: 'allowed: the port has HTTP rules and the source is an L7 proxy (SM_EP_F_PROXY; it judged its client at the client\'s connect)' };
      }
      return {
        verdict: 'deny',
        rule: 0,
        stage: 'connect',
        reason: "the port has HTTP rules: only the L7 proxy may connect to it; a meshed client's connect is steered to the proxy (judged there, after the L4 policy at connect), a SYN from anywhere else is dropped at the pod",
      };
    }
  }
  const out = verdictFor(dp, q.dst, connectIdentity);
  if (out === 'no_policy') return { verdict: 'allow', reason: 'allowed: the destination has no L4 policy', rule: 0 };
  const rule = (r: number) => (r ? `rule ${r}` : 'no policy matched');
  if (out.verdict !== VERDICT_ALLOW) {
    return { verdict: 'deny', rule: out.rule, stage: 'connect', reason: `denied at connect() with EACCES (${idNote}, ${rule(out.rule)})` };
  }
  if (q.proto === IPPROTO_TCP && q.dstLocal) {
    const inb = verdictFor(dp, q.dst, ipIdentity);
    if (inb !== 'no_policy' && inb.verdict !== VERDICT_ALLOW) {
      return { verdict: 'deny', rule: inb.rule, stage: 'ingress', reason: `SYN dropped at the destination pod's ingress (source IP identity ${ipIdentity}, ${rule(inb.rule)})` };
    }
  }
  return { verdict: 'allow', rule: out.rule, reason: `allowed (${idNote}, ${rule(out.rule)})` };
}

export interface TraceBackend {
  ip: string;
  port: number;
  slots: number;
  share: number;
  localPod: boolean;
  identity: number | null;
  /** Same-node redirect (sockhash + sk_msg) of the client <-> backend connection. */
  redirected: boolean;
  path: string;
  policy: PolicyDecision;
}

export type TraceOutcome =
  | 'not_a_service'
  | 'translated'
  | 'steered_to_l7_proxy'
  | 'refused_no_l7_proxy'
  | 'refused_policy'
  | 'refused_no_backend'
  | 'refused_family';

export interface TraceResult {
  query: { from: string; to: string; proto: string };
  source: { ip: string; localPod: boolean; identity: number | null; note: string };
  service: { vip: string; port: number; proto: string; svcId: number; gen: number; slotCount: number; flags: string[] } | null;
  outcome: TraceOutcome;
  summary: string;
  backends: TraceBackend[];
  l7: {
    serviceHasL7: boolean;
    proxy: string | null;
    steered: boolean;
    reason: string;
    /** When steered: the client's L4 verdict against the service (all its backends), at connect(). */
    clientPolicy?: PolicyDecision;
  };
  /** For a destination that is not a service (each backend has its own otherwise). */
  policy: PolicyDecision | null;
  /** Redirect decision for a destination that is not a service. */
  direct: { localPod: boolean; redirected: boolean; path: string } | null;
  notes: string[];
}

/** Canonical text of an address; ::ffff:a.b.c.d becomes a.b.c.d, as the kernel treats it (core/ip.ts). */
function canonical(ip: string): string {
  const c = canonicalIp(ip, { zone: true });
  if (c === undefined) throw new Error(`${JSON.stringify(ip)} is not an IP address`);
  return c;
}

export function parseTarget(s: string): { ip: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s);
  if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) throw new Error(`--to ${JSON.stringify(s)}: expected IP:PORT or [IPv6]:PORT`);
  return { ip: canonical(m[1] ?? m[2]), port: Number(m[3]) };
}

function redirectOf(
  proto: number,
  fromLocal: boolean,
  peerLocal: boolean,
  sameFamily: boolean,
  peerWhat: string,
): { redirected: boolean; path: string } {
  if (proto !== IPPROTO_TCP) return { redirected: false, path: 'UDP: not redirected (sockops/sk_msg are TCP only)' };
  if (!sameFamily) return { redirected: false, path: 'normal TCP path (address families differ)' };
  if (fromLocal && peerLocal) return { redirected: true, path: 'same-node redirect (sockhash + sk_msg)' };
  const why = !fromLocal && !peerLocal ? 'neither end is' : fromLocal ? `${peerWhat} is not` : 'the source is not';
  return { redirected: false, path: `normal TCP path (${why} a local meshed pod)` };
}

/** Is ip:port (TCP) in sm_l7_ready, i.e. has the proxy acknowledged its rules? */
function l7Acknowledged(dp: Datapath, ip: string, port: number): boolean {
  const m = dp.maps.sm_l7_ready;
  return !!m && new TypedMap(m, svcKey, l7ReadyValue).get({ ip, port, proto: IPPROTO_TCP }) !== null;
}

export function trace(dp: Datapath, q: TraceQuery): TraceResult {
  const from = canonical(q.from);
  const to = { ip: canonical(q.to.ip), port: q.to.port };
  const proto = q.proto === 'udp' ? IPPROTO_UDP : IPPROTO_TCP;
  const locals = readLocalEps(dp);
  const src = locals.get(from);
  const identity = src ? src.identity : null;
  const notes: string[] = [];
  const res: TraceResult = {
    query: { from, to: hostPort(to.ip, to.port), proto: protoName(proto) },
    source: {
      ip: from,
      localPod: !!src,
      identity,
      note: src
        ? `local meshed pod, identity ${src.identity || '0 (unknown)'}`
        : 'not a local meshed pod: translated if it runs in the meshed cgroup, never redirected, identity unknown (0)',
    },
    service: null,
    outcome: 'not_a_service',
    summary: '',
    backends: [],
    l7: { serviceHasL7: false, proxy: null, steered: false, reason: '' },
    policy: null,
    direct: null,
    notes,
  };
  const fam = familyOf(to.ip);
  if (familyOf(from) !== fam) notes.push(`the source is IPv${fam === 2 ? 6 : 4} and the destination IPv${fam === 2 ? 4 : 6}: such a socket cannot connect`);

  const svc = new TypedMap(dp.maps.sm_services, svcKey, svcValue).get({ ip: to.ip, port: to.port, proto });
  if (!svc) {
    const peer = locals.get(to.ip);
    const r = redirectOf(proto, !!src, !!peer, familyOf(from) === fam, 'the destination');
    res.direct = { localPod: !!peer, ...r };
    res.policy = policyDecision(dp, { sourceIp: from, dst: to, proto, dstLocal: !!peer });
    res.l7.reason = 'not a service: never steered';
    res.summary =
      `${res.query.to}/${res.query.proto} is not a service VIP: the connection goes to it unchanged (not translated); ${r.path}` +
      (res.policy.verdict === 'deny' ? `; L4 policy: ${res.policy.reason}` : '');
    return res;
  }
  res.service = {
    vip: to.ip,
    port: to.port,
    proto: protoName(proto),
    svcId: svc.svcId,
    gen: svc.gen,
    slotCount: svc.slotCount,
    flags: svcFlagNames(svc.flags),
  };
  if (svc.slotCount === 0) {
    res.outcome = 'refused_no_backend';
    res.l7.reason = 'refused before any steering';
    res.summary = `service ${res.query.to}/${res.query.proto} has no usable backend: ${proto === IPPROTO_TCP ? 'connect()' : 'sendmsg()/connect()'} fails at once with ECONNREFUSED (counter connect_no_backend)`;
    return res;
  }

  // The current generation's slots, read by key (not the whole table).
  const slotsMap = new TypedMap(dp.maps.sm_backends, slotKey, backendCodec);
  const slots = new Map<number, Backend>();
  for (let i = 0; i < svc.slotCount; i++) {
    const b = slotsMap.get({ svcId: svc.svcId, gen: svc.gen, slot: i });
    if (b) slots.set(i, b);
  }
  const { backends, missing } = aggregateSlots(slots, svc.slotCount);
  if (missing) notes.push(`${missing} of ${svc.slotCount} slots are missing from sm_backends: a connect picking one fails (map_errors)`);

  // L7 steering: SM_SVC_F_L7, TCP, and a proxy address of the VIP's family in sm_config.
  const hasL7 = (svc.flags & SVC_F_L7) !== 0;
  const proxyCfg = dp.proxyConfig();
  const proxyIp = proxyCfg ? (fam === 2 ? proxyCfg.proxy4 : proxyCfg.proxy6) : undefined;
  res.l7.serviceHasL7 = hasL7;
  res.l7.proxy = proxyIp && proxyCfg ? hostPort(proxyIp, proxyCfg.proxyPort) : null;
  if (!hasL7) res.l7.reason = 'the service has no HTTP rules (no SM_SVC_F_L7): not steered';
  else if (proto !== IPPROTO_TCP) res.l7.reason = 'SM_SVC_F_L7, but only TCP is steered';
  else if (!proxyIp) {
    res.l7.reason = `SM_SVC_F_L7, but no IPv${fam === 2 ? 4 : 6} L7 proxy is configured in sm_config: refused (fail closed; the HTTP rules could not be applied)`;
  } else if (!l7Acknowledged(dp, to.ip, to.port)) {
    res.l7.reason = `SM_SVC_F_L7, but the L7 proxy has not acknowledged this destination's rules (not in sm_l7_ready): refused (fail closed) until it does`;
  } else {
    res.l7.steered = true;
    res.l7.reason = `SM_SVC_F_L7: steered to the L7 proxy ${res.l7.proxy}, which applies the HTTP rules and connects to a backend below (connects from the proxy's own cgroup are not steered)`;
    // sm_steer_to_proxy(): the client is judged first, against the VIP's own set (the agent writes
    // there the conjunction of every backend's L4 policy).
    res.l7.clientPolicy = policyDecision(dp, { sourceIp: from, dst: { ip: to.ip, port: to.port }, proto, dstLocal: false });
  }

  const sameFam = familyOf(from) === fam;
  res.backends = backends.map((b) => {
    const peer = locals.get(b.ip);
    const r = redirectOf(proto, !!src, !!peer, sameFam, 'the backend');
    return {
      ...b,
      localPod: !!peer,
      identity: peer ? peer.identity : null,
      // When steered, the client's connection ends at the proxy; the proxy's own connection to the
      // backend is translated like any other (and redirected only if the proxy is a local pod).
      redirected: res.l7.steered ? false : r.redirected,
      path: res.l7.steered ? 'via the L7 proxy' : r.path,
      policy: res.l7.steered
        ? { verdict: 'not_evaluated' as const, reason: "steered: the client was judged at its connect (l7.clientPolicy); the proxy's own connect to this backend is let through (SM_EP_F_PROXY)" }
        : policyDecision(dp, { sourceIp: from, dst: { ip: b.ip, port: b.port }, proto, dstLocal: !!peer }),
    };
  });
  if (hasL7 && proto === IPPROTO_TCP && !proxyIp) {
    res.outcome = 'refused_no_l7_proxy';
    res.summary = `service ${res.query.to}/${res.query.proto} (svc id ${svc.svcId}) has HTTP rules but no IPv${fam === 2 ? 4 : 6} L7 proxy is configured: connect() fails with ECONNREFUSED (connect_no_backend), never reaching a backend unjudged`;
  } else if (hasL7 && proto === IPPROTO_TCP && !res.l7.steered) {
    res.outcome = 'refused_no_l7_proxy';
    res.summary = `service ${res.query.to}/${res.query.proto} (svc id ${svc.svcId}) has HTTP rules the L7 proxy has not acknowledged yet: connect() fails with ECONNREFUSED (connect_no_backend) until it does`;
  } else if (res.l7.steered && res.l7.clientPolicy?.verdict === 'deny') {
    res.outcome = 'refused_policy';
    res.summary = `service ${res.query.to}/${res.query.proto} (svc id ${svc.svcId}) has HTTP rules, and the service's L4 policy refuses this client: ${res.l7.clientPolicy.reason}`;
  } else if (res.l7.steered) {
    res.outcome = 'steered_to_l7_proxy';
    const p = locals.get(proxyIp!);
    const r = redirectOf(proto, !!src, !!p, true, 'the proxy');
    res.summary = `service ${res.query.to}/${res.query.proto} (svc id ${svc.svcId}) has HTTP rules: connect() goes to the L7 proxy ${res.l7.proxy} (client side: ${r.path}); the proxy then reaches one of ${backends.length} backend(s)`;
  } else {
    res.outcome = 'translated';
    const redirected = res.backends.filter((b) => b.redirected).length;
    res.summary =
      `service ${res.query.to}/${res.query.proto} (svc id ${svc.svcId}): connect() is translated to one of ${backends.length} backend(s), ` +
      `getpeername() shows the VIP; ${redirected} of them ${redirected === 1 ? 'is' : 'are'} redirected on this node`;
    const denied = res.backends.filter((b) => b.policy.verdict === 'deny');
    if (denied.length) {
      const share = denied.reduce((x, b) => x + b.share, 0);
      res.summary += `; L4 policy denies ${denied.length} of them: ${(share * 100).toFixed(1)}% of connects fail (EACCES at connect, or the SYN is dropped)`;
    }
  }
  return res;
}

export function formatTrace(r: TraceResult): string {
  const out: string[] = [`trace ${r.query.proto} ${r.query.from} -> ${r.query.to}`, ''];
  out.push(`source    ${r.source.ip}: ${r.source.note}`);
  if (!r.service) {
    out.push(`service   none: ${r.query.to}/${r.query.proto} is not in sm_services`);
    out.push(`path      ${r.direct!.path}`);
    out.push(`policy    ${r.policy!.reason}`);
  } else {
    const s = r.service;
    out.push(`service   ${hostPort(s.vip, s.port)}/${s.proto}: svc id ${s.svcId}, generation ${s.gen}, ${s.slotCount} slots, flags ${s.flags.join(',') || '-'}`);
    out.push(`L7        ${r.l7.reason}`);
    if (r.l7.clientPolicy) out.push(`L4        client: ${r.l7.clientPolicy.reason}`);
    if (r.backends.length) {
      out.push('backends');
      const rows = [['  BACKEND', 'SHARE', 'LOCAL POD', 'IDENTITY', 'PATH', 'L4 POLICY']];
      for (const b of r.backends) {
        rows.push([
          `  ${hostPort(b.ip, b.port)}`,
          `${(b.share * 100).toFixed(1)}%`,
          b.localPod ? 'yes' : 'no',
          b.identity === null ? '-' : String(b.identity),
          b.path,
          b.policy.reason,
        ]);
      }
      const widths = rows[0].map((_, i) => Math.max(...rows.map((x) => x[i].length)));
      for (const row of rows) out.push(row.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd());
    }
  }
  for (const n of r.notes) out.push(`note      ${n}`);
  out.push('', `=> ${r.summary}`);
  return out.join('\n');
}

export const TRACE_USAGE = 'usage: sockmesh trace --from POD_IP --to VIP:PORT [--proto tcp|udp] [--bpffs DIR] [--json]\n';

/** Runs `sockmesh trace ...`; returns the exit code. */
export function runTraceCli(args: string[], out: (s: string) => void = (s) => process.stdout.write(s)): number {
  const { values } = parseArgs({
    args,
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      proto: { type: 'string', default: 'tcp' },
      bpffs: { type: 'string', default: DEFAULT_BPFFS_DIR },
      json: { type: 'boolean', default: false },
    },
  });
  const proto = values.proto!.toLowerCase();
  if (!values.from || !values.to || (proto !== 'tcp' && proto !== 'udp')) {
    process.stderr.write(`trace: --from and --to are required; --proto is tcp or udp\n${TRACE_USAGE}`);
    return 2;
  }
  let q: TraceQuery;
  try {
    q = { from: canonical(values.from), to: parseTarget(values.to), proto };
  } catch (e) {
    process.stderr.write(`trace: ${(e as Error).message}\n${TRACE_USAGE}`);
    return 2;
  }
  const dp = Datapath.openPinned(values.bpffs);
  try {
    const r = trace(dp, q);
    out(values.json ? JSON.stringify(r, null, 2) + '\n' : formatTrace(r) + '\n');
    return 0;
  } finally {
    dp.close();
  }
}
