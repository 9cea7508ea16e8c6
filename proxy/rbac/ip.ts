// Addresses and CIDR ranges for the IP matchers (destination_ip, direct_remote_ip, remote_ip,
// source_ip), as Envoy's Network::Address::CidrRange: the range's host bits are ignored, and an
// address matches only a range of its own family.
//
// One sockmesh-specific rule: an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address.
// Node's dual-stack sockets report IPv4 peers that way, while the kernel (and a policy author)
// saw IPv4; a range written as ::ffff:a.b.c.d/96+n is the IPv4 range a.b.c.d/n for the same reason.

import { isIPv4, isIPv6 } from 'node:net';

export interface Ip {
  v: 4 | 6;
  bytes: Uint8Array;
}

export interface Cidr {
  v: 4 | 6;
  bytes: Uint8Array;
  len: number;
}

function v4Bytes(s: string): Uint8Array {
  return Uint8Array.from(s.split('.').map(Number));
}

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
  groups.forEach((g, i) => {
    const n = parseInt(g, 16);
    out[i * 2] = n >> 8;
    out[i * 2 + 1] = n & 0xff;
  });
  if (tail) out.set(tail, 12);
  return out;
}

function unmap(ip: Ip): Ip {
  if (ip.v === 6 && ip.bytes.subarray(0, 10).every((b) => b === 0) && ip.bytes[10] === 0xff && ip.bytes[11] === 0xff) {
    return { v: 4, bytes: ip.bytes.slice(12) };
  }
  return ip;
}

/** A textual address (IPv6 zone ignored), or undefined if it is not one. */
export function parseIp(s: string): Ip | undefined {
  if (typeof s !== 'string') return undefined;
  const t = s.startsWith('[') && s.endsWith(']') ? s.slice(1, -1) : s;
  const bare = t.includes('%') ? t.slice(0, t.indexOf('%')) : t;
  if (isIPv4(bare)) return { v: 4, bytes: v4Bytes(bare) };
  if (isIPv6(bare)) return unmap({ v: 6, bytes: v6Bytes(bare) });
  return undefined;
}

/** A range from config: the address must be a plain address of the family the length fits. */
export function parseCidr(address: string, len: number): Cidr | string {
  if (address.includes('%') || address.includes('/')) return `"${address}" is not an IP address (write the prefix length in prefixLen)`;
  const isV4 = isIPv4(address);
  if (!isV4 && !isIPv6(address)) return `"${address}" is not an IP address`;
  const max = isV4 ? 32 : 128;
  if (len > max) return `prefixLen ${len} is longer than an IPv${isV4 ? 4 : 6} address (${max})`;
  if (isV4) return { v: 4, bytes: v4Bytes(address), len };
  const bytes = v6Bytes(address);
  const mapped = unmap({ v: 6, bytes });
  if (mapped.v === 4 && len >= 96) return { v: 4, bytes: mapped.bytes, len: len - 96 };
  return { v: 6, bytes, len };
}

export function inCidr(ip: Ip, c: Cidr): boolean {
  if (ip.v !== c.v) return false;
  const full = c.len >> 3;
  for (let i = 0; i < full; i++) if (ip.bytes[i] !== c.bytes[i]) return false;
  const rem = c.len & 7;
  if (rem === 0) return true;
  const mask = (0xff << (8 - rem)) & 0xff;
  return (ip.bytes[full] & mask) === (c.bytes[full] & mask);
}

export function formatCidr(c: Cidr): string {
  if (c.v === 4) return `${Array.from(c.bytes).join('.')}/${c.len}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((c.bytes[i] << 8) | c.bytes[i + 1]).toString(16));
  return `${groups.join(':')}/${c.len}`;
}
