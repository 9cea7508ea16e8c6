// TypeScript mirrors of the structs in bpf/include/sockmesh_types.h. test/btf-layout.test.ts
// checks every layout below against the BTF of the compiled objects (size, member offsets and
// sizes), so a change on either side that is not made on both fails CI.
import { bytesToIp, familyOf, ipToBytes } from '../core/ip';

export type Kind = 'u8' | 'u16' | 'u32' | 'u64' | 'be16' | 'be32' | 'be32x4' | 'pad';

export interface FieldLayout {
  /** Member name in the C struct. */
  name: string;
  kind: Kind;
  offset: number;
  size: number;
}

export interface StructCodec<T> {
  /** `struct <cName>` in bpf/include/sockmesh_types.h */
  cName: string;
  size: number;
  fields: readonly FieldLayout[];
  encode(v: T): Buffer;
  decode(b: Buffer): T;
}

type Raw = Record<string, number | bigint | Buffer>;

const KIND_SIZE: Record<Exclude<Kind, 'pad'>, number> = { u8: 1, u16: 2, u32: 4, u64: 8, be16: 2, be32: 4, be32x4: 16 };

/** Lays fields out with C's natural alignment and checks the result against the given size. */
function layout(cName: string, size: number, spec: Array<[string, Kind, number?]>): FieldLayout[] {
  let off = 0;
  const out: FieldLayout[] = [];
  for (const [name, kind, padLen] of spec) {
    const sz = kind === 'pad' ? padLen ?? 1 : KIND_SIZE[kind];
    const align = kind === 'pad' ? 1 : kind === 'be32x4' || kind === 'be32' ? 4 : sz;
    off = Math.ceil(off / align) * align;
    out.push({ name, kind, offset: off, size: sz });
    off += sz;
  }
  if (off !== size) throw new Error(`codec ${cName}: fields end at ${off}, struct size ${size}`);
  return out;
}

function encodeRaw(fields: readonly FieldLayout[], size: number, v: Raw): Buffer {
  const b = Buffer.alloc(size); // zeroed: pad bytes are part of hash keys
  for (const f of fields) {
    const x = v[f.name];
    switch (f.kind) {
      case 'u8':
        b.writeUInt8(Number(x ?? 0), f.offset);
        break;
      case 'u16':
        b.writeUInt16LE(Number(x ?? 0), f.offset);
        break;
      case 'be16':
        b.writeUInt16BE(Number(x ?? 0), f.offset);
        break;
      case 'u32':
        b.writeUInt32LE(Number(x ?? 0), f.offset);
        break;
      case 'u64':
        b.writeBigUInt64LE(BigInt((x as bigint | number | undefined) ?? 0), f.offset);
        break;
      case 'be32':
      case 'be32x4':
        // raw network-order bytes
        if (x) (x as Buffer).copy(b, f.offset, 0, f.size);
        break;
      case 'pad':
        break;
    }
  }
  return b;
}

function decodeRaw(fields: readonly FieldLayout[], size: number, cName: string, b: Buffer): Raw {
  if (b.length < size) throw new Error(`${cName}: ${b.length} bytes, need ${size}`);
  const r: Raw = {};
  for (const f of fields) {
    switch (f.kind) {
      case 'u8':
        r[f.name] = b.readUInt8(f.offset);
        break;
      case 'u16':
        r[f.name] = b.readUInt16LE(f.offset);
        break;
      case 'be16':
        r[f.name] = b.readUInt16BE(f.offset);
        break;
      case 'u32':
        r[f.name] = b.readUInt32LE(f.offset);
        break;
      case 'u64':
        r[f.name] = b.readBigUInt64LE(f.offset);
        break;
      case 'be32':
      case 'be32x4':
        r[f.name] = Buffer.from(b.subarray(f.offset, f.offset + f.size));
        break;
      case 'pad':
        break;
    }
  }
  return r;
}

function codec<T>(
  cName: string,
  size: number,
  spec: Array<[string, Kind, number?]>,
  toRaw: (v: T) => Raw,
  fromRaw: (r: Raw) => T,
): StructCodec<T> {
  const fields = layout(cName, size, spec);
  return {
    cName,
    size,
    fields,
    encode: (v) => encodeRaw(fields, size, toRaw(v)),
    decode: (b) => fromRaw(decodeRaw(fields, size, cName, b)),
  };
}

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

