// kube-proxy-style iptables rules (iptables mode, nat table) for the service-scale scenario
// (bench/scale.ts): what kube-proxy writes for ClusterIP services, as `iptables-restore` input.
//
// The shape follows kube-proxy's pkg/proxy/iptables/proxier.go (1.28+), ClusterIP services only:
//
//   PREROUTING, OUTPUT -> KUBE-SERVICES   (installed once, outside the restore: ensureKubeJumps)
//   POSTROUTING        -> KUBE-POSTROUTING
//   KUBE-SERVICES      one rule per service port, in service order:
//                        -d VIP/32 -p tcp -m comment --comment "ns/name:port cluster IP" -m tcp --dport P -j KUBE-SVC-<hash>
//                      and, last, the KUBE-NODEPORTS jump (-m addrtype --dst-type LOCAL)
//   KUBE-SVC-<hash>    ! -s CLUSTER_CIDR ... -j KUBE-MARK-MASQ   (off-cluster clients get SNAT)
//                      one rule per endpoint, -m statistic --mode random --probability 1/(n-i)
//                      for all but the last, -j KUBE-SEP-<hash>
//   KUBE-SEP-<hash>    -s EP/32 -j KUBE-MARK-MASQ                (hairpin)
//                      -p tcp -m tcp -j DNAT --to-destination EP:PORT
//   KUBE-MARK-MASQ, KUBE-POSTROUTING: the 0x4000 mark and MASQUERADE --random-fully
//
// Chain names are kube-proxy's: "KUBE-SVC-" / "KUBE-SEP-" + the first 16 characters of the
// base32 (RFC 4648) of sha256 over the service port name + protocol (+ the endpoint, for SEP).
// Comments are kept: they are stored with every rule (xt_comment in legacy, rule userdata in
// nf_tables), so they are part of the ruleset's size and of the restore's work.
//
// Not generated (absent for the services used here, or O(1) per packet): the filter table's
// chains (KUBE-FORWARD, KUBE-SERVICES filter rules exist only for services without endpoints),
// NodePorts, external IPs, load-balancer and firewall chains, local-traffic-policy chains.
import { createHash } from 'node:crypto';

export interface KubeEndpoint {
  ip: string;
  port: number;
}

export interface KubeService {
  namespace: string;
  name: string;
  /** Service port name, as in the comment `ns/name:portName`. */
  portName: string;
  vip: string;
  port: number;
  endpoints: KubeEndpoint[];
}

