// What the running kernel can do, asked of the kernel itself at start-up (native/ probes: each
// loads or creates a throwaway object and attaches nothing). The datapath is built from the
// answer: a feature it cannot do without stops the agent with SM_KERNEL_FEATURE naming it; a
// feature with a fallback is used where present and the fallback taken otherwise. The answers are
// logged by the agent and shown by `sockmesh status` (which probes the same kernel itself).
//
// Helper numbers are the kernel's stable UAPI enum bpf_func_id (test/features.test.ts checks them
// against linux/bpf.h). Versions are where mainline gained the feature; distributions backport,
// which is why nothing here is decided from the version number.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as bpf from '../../native';
import { UsageError } from '../../core/errors';

export interface Feature {
  /** Stable name, as logged and shown: `helper:sock_ops:get_netns_cookie`, `link:sk_msg`, ... */
  name: string;
  /** What it is, for an operator. */
  what: string;
  /** Where mainline Linux gained it, where we know it for sure. */
  since?: string;
  /** Whether the datapath cannot run without it. */
  required: boolean;
  /** What the datapath does without it (features that are not required). */
  fallback?: string;
  present: boolean;
  /** Set when the probe itself failed (then `present` is false). */
  error?: string;
  /** Turned off by SOCKMESH_FEATURES_OFF (then `present` is false whatever the kernel has). */
  off?: true;
}

export interface KernelFeatures {
  /** uname -r */
  kernel: string;
  features: Feature[];
  /** Set when this process may not load BPF at all: then no answer says anything about the kernel. */
  denied?: string;
}

/** enum bpf_func_id (include/uapi/linux/bpf.h): only the helpers we use or probe for. */
export const HELPER_IDS = {
  map_lookup_elem: 1,
  map_update_elem: 2,
  get_prandom_u32: 7,
  skb_load_bytes: 26,
  get_socket_cookie: 46,
  sock_ops_cb_flags_set: 59,
  load_hdr_opt: 142,
  sock_hash_update: 70,
  msg_redirect_hash: 71,
  get_current_cgroup_id: 80,
  spin_lock: 93,
  sk_fullsock: 95,
  sk_storage_get: 107,
  get_netns_cookie: 122,
  get_current_ancestor_cgroup_id: 123,
  ringbuf_output: 130,
  set_retval: 187,
} as const;

type Helper = keyof typeof HELPER_IDS;
type ProgKind = 'cgroup_sock_addr' | 'cgroup_sock' | 'sock_ops' | 'sk_msg' | 'cgroup_skb' | 'sk_lookup' | 'xdp';

interface Spec {
  name: string;
  what: string;
  since?: string;
  required: boolean;
  fallback?: string;
  probe: () => boolean;
}

const C = () => bpf.consts;
const constant = (name: string): number => {
  const v = (bpf.consts as Readonly<Record<string, number>>)[name];
  if (v === undefined) throw new Error(`${name} is not known to this build's linux/bpf.h`);
  return v;
};

function progType(k: ProgKind): number {
  return constant(`BPF_PROG_TYPE_${k.toUpperCase()}`);
}

/** Program types whose loads need an expected attach type. */
function expectedAttach(k: ProgKind): number | undefined {
  if (k === 'cgroup_sock_addr') return C().BPF_CGROUP_INET4_CONNECT;
  if (k === 'cgroup_sock') return C().BPF_CGROUP_INET_SOCK_CREATE;
  if (k === 'sk_lookup') return C().BPF_SK_LOOKUP;
  return undefined;
}

const prog = (k: ProgKind, what: string, since: string | undefined, required: boolean, fallback?: string): Spec => ({
  name: `prog:${k}`,
  what,
  ...(since ? { since } : {}),
  required,
  ...(fallback ? { fallback } : {}),
  probe: () => bpf.probeProgType(progType(k)),
});

const map = (t: string, what: string, since: string | undefined, required: boolean, fallback?: string): Spec => ({
  name: `map:${t.toLowerCase()}`,
  what,
  ...(since ? { since } : {}),
  required,
  ...(fallback ? { fallback } : {}),
  probe: () => bpf.probeMapType(constant(`BPF_MAP_TYPE_${t}`)),
});