// --- struct sm_svc_key ---------------------------------------------------------------------
export interface SvcKey {
  ip: string;
  /** host order here; network order in the kernel struct */
  port: number;
  proto: number;
}
export const svcKey = codec<SvcKey>(
  'sm_svc_key',
  20,
  [
    ['addr', 'be32x4'],
    ['port', 'be16'],
    ['proto', 'u8'],
    ['family', 'u8'],
  ],
  (v) => ({ addr: ipToBytes(v.ip), port: v.port, proto: v.proto, family: familyOf(v.ip) }),
  (r) => ({ ip: bytesToIp(r.addr as Buffer, r.family as number), port: r.port as number, proto: r.proto as number }),
);

// --- struct sm_svc_value -------------------------------------------------------------------
export interface SvcValue {
  svcId: number;
  gen: number;
  slotCount: number;
  flags: number;
  /** The service's own key, repeated in the value (see the struct's comment). */
  key: SvcKey;
}
export const svcValue = codec<SvcValue>(
  'sm_svc_value',
  40,
  [
    ['lock', 'pad', 4], // struct bpf_spin_lock: owned by the kernel, ignored in BPF_F_LOCK updates
    ['svc_id', 'u32'],
    ['gen', 'u32'],
    ['slot_count', 'u32'],
    ['flags', 'u32'],
    ['vip', 'be32x4'],
    ['vip_port', 'be16'],
    ['vip_proto', 'u8'],
    ['vip_family', 'u8'],
  ],
  (v) => ({
    svc_id: v.svcId,
    gen: v.gen,
    slot_count: v.slotCount,
    flags: v.flags,
    vip: ipToBytes(v.key.ip),
    vip_port: v.key.port,
    vip_proto: v.key.proto,
    vip_family: familyOf(v.key.ip),
  }),
  (r) => ({
    svcId: r.svc_id as number,
    gen: r.gen as number,
    slotCount: r.slot_count as number,
    flags: r.flags as number,
    key: { ip: bytesToIp(r.vip as Buffer, r.vip_family as number), port: r.vip_port as number, proto: r.vip_proto as number },
  }),
);

// --- struct sm_slot_key --------------------------------------------------------------------
export interface SlotKey {
  svcId: number;
  gen: number;
  slot: number;
}
export const slotKey = codec<SlotKey>(
  'sm_slot_key',
  12,
  [
    ['svc_id', 'u32'],
    ['gen', 'u32'],
    ['slot', 'u32'],
  ],
  (v) => ({ svc_id: v.svcId, gen: v.gen, slot: v.slot }),
  (r) => ({ svcId: r.svc_id as number, gen: r.gen as number, slot: r.slot as number }),
);

// --- struct sm_backend ---------------------------------------------------------------------
export interface Backend {
  ip: string;
  port: number;
}
export const backend = codec<Backend>(
  'sm_backend',
  20,
  [
    ['addr', 'be32x4'],
    ['port', 'be16'],
    ['family', 'u8'],
    ['flags', 'u8'],
  ],
  (v) => ({ addr: ipToBytes(v.ip), port: v.port, family: familyOf(v.ip), flags: 0 }),
  (r) => ({ ip: bytesToIp(r.addr as Buffer, r.family as number), port: r.port as number }),
);

// --- struct sm_revnat_key / sm_revnat_value ------------------------------------------------
export interface RevnatKey {
  cookie: bigint;
  ip: string;
  port: number;
}
export const revnatKey = codec<RevnatKey>(
  'sm_revnat_key',
  32,
  [
    ['cookie', 'u64'],
    ['addr', 'be32x4'],
    ['port', 'be16'],
    ['family', 'u8'],
    ['pad', 'pad', 5],
  ],
  (v) => ({ cookie: v.cookie, addr: ipToBytes(v.ip), port: v.port, family: familyOf(v.ip) }),
  (r) => ({ cookie: r.cookie as bigint, ip: bytesToIp(r.addr as Buffer, r.family as number), port: r.port as number }),
);

export interface RevnatValue {
  ip: string;
  port: number;
}
/** Structs laid out as { __be32 addr[4]; __be16 port; __u8 family; __u8 pad; }. */
function addrPortCodec(cName: string): StructCodec<{ ip: string; port: number }> {
  return codec<{ ip: string; port: number }>(
    cName,
    20,
    [
      ['addr', 'be32x4'],
      ['port', 'be16'],
      ['family', 'u8'],
      ['pad', 'pad', 1],
    ],
    (v) => ({ addr: ipToBytes(v.ip), port: v.port, family: familyOf(v.ip) }),
    (r) => ({ ip: bytesToIp(r.addr as Buffer, r.family as number), port: r.port as number }),
  );
}

