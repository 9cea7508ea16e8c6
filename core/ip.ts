// IP addresses and ranges, for every part: the config and xDS translators, the L4 policy compiler,
// the kernel map codecs, the L7 proxy and the CLI. One implementation, so that one address means
// the same thing everywhere.
//
// The one rule for IPv4-mapped IPv6 (::ffff:a.b.c.d): it IS the IPv4 address a.b.c.d. The kernel
// programs normalise such addresses to IPv4 before any lookup (bpf/include/sockmesh_types.h), a
// dual-stack socket reports its IPv4 peers that way, and a policy author who writes one means the
// IPv4 host. So every parser here folds it: `::ffff:10.0.0.1` parses as 10.0.0.1, and a range
// `::ffff:a.b.c.d/(96+n)` is the IPv4 range a.b.c.d/n. A mapped range shorter than /96 also covers
// addresses that are not IPv4-mapped, so it stays an IPv6 range (which no IPv4 address is in).
//
// Text forms: IPv4 as a dotted quad (node's isIPv4 already refuses leading zeros), IPv6 per
// RFC 5952 (lower case, the longest run of two or more zero groups compressed). Equal addresses
// have equal text, so the model compares addresses as strings.

import { isIPv4, isIPv6 } from 'node:net';
import type { Cidr } from './model';

export type IpFamily = 4 | 6;

/** An address as network-order bytes: 4 of them for IPv4 (IPv4-mapped IPv6 folded), 16 for IPv6. */
export interface IpAddress {
  readonly family: IpFamily;
  readonly bytes: Uint8Array;
}

/** An address range with its host bits cleared (as Envoy's CidrRange and ztunnel's IpNet). */
export interface IpRange {
  readonly family: IpFamily;
  readonly bytes: Uint8Array;
  readonly prefixLen: number;
}

// --- parsing and formatting ----------------------------------------------------------------------

function v4Bytes(s: string): Uint8Array {
  return Uint8Array.from(s.split('.').map(Number));
}

/** Bytes of text that isIPv6 accepted (an embedded IPv4 tail allowed), zone already removed. */
function v6Bytes(s: string): Uint8Array {
  const out = new Uint8Array(16);
  let text = s;
  let tail: Uint8Array | undefined;
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) >= 0) {
    tail = v4Bytes(text.slice(lastColon + 1));
    text = text.slice(0, lastColon + 1) + '0:0';
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const hs = head ? head.split(':') : [];
  const rs = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const groups = rest === undefined ? hs : [...hs, ...new Array<string>(8 - hs.length - rs.length).fill('0'), ...rs];
  for (let i = 0; i < 8; i++) {
    const n = parseInt(groups[i] ?? '0', 16);
    out[i * 2] = n >> 8;
    out[i * 2 + 1] = n & 0xff;
  }
  if (tail) out.set(tail, 12);
  return out;
}

/** Whether 16 bytes are an IPv4-mapped IPv6 address (::ffff:0:0/96). */
export function isV4Mapped(b: Uint8Array): boolean {
  if (b.length !== 16 || b[10] !== 0xff || b[11] !== 0xff) return false;
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return true;
}

function fold(bytes: Uint8Array): IpAddress {
  return isV4Mapped(bytes) ? { family: 4, bytes: bytes.slice(12) } : { family: 6, bytes };
}

export interface ParseAddressOptions {
  /** Accept `[v6]`, as URLs and some socket APIs write it. */
  brackets?: boolean;
  /** Accept and drop an IPv6 zone index (`fe80::1%eth0`): the proxy's peers may carry one. */
  zone?: boolean;
}

/** Any literal IPv4 or IPv6 address (unspecified, loopback and multicast included), or undefined. */
export function parseAddress(text: string, opts: ParseAddressOptions = {}): IpAddress | undefined {
  if (typeof text !== 'string') return undefined;
  let t = text;
  const bracketed = opts.brackets === true && t.startsWith('[') && t.endsWith(']');
  if (bracketed) t = t.slice(1, -1);
  const pct = t.indexOf('%');
  if (pct >= 0) {
    // A zone belongs to IPv6 text only, and names something.
    if (!opts.zone || pct === t.length - 1) return undefined;
    t = t.slice(0, pct);
    if (!isIPv6(t)) return undefined;
  }
  if (isIPv4(t)) return bracketed ? undefined : { family: 4, bytes: v4Bytes(t) };
  if (isIPv6(t)) return fold(v6Bytes(t));
  return undefined;
}