const helper = (k: ProgKind, h: Helper, what: string, since: string | undefined, required: boolean, fallback?: string): Spec => ({
  name: `helper:${k}:${h}`,
  what,
  ...(since ? { since } : {}),
  required,
  ...(fallback ? { fallback } : {}),
  probe: () => bpf.probeHelper(progType(k), HELPER_IDS[h], expectedAttach(k)),
});

/** Everything the datapath uses today (required) or will use where the kernel has it (with a fallback). */
const SPECS: Spec[] = [
  prog('cgroup_sock_addr', 'connect/sendmsg/recvmsg/getpeername hooks: VIP translation', '4.17 (getpeername 5.8)', true),
  prog('sock_ops', 'socket events: same-node pairs into the sockhash, steering records', '4.13', true),
  prog('sk_msg', 'socket-to-socket redirection between same-node pods', '4.17', true),
  prog('cgroup_skb', 'inbound policy: TCP SYNs, UDP datagrams, ports with HTTP rules', '4.10', true),
  prog('cgroup_sock', 'socket creation: raw sockets and transports no hook judges refused in the mesh', '4.10', true),
  map('SOCKHASH', 'the same-node socket table', '4.18', true),
  map('SK_STORAGE', 'per-socket state (sm_sock_state)', '5.2', true),
  map('ARRAY_OF_MAPS', 'the RCU grace-period write (sm_rcu_sync)', '4.12', true),
  map('HASH_OF_MAPS', 'one reverse-translation table per pod (sm_revnat_pods)', '4.12', true),
  map('LRU_HASH', 'reverse translation and steering records', '4.10', true),
  map('PERCPU_ARRAY', 'datapath counters', '4.6', true),
  helper('cgroup_sock_addr', 'set_retval', 'ECONNREFUSED/EACCES from connect() instead of EPERM', '5.18', true),
  helper('cgroup_sock_addr', 'get_socket_cookie', 'reverse translation keyed by socket', undefined, true),
  helper('cgroup_sock_addr', 'sk_storage_get', 'per-socket translation state at connect', undefined, true),
  helper('cgroup_sock_addr', 'get_current_ancestor_cgroup_id', "the caller's pod cgroup for identity", undefined, true),
  helper('cgroup_sock_addr', 'get_current_cgroup_id', "the caller's cgroup (the L7 proxy's own is not steered)", undefined, true),
  helper('cgroup_sock_addr', 'get_netns_cookie', "the caller's network namespace (identity without a Kubernetes source)", '5.7', true),
  helper('cgroup_sock_addr', 'spin_lock', 'consistent reads of a service entry being switched', '5.1', true),
  helper('sock_ops', 'sock_hash_update', 'adding established sockets to the sockhash', '4.18', true),
  helper('sock_ops', 'sk_storage_get', 'per-socket state at establishment', undefined, true),
  helper('sock_ops', 'get_netns_cookie', "the socket's network namespace in its sockhash key (no pod can pair with another's sockets)", '5.15', true),
  helper('sock_ops', 'sock_ops_cb_flags_set', "a steered socket's close (its sm_steer record is deleted)", '4.16', true),
  helper('sock_ops', 'load_hdr_opt', 'TCP Fast Open clients kept on TCP (the Fast Open option of their SYN-ACK)', '5.10', true),
  helper('sk_msg', 'msg_redirect_hash', 'the redirect itself', '4.18', true),
  helper('sk_msg', 'sk_storage_get', 'per-socket redirect decision', undefined, true),
  helper('cgroup_skb', 'skb_load_bytes', 'reading the headers of inbound packets', undefined, true),
  helper('cgroup_skb', 'get_socket_cookie', 'the receiving socket of a UDP datagram (its flows are judged once)', '4.12', true),
  helper('cgroup_skb', 'sk_fullsock', 'packets of established TCP connections let through without parsing', '5.1', true),
  {
    name: 'map:bpf_f_lock',
    what: 'BPF_F_LOCK map updates (service entries switched under their spin lock)',
    since: '5.1',
    required: true,
    probe: () => bpf.probeLockedLookup(),
  },
  // Probed ahead of the features that will use them; each names what happens without it.
  {
    name: 'link:sk_msg',
    what: 'sk_msg attached to the sockhash through a bpf_link (replaceable in place on upgrade)',
    since: '6.10',
    required: false,
    fallback: 'legacy attach to the sockhash (used on every kernel today)',
    probe: () => bpf.probeMapLink(progType('sk_msg'), C().BPF_SK_MSG_VERDICT, C().BPF_MAP_TYPE_SOCKHASH),
  },
  helper('sk_msg', 'get_netns_cookie', 'network-namespace cookies in the redirect', '5.15', false, 'not used (the peer namespace is kept in socket storage at establishment)'),
  map('RINGBUF', 'ring buffers (per-connection events)', '5.8', false, 'not used yet'),
  map('LRU_PERCPU_HASH', 'per-CPU LRU maps (XDP limiter state)', '4.10', false, 'not used yet'),
  prog('sk_lookup', 'sk_lookup programs (socket dispatch for in-pod listeners)', '5.9', false, 'not used yet'),
  prog('xdp', 'XDP programs (native or generic on an interface is decided per interface)', '4.8', false, 'not used yet'),
  {
    name: 'btf:vmlinux',
    what: 'kernel BTF at /sys/kernel/btf/vmlinux',
    since: '5.4 (CONFIG_DEBUG_INFO_BTF)',
    required: false,
    fallback: 'not needed by the current programs (no CO-RE relocations)',
    probe: () => fs.existsSync('/sys/kernel/btf/vmlinux'),
  },
];