export interface KubeProxyOptions {
  /** kube-proxy --cluster-cidr: traffic to a service from outside it is marked for SNAT. */
  clusterCidr: string;
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(buf: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1; // keep only the bits not yet emitted (no overflow past 32 bits)
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

function hash16(s: string): string {
  return base32(createHash('sha256').update(s).digest()).slice(0, 16);
}

/** `ns/name:port`, kube-proxy's ServicePortName.String(). */
export const servicePortName = (s: KubeService): string => `${s.namespace}/${s.name}:${s.portName}`;

/** kube-proxy's servicePortPolicyClusterChain: KUBE-SVC- + hash(portName + protocol). */
export const svcChain = (s: KubeService): string => `KUBE-SVC-${hash16(servicePortName(s) + 'tcp')}`;

/** kube-proxy's servicePortEndpointChainName: KUBE-SEP- + hash(portName + protocol + endpoint). */
export const sepChain = (s: KubeService, ep: KubeEndpoint): string =>
  `KUBE-SEP-${hash16(servicePortName(s) + 'tcp' + `${ep.ip}:${ep.port}`)}`;

/** Chains kube-proxy declares (and so flushes and rewrites) in every sync, full or partial. */
const TOP_CHAINS = ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ'];

function servicesRule(s: KubeService): string {
  return `-A KUBE-SERVICES -d ${s.vip}/32 -p tcp -m comment --comment "${servicePortName(s)} cluster IP" -m tcp --dport ${s.port} -j ${svcChain(s)}`;
}

/** The chain declarations and rules of one service's KUBE-SVC and KUBE-SEP chains. */
function serviceChains(s: KubeService, o: KubeProxyOptions): { chains: string[]; rules: string[] } {
  const name = servicePortName(s);
  const svc = svcChain(s);
  const chains = [`:${svc} - [0:0]`];
  const rules = [
    `-A ${svc} ! -s ${o.clusterCidr} -d ${s.vip}/32 -p tcp -m comment --comment "${name} cluster IP" -m tcp --dport ${s.port} -j KUBE-MARK-MASQ`,
  ];
  const n = s.endpoints.length;
  s.endpoints.forEach((ep, i) => {
    const sep = sepChain(s, ep);
    // Endpoint i of n is taken with probability 1/(n-i) among those left: uniform overall.
    const stat = i < n - 1 ? ` -m statistic --mode random --probability ${(1 / (n - i)).toFixed(10)}` : '';
    rules.push(`-A ${svc} -m comment --comment "${name} -> ${ep.ip}:${ep.port}"${stat} -j ${sep}`);
  });
  for (const ep of s.endpoints) {
    const sep = sepChain(s, ep);
    chains.push(`:${sep} - [0:0]`);
    rules.push(`-A ${sep} -s ${ep.ip}/32 -m comment --comment ${name} -j KUBE-MARK-MASQ`);
    rules.push(`-A ${sep} -p tcp -m comment --comment ${name} -m tcp -j DNAT --to-destination ${ep.ip}:${ep.port}`);
  }
  return { chains, rules };
}

function topRules(services: KubeService[]): string[] {
  return [
    ...services.map(servicesRule),
    '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
    '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000',
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
  ];
}

/**
 * kube-proxy's full sync: every chain declared (under --noflush a declaration flushes the chain),
 * every rule written, and `-X` for chains of the previous sync no longer in use (`stale`: kube-proxy
 * finds them with iptables-save before a full sync).
 */
export function fullSyncRestore(services: KubeService[], o: KubeProxyOptions, stale: string[] = []): string {
  const chains = TOP_CHAINS.map((c) => `:${c} - [0:0]`);
  const rules = topRules(services);
  for (const s of services) {
    const c = serviceChains(s, o);
    chains.push(...c.chains);
    rules.push(...c.rules);
  }
  const live = new Set(chains.map((l) => l.slice(1, l.indexOf(' '))));
  const dels = stale.filter((c) => !live.has(c)).map((c) => `-X ${c}`);
  return ['*nat', ...chains, ...rules, ...dels, 'COMMIT', ''].join('\n');
}

/**
 * kube-proxy's partial sync (MinimizeIPTablesRestore, default since 1.27/GA 1.28): the top chains
 * (KUBE-SERVICES with one rule per service, in full) plus the chains of the services that changed;
 * unchanged services' KUBE-SVC/KUBE-SEP chains are left alone, and chains no longer used are not
 * deleted (that waits for the next full sync).
 */
export function partialSyncRestore(services: KubeService[], changed: Set<number>, o: KubeProxyOptions): string {
  const chains = TOP_CHAINS.map((c) => `:${c} - [0:0]`);
  const rules = topRules(services);
  for (const i of [...changed].sort((a, b) => a - b)) {
    const c = serviceChains(services[i], o);
    chains.push(...c.chains);
    rules.push(...c.rules);
  }
  return ['*nat', ...chains, ...rules, 'COMMIT', ''].join('\n');
}

/** Rule and chain counts of restore text (lines starting with -A / :). */
export function restoreStats(text: string): { rules: number; chains: number; bytes: number } {
  let rules = 0;
  let chains = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('-A ')) rules++;
    else if (line.startsWith(':')) chains++;
  }
  return { rules, chains, bytes: Buffer.byteLength(text) };
}

/**
 * The jumps from the built-in chains, as kube-proxy installs them (iptables -N / -I, once, before
 * its first restore): argv lists for `iptables` (no binary name; the caller picks the backend).
 */
export function kubeJumpCommands(): string[][] {
  const jumps: Array<[string, string, string]> = [
    ['PREROUTING', 'KUBE-SERVICES', 'kubernetes service portals'],
    ['OUTPUT', 'KUBE-SERVICES', 'kubernetes service portals'],
    ['POSTROUTING', 'KUBE-POSTROUTING', 'kubernetes postrouting rules'],
  ];
  const cmds: string[][] = [];
  for (const c of new Set(jumps.map((j) => j[1]))) cmds.push(['-w', '-t', 'nat', '-N', c]);
  for (const [from, to, comment] of jumps) cmds.push(['-w', '-t', 'nat', '-I', from, '-m', 'comment', '--comment', comment, '-j', to]);
  return cmds;
}

/** Chains of a `iptables-save -t nat` dump whose names start with KUBE-SVC- / KUBE-SEP- . */
export function savedServiceChains(save: string): string[] {
  const out: string[] = [];
  for (const line of save.split('\n')) {
    const m = /^:(KUBE-(?:SVC|SEP)-\S+) /.exec(line);
    if (m) out.push(m[1]);
  }
  return out;
}