export const revnatValue: StructCodec<RevnatValue> = addrPortCodec('sm_revnat_value');

// --- struct sm_ip_key / sm_local_ep --------------------------------------------------------
export interface IpKey {
  ip: string;
}
export const ipKey = codec<IpKey>(
  'sm_ip_key',
  20,
  [
    ['addr', 'be32x4'],
    ['family', 'u8'],
    ['pad', 'pad', 3],
  ],
  (v) => ({ addr: ipToBytes(v.ip), family: familyOf(v.ip) }),
  (r) => ({ ip: bytesToIp(r.addr as Buffer, r.family as number) }),
);

export interface LocalEp {
  identity: number;
  flags: number;
}
export const localEp = codec<LocalEp>(
  'sm_local_ep',
  8,
  [
    ['identity', 'u32'],
    ['flags', 'u32'],
  ],
  (v) => ({ identity: v.identity, flags: v.flags }),
  (r) => ({ identity: r.identity as number, flags: r.flags as number }),
);

/** Entries of each pod's unconnected-UDP table (SM_REVNAT_POD_ENTRIES in bpf/include/maps.h). */
export const REVNAT_POD_ENTRIES = 2048;

// --- struct sm_sock_key --------------------------------------------------------------------
export interface SockKey {
  /** netns cookie of the namespace the socket lives in */
  netns: bigint;
  local: string;
  remote: string;
  localPort: number;
  remotePort: number;
}
export const sockKey = codec<SockKey>(
  'sm_sock_key',
  48,
  [
    ['netns', 'u64'],
    ['local', 'be32x4'],
    ['remote', 'be32x4'],
    ['local_port', 'be16'],
    ['remote_port', 'be16'],
    ['family', 'u8'],
    ['pad', 'pad', 3],
  ],
  (v) => ({
    netns: v.netns,
    local: ipToBytes(v.local),
    remote: ipToBytes(v.remote),
    local_port: v.localPort,
    remote_port: v.remotePort,
    family: familyOf(v.local),
  }),
  (r) => ({
    netns: r.netns as bigint,
    local: bytesToIp(r.local as Buffer, r.family as number),
    remote: bytesToIp(r.remote as Buffer, r.family as number),
    localPort: r.local_port as number,
    remotePort: r.remote_port as number,
  }),
);

// --- struct sm_sock_state ------------------------------------------------------------------
export interface SockState {
  redir: number;
  steered: number;
  orig: { ip: string; port: number } | null;
  /** 1: orig is what getpeername() shows (the connect was translated or steered) */
  xlated: number;
  /** netns cookie the peer of a local pair is keyed by (0: not a local pair) */
  peerNetns: bigint;
}
export const sockState = codec<SockState>(
  'sm_sock_state',
  40,
  [
    ['redir', 'u32'],
    ['steered', 'u32'],
    ['orig', 'be32x4'],
    ['orig_port', 'be16'],
    ['orig_family', 'u8'],
    ['xlated', 'u8'],
    ['pad', 'pad', 4],
    ['peer_netns', 'u64'],
  ],
  (v) => ({
    redir: v.redir,
    steered: v.steered,
    ...(v.orig ? { orig: ipToBytes(v.orig.ip), orig_port: v.orig.port, orig_family: familyOf(v.orig.ip) } : {}),
    xlated: v.xlated,
    peer_netns: v.peerNetns,
  }),
  (r) => ({
    redir: r.redir as number,
    steered: r.steered as number,
    orig: r.orig_family ? { ip: bytesToIp(r.orig as Buffer, r.orig_family as number), port: r.orig_port as number } : null,
    xlated: r.xlated as number,
    peerNetns: r.peer_netns as bigint,
  }),
);