/**
 * Feature names that SOCKMESH_FEATURES_OFF (comma-separated) turns off: the datapath then behaves
 * as on a kernel without them, to try a fallback (or a refusal) on a kernel that has them.
 */
export function featuresTurnedOff(env: NodeJS.ProcessEnv = process.env): Set<string> {
  const names = (env.SOCKMESH_FEATURES_OFF ?? '').split(',').map((x) => x.trim()).filter(Boolean);
  const unknown = names.filter((n) => !SPECS.some((f) => f.name === n));
  if (unknown.length) throw new UsageError(`SOCKMESH_FEATURES_OFF: unknown feature ${unknown.join(', ')} (sockmesh status lists them)`);
  return new Set(names);
}

/** Asks the running kernel about every feature. Never throws for a probe: a failed probe is a missing feature with its error. */
export function probeFeatures(): KernelFeatures {
  const off = featuresTurnedOff();
  // Without the privilege to load anything every probe would say "absent": say why instead.
  let denied: string | undefined;
  try {
    bpf.probeCanLoad();
  } catch (e) {
    denied = `this process may not load BPF programs (${(e as Error).message}); the agent needs root or CAP_BPF + CAP_NET_ADMIN`;
  }
  const features = SPECS.map(({ probe, ...f }): Feature => {
    if (off.has(f.name)) return { ...f, present: false, off: true };
    if (denied) return { ...f, present: false, error: denied };
    try {
      return { ...f, present: probe() };
    } catch (e) {
      return { ...f, present: false, error: (e as Error).message };
    }
  });
  return { kernel: os.release(), features, ...(denied ? { denied } : {}) };
}

export function missingRequired(k: KernelFeatures): Feature[] {
  return k.features.filter((f) => f.required && !f.present);
}

export function hasFeature(k: KernelFeatures, name: string): boolean {
  return k.features.some((f) => f.name === name && f.present);
}

/** One line per missing required feature, for the refusal. */
export function describeMissing(k: KernelFeatures, missing = missingRequired(k)): string {
  return missing
    .map((f) => `${f.name} (${f.what}${f.since ? `; Linux ${f.since}` : ''}${f.error ? `; probe failed: ${f.error}` : ''}${f.off ? '; turned off by SOCKMESH_FEATURES_OFF' : ''})`)
    .join('; ');
}