/** An address from the bytes of a wire format (4 or 16 of them; IPv4-mapped folded), or undefined. */
export function addressFromBytes(b: Uint8Array): IpAddress | undefined {
  if (b.length === 4) return { family: 4, bytes: Uint8Array.from(b) };
  if (b.length === 16) return fold(Uint8Array.from(b));
  return undefined;
}

/** Canonical text: a dotted quad, or RFC 5952 IPv6. */
export function formatAddress(a: IpAddress): string {
  const b = a.bytes;
  if (a.family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((b[i * 2] << 8) | b[i * 2 + 1]);
  // The longest run (>= 2, the first of equal ones) of zero groups becomes '::'.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Canonical text of any literal address (IPv4-mapped folded to IPv4), or undefined. */
export function canonicalIp(text: string, opts: ParseAddressOptions = {}): string | undefined {
  const a = parseAddress(text, opts);
  return a && formatAddress(a);
}

// --- ranges --------------------------------------------------------------------------------------

function clearHostBits(bytes: Uint8Array, prefixLen: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, prefixLen - i * 8));
    out[i] &= (0xff << (8 - keep)) & 0xff;
  }
  return out;
}

/**
 * A range from an address and a prefix length, or the reason it is not one. The address must be a
 * plain literal (no `/`, no zone) and the length must fit its family; host bits are ignored.
 */
export function parseRange(address: string, prefixLen: number): IpRange | string {
  if (typeof address !== 'string' || address.includes('%') || address.includes('/')) {
    return `${JSON.stringify(address)} is not an IP address (write the prefix length in prefixLen)`;
  }
  if (!isIPv4(address) && !isIPv6(address)) return `${JSON.stringify(address)} is not an IP address`;
  const v4 = isIPv4(address);
  return rangeFromBytes(v4 ? v4Bytes(address) : v6Bytes(address), prefixLen);
}

/**
 * A range from the 4 or 16 bytes of a wire format (ambient's NetworkAddress + length) and a
 * prefix length in the bytes' own family, or the reason it is not one.
 */
export function rangeFromBytes(b: Uint8Array, prefixLen: number): IpRange | string {
  if (b.length !== 4 && b.length !== 16) return `an address of ${b.length} bytes (4 or 16 expected)`;
  const max = b.length * 8;
  if (!Number.isInteger(prefixLen) || prefixLen < 0) return `prefixLen ${prefixLen} is not a prefix length (0..${max})`;
  if (prefixLen > max) return `prefixLen ${prefixLen} is longer than an IPv${max === 32 ? 4 : 6} address (${max})`;
  if (b.length === 4) return { family: 4, bytes: clearHostBits(b, prefixLen), prefixLen };
  if (isV4Mapped(b) && prefixLen >= 96) return { family: 4, bytes: clearHostBits(b.slice(12), prefixLen - 96), prefixLen: prefixLen - 96 };
  return { family: 6, bytes: clearHostBits(b, prefixLen), prefixLen };
}

/** The model's form of a range. */
export function toCidr(r: IpRange): Cidr {
  return { address: formatAddress(r), prefixLen: r.prefixLen };
}

/** Whether `a` is in `r`; an address is only ever in a range of its own family. */
export function inRange(a: IpAddress, r: IpRange): boolean {
  if (a.family !== r.family) return false;
  const full = r.prefixLen >> 3;
  for (let i = 0; i < full; i++) if (a.bytes[i] !== r.bytes[i]) return false;
  const rem = r.prefixLen & 7;
  if (rem === 0) return true;
  const mask = (0xff << (8 - rem)) & 0xff;
  return (a.bytes[full] & mask) === (r.bytes[full] & mask);
}

export function formatRange(r: IpRange): string {
  return `${formatAddress(r)}/${r.prefixLen}`;
}

/** The model's form of a range (canonical address text + length), or undefined if invalid. */
export function makeCidr(address: string, prefixLen: number): Cidr | undefined {
  const r = parseRange(address, prefixLen);
  return typeof r === 'string' ? undefined : toCidr(r);
}

/** Whether the address text `ip` is in the model range `c` (false if either does not parse). */
export function cidrContains(c: Cidr, ip: string): boolean {
  const r = parseRange(c.address, c.prefixLen);
  const a = parseAddress(ip);
  return typeof r !== 'string' && a !== undefined && inRange(a, r);
}

/**
 * Bits of an address as written: 32 for a dotted quad, 128 for IPv6 text (IPv4-mapped included,
 * since `::ffff:10.0.0.0/104` is written in IPv6 lengths): the longest prefix length it takes.
 */