// --- struct sm_config ----------------------------------------------------------------------
export const CFG_F_PROXY4 = 1;
export const CFG_F_PROXY6 = 2;
export const CFG_F_XLATE_ALL = 4;
export interface DatapathConfig {
  /** Translate connects of every socket in the meshed cgroup, not only enrolled workloads' (SM_CFG_F_XLATE_ALL). */
  translateAll?: boolean;
  /** cgroup id (inode of the cgroup v2 directory) whose connects are never steered: the proxy's. */
  proxyCgroupId: bigint;
  /**
   * A second exempt cgroup: the proxy that is handing its listening sockets over to its successor
   * (proxyCgroupId) and still drains its own connections. 0 or absent outside a handover.
   */
  proxyCgroupPrev?: bigint;
  proxy4?: string;
  proxy6?: string;
  proxyPort: number;
}
export const config = codec<DatapathConfig>(
  'sm_config',
  40,
  [
    ['proxy_cgroup_id', 'u64'],
    ['proxy4', 'be32'],
    ['proxy6', 'be32x4'],
    ['proxy_port', 'be16'],
    ['flags', 'u8'],
    ['pad', 'pad', 1],
    ['proxy_cgroup_prev', 'u64'],
  ],
  (v) => ({
    proxy_cgroup_id: v.proxyCgroupId,
    proxy_cgroup_prev: v.proxyCgroupPrev ?? 0n,
    proxy4: v.proxy4 ? ipToBytes(v.proxy4).subarray(0, 4) : undefined,
    proxy6: v.proxy6 ? ipToBytes(v.proxy6) : undefined,
    proxy_port: v.proxyPort,
    flags: (v.proxy4 ? CFG_F_PROXY4 : 0) | (v.proxy6 ? CFG_F_PROXY6 : 0) | (v.translateAll ? CFG_F_XLATE_ALL : 0),
  }) as Raw,
  (r) => {
    const flags = r.flags as number;
    const out: DatapathConfig = { proxyCgroupId: r.proxy_cgroup_id as bigint, proxyPort: r.proxy_port as number };
    if (flags & CFG_F_PROXY4) out.proxy4 = bytesToIp(Buffer.concat([r.proxy4 as Buffer, Buffer.alloc(12)]), 2);
    if (flags & CFG_F_PROXY6) out.proxy6 = bytesToIp(r.proxy6 as Buffer, 10);
    if (flags & CFG_F_XLATE_ALL) out.translateAll = true;
    if (r.proxy_cgroup_prev) out.proxyCgroupPrev = r.proxy_cgroup_prev as bigint;
    return out;
  },
);

// --- struct sm_steer_key / sm_steer_value --------------------------------------------------
export interface SteerKey {
  ip: string;
  port: number;
}
export const steerKey: StructCodec<SteerKey> = addrPortCodec('sm_steer_key');

export interface SteerValue {
  orig: { ip: string; port: number };
  identity: number;
}
export const steerValue = codec<SteerValue>(
  'sm_steer_value',
  24,
  [
    ['orig', 'be32x4'],
    ['orig_port', 'be16'],
    ['orig_family', 'u8'],
    ['pad', 'pad', 1],
    ['identity', 'u32'],
  ],
  (v) => ({ orig: ipToBytes(v.orig.ip), orig_port: v.orig.port, orig_family: familyOf(v.orig.ip), identity: v.identity }),
  (r) => ({
    orig: { ip: bytesToIp(r.orig as Buffer, r.orig_family as number), port: r.orig_port as number },
    identity: r.identity as number,
  }),
);

// --- L4 policy: struct sm_policy_dst / sm_policy_key / sm_policy_value ---------------------
export const VERDICT_ALLOW = 1;
export const VERDICT_DENY = 2;
/** SM_VERDICT_L7: only in rows of identity IDENTITY_L7_PORTS, marking a port with HTTP rules. */
export const VERDICT_L7 = 3;
/** SM_IDENTITY_L7_PORTS: the reserved identity of the rows that mark ports with HTTP rules. */
export const IDENTITY_L7_PORTS = 0xffffffff;
/**
 * SM_IDENTITY_UNRESOLVED: a caller inside the meshed cgroup whose pod cgroup is not mapped; its
 * rows fail closed (a DENY naming principals or namespaces matches it, such an ALLOW does not).
 */
export const IDENTITY_UNRESOLVED = 0xfffffffe;
/** SM_PDST_F_L7 (sm_policy_dst.flags): the destination has ports with HTTP rules. */
export const PDST_F_L7 = 1;
/** SM_EP_F_PROXY (sm_ip_identity flags): an L7 proxy's address, the only source let into such ports. */
export const EP_F_PROXY = 1;
/** SM_EP_F_PROBE: an address kubelet probes come from; TCP from it is let into local pods unjudged. */
export const EP_F_PROBE = 2;

export interface PolicyDst {
  set: number;
  /** PDST_F_*; absent = 0 */
  flags?: number;
}
export const policyDst = codec<PolicyDst>(
  'sm_policy_dst',
  8,
  [
    ['set', 'u32'],
    ['flags', 'u32'],
  ],
  (v) => ({ set: v.set, flags: v.flags ?? 0 }),
  (r) => ({ set: r.set as number, ...((r.flags as number) ? { flags: r.flags as number } : {}) }),
);