export function hostBits(ip: string): number {
  return isIPv6(ip) ? 128 : 32;
}

// --- addresses the model accepts -----------------------------------------------------------------

export type ParsedIp = { ok: true; address: string; family: IpFamily } | { ok: false; reason: string };

/**
 * Validates a unicast address usable as a VIP, backend or workload IP and returns its canonical
 * text (an IPv4-mapped address is its IPv4 address, as everywhere). Rejected: anything that is not
 * a single literal address, IPv6 zone indexes, unspecified addresses (0.0.0.0/8, ::), multicast
 * (224.0.0.0/4, ff00::/8), the IPv4 limited broadcast, loopback and link-local addresses (the same
 * in every pod, so useless as identities).
 */
export function parseIp(text: string): ParsedIp {
  if (typeof text !== 'string') return { ok: false, reason: `${JSON.stringify(text)} is not an IP address` };
  if (text.includes('/')) return { ok: false, reason: `"${text}" is a prefix/CIDR; a single address is required` };
  if (text.includes('%')) return { ok: false, reason: `"${text}" has an IPv6 zone index, which is not allowed` };
  const a = parseAddress(text);
  if (!a) return { ok: false, reason: `"${text}" is not a valid IPv4 or IPv6 address` };
  const canon = formatAddress(a);
  const b = a.bytes;
  if (a.family === 4) {
    if (b[0] === 0) return { ok: false, reason: `${canon} is an unspecified/"this network" address (0.0.0.0/8)` };
    if (b[0] >= 224 && b[0] <= 239) return { ok: false, reason: `${canon} is a multicast address` };
    // Loopback and link-local addresses are not unique across pods: two pods' sockets would look alike.
    if (b[0] === 127) return { ok: false, reason: `${canon} is a loopback address (127.0.0.0/8), not unique to one pod or service` };
    if (b[0] === 169 && b[1] === 254) return { ok: false, reason: `${canon} is a link-local address (169.254.0.0/16), not unique to one pod or service` };
    if (canon === '255.255.255.255') return { ok: false, reason: `${canon} is the broadcast address` };
    return { ok: true, address: canon, family: 4 };
  }
  if (b.every((x) => x === 0)) return { ok: false, reason: `${text} is the unspecified address` };
  if (b[0] === 0xff) return { ok: false, reason: `${text} is a multicast address` };
  if (canon === '::1') return { ok: false, reason: `${text} is the loopback address, not unique to one pod or service` };
  if (b[0] === 0xfe && (b[1] & 0xc0) === 0x80) return { ok: false, reason: `${text} is a link-local address (fe80::/10), not unique to one pod or service` };
  return { ok: true, address: canon, family: 6 };
}

/** Canonical text of an address the caller knows is valid (model data); throws otherwise. */
export function mustCanonicalIp(text: string): string {
  const p = parseIp(text);
  if (!p.ok) throw new Error(`not a usable IP address: ${JSON.stringify(text)}`);
  return p.address;
}

// --- bytes, as the kernel structs hold them ------------------------------------------------------

export const AF_INET = 2;
export const AF_INET6 = 10;

export type Family = typeof AF_INET | typeof AF_INET6;

/** The kernel's family of an address (IPv4-mapped is AF_INET, as the programs normalise it). */
export function familyOf(ip: string): Family {
  const a = parseAddress(ip, { zone: true });
  if (!a) throw new Error(`not an IP address: ${JSON.stringify(ip)}`);
  return a.family === 4 ? AF_INET : AF_INET6;
}

/** 16 bytes in the layout of `__be32 addr[4]`: IPv4 (mapped folded) in the first 4 bytes, the rest zero. */
export function ipToBytes(ip: string): Buffer {
  const a = parseAddress(ip, { zone: true });
  if (!a) throw new Error(`not an IP address: ${JSON.stringify(ip)}`);
  const out = Buffer.alloc(16);
  out.set(a.bytes, 0);
  return out;
}

/**
 * Inverse of ipToBytes: canonical text of `__be32 addr[4]` of the given kernel family (16 bytes
 * that hold an IPv4-mapped address are the IPv4 address, as everywhere).
 */
export function bytesToIp(b: Uint8Array, family: number): string {
  return formatAddress(family === AF_INET ? { family: 4, bytes: b.subarray(0, 4) } : fold(Uint8Array.from(b.subarray(0, 16))));
}