export interface PolicyKey {
  set: number;
  identity: number;
  /** 0: every port without an entry of its own */
  port: number;
}
export const policyKey = codec<PolicyKey>(
  'sm_policy_key',
  12,
  [
    ['set', 'u32'],
    ['identity', 'u32'],
    ['port', 'be16'],
    ['pad', 'pad', 2],
  ],
  (v) => ({ set: v.set, identity: v.identity, port: v.port }),
  (r) => ({ set: r.set as number, identity: r.identity as number, port: r.port as number }),
);

export interface PolicyValue {
  verdict: number;
  rule: number;
}
export const policyValue = codec<PolicyValue>(
  'sm_policy_value',
  8,
  [
    ['verdict', 'u8'],
    ['pad', 'pad', 3],
    ['rule', 'u32'],
  ],
  (v) => ({ verdict: v.verdict, rule: v.rule }),
  (r) => ({ verdict: r.verdict as number, rule: r.rule as number }),
);

/** Key of sm_cgroup_identity: a cgroup id (u64, host order). */
export const cgroupId = codec<{ id: bigint }>(
  'sm_cgroup_id',
  8,
  [['id', 'u64']],
  (v) => ({ id: v.id }),
  (r) => ({ id: r.id as bigint }),
);

// --- sm_identities: struct sm_identity_key / sm_identity_name ------------------------------
export const identityKey = codec<{ identity: number }>(
  'sm_identity_key',
  4,
  [['identity', 'u32']],
  (v) => ({ identity: v.identity }),
  (r) => ({ identity: r.identity as number }),
);

/** The first 16 bytes of the SHA-256 of a SPIFFE id. */
export const identityName = codec<{ sha256: Buffer }>(
  'sm_identity_name',
  16,
  [['sha256', 'be32x4']],
  (v) => ({ sha256: v.sha256 }),
  (r) => ({ sha256: Buffer.from(r.sha256 as Buffer) }),
);

// --- sm_l7_ready: struct sm_svc_key / sm_l7_ready_value --------------------------------------
export const l7ReadyValue = codec<{ version: number }>(
  'sm_l7_ready_value',
  4,
  [['version', 'u32']],
  (v) => ({ version: v.version }),
  (r) => ({ version: r.version as number }),
);

/** All codecs, for the BTF layout check. */
export const ALL_CODECS: ReadonlyArray<StructCodec<never>> = [
  svcKey,
  l7ReadyValue,
  svcValue,
  slotKey,
  backend,
  revnatKey,
  revnatValue,
  ipKey,
  localEp,
  sockKey,
  sockState,
  config,
  steerKey,
  steerValue,
  policyDst,
  policyKey,
  policyValue,
  identityKey,
  identityName,
] as unknown as ReadonlyArray<StructCodec<never>>;

/** Names of enum sm_counter, in index order (bpf/include/sockmesh_types.h). */
export const COUNTER_NAMES = [
  'connect_translated',
  'connect_no_backend',
  'udp_translated',
  'udp_reply_revnat',
  'getpeername_revnat',
  'sock_local_pair',
  'sock_not_local',
  'msg_redirected',
  'msg_redirected_bytes',
  'msg_fallback',
  'map_errors',
  'l7_steered',
  'policy_deny_connect',
  'policy_deny_ingress',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];

/** The C enumerator for each counter, checked against BTF too. */
export const COUNTER_ENUMERATORS: Record<CounterName, string> = {
  connect_translated: 'SM_CNT_CONNECT_XLATE',
  connect_no_backend: 'SM_CNT_CONNECT_NO_BACKEND',
  udp_translated: 'SM_CNT_UDP_XLATE',
  udp_reply_revnat: 'SM_CNT_UDP_REVNAT',
  getpeername_revnat: 'SM_CNT_PEERNAME_REVNAT',
  sock_local_pair: 'SM_CNT_SOCK_LOCAL_PAIR',
  sock_not_local: 'SM_CNT_SOCK_NOT_LOCAL',
  msg_redirected: 'SM_CNT_MSG_REDIRECT',
  msg_redirected_bytes: 'SM_CNT_MSG_REDIRECT_BYTES',
  msg_fallback: 'SM_CNT_MSG_FALLBACK',
  map_errors: 'SM_CNT_MAP_ERROR',
  l7_steered: 'SM_CNT_L7_STEERED',
  policy_deny_connect: 'SM_CNT_POLICY_DENY_CONNECT',
  policy_deny_ingress: 'SM_CNT_POLICY_DENY_INGRESS',
};
