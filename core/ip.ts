// IP addresses: validation and canonical text (config sources), and the network-order bytes the
// datapath's `__be32 addr[4]` fields hold.
//
// Addresses in the Model are in canonical text form so that equal addresses compare equal as
// strings: IPv4 dotted quad (node's isIP already rejects leading zeros), IPv6 per RFC 5952
// (lower-case, longest zero run compressed) as produced by the WHATWG URL serialiser.

import { isIP } from 'node:net';

export type IpFamily = 4 | 6;

export type ParsedIp = { ok: true; address: string; family: IpFamily } | { ok: false; reason: string };

/** Expands canonical (URL-serialised, hex-only) IPv6 text into 8 16-bit groups. */
function ipv6Groups(canon: string): number[] {
  const [head, tail] = canon.includes('::') ? canon.split('::') : [canon, undefined];
  const h = head ? head.split(':').map((g) => parseInt(g, 16)) : [];
  if (tail === undefined) return h;
  const t = tail ? tail.split(':').map((g) => parseInt(g, 16)) : [];
  return [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
}

/**
 * Validates a unicast address usable as a VIP, backend or workload IP and returns its canonical
 * text. Rejected: anything that is not a single literal address, IPv6 zone indexes, unspecified
 * addresses (0.0.0.0/8, ::), multicast (224.0.0.0/4, ff00::/8), the IPv4 limited broadcast,
 * loopback and link-local addresses (the same in every pod, so useless as identities), and
 * IPv4-mapped IPv6 (::ffff:a.b.c.d — write the IPv4 address instead).
 */
export function parseIp(text: string): ParsedIp {
  if (text.includes('/')) return { ok: false, reason: `"${text}" is a prefix/CIDR; a single address is required` };
  if (text.includes('%')) return { ok: false, reason: `"${text}" has an IPv6 zone index, which is not allowed` };
  const fam = isIP(text);
  if (fam === 4) {
    const o = text.split('.').map(Number);
    if (o[0] === 0) return { ok: false, reason: `${text} is an unspecified/"this network" address (0.0.0.0/8)` };
    if (o[0] >= 224 && o[0] <= 239) return { ok: false, reason: `${text} is a multicast address` };
    // Loopback and link-local addresses are not unique across pods: two pods' sockets would look alike.
    if (o[0] === 127) return { ok: false, reason: `${text} is a loopback address (127.0.0.0/8), not unique to one pod or service` };
    if (o[0] === 169 && o[1] === 254) return { ok: false, reason: `${text} is a link-local address (169.254.0.0/16), not unique to one pod or service` };
    if (text === '255.255.255.255') return { ok: false, reason: `${text} is the broadcast address` };
    return { ok: true, address: text, family: 4 };
  }
  if (fam === 6) {
    let canon: string;
    try {
      canon = new URL(`http://[${text}]/`).hostname.slice(1, -1);
    } catch {
      return { ok: false, reason: `"${text}" is not a valid IP address` };
    }
    const g = ipv6Groups(canon);
    if (g.length !== 8 || g.some((x) => !Number.isInteger(x))) return { ok: false, reason: `"${text}" is not a valid IP address` };
    if (g.every((x) => x === 0)) return { ok: false, reason: `${text} is the unspecified address` };
    if ((g[0] & 0xff00) === 0xff00) return { ok: false, reason: `${text} is a multicast address` };
    if (g.slice(0, 7).every((x) => x === 0) && g[7] === 1) return { ok: false, reason: `${text} is the loopback address, not unique to one pod or service` };
    if ((g[0] & 0xffc0) === 0xfe80) return { ok: false, reason: `${text} is a link-local address (fe80::/10), not unique to one pod or service` };
    if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
      const v4 = `${g[6] >> 8}.${g[6] & 0xff}.${g[7] >> 8}.${g[7] & 0xff}`;
      return { ok: false, reason: `${text} is an IPv4-mapped IPv6 address; write the IPv4 address ${v4} instead` };
    }
    return { ok: true, address: canon, family: 6 };
  }
  return { ok: false, reason: `"${text}" is not a valid IPv4 or IPv6 address` };
}

/** Canonical text of a valid address, or undefined. */
export function canonicalIp(text: string): string | undefined {
  const p = parseIp(text);
  return p.ok ? p.address : undefined;
}

// --- bytes, as the kernel structs hold them ------------------------------------------------


export const AF_INET = 2;
export const AF_INET6 = 10;

export type Family = typeof AF_INET | typeof AF_INET6;

export function familyOf(ip: string): Family {
  const v = isIP(ip);
  if (v === 4) return AF_INET;
  if (v === 6) return AF_INET6;
  throw new Error(`not an IP address: ${JSON.stringify(ip)}`);
}

function parseV4(ip: string, out: Buffer, off: number): void {
  const parts = ip.split('.');
  for (let i = 0; i < 4; i++) out[off + i] = Number(parts[i]);
}

/** 16 bytes in the layout of `__be32 addr[4]`: IPv4 in the first 4 bytes, the rest zero. */
export function ipToBytes(ip: string): Buffer {
  const out = Buffer.alloc(16);
  const v = isIP(ip);
  if (v === 4) {
    parseV4(ip, out, 0);
    return out;
  }
  if (v !== 6) throw new Error(`not an IP address: ${JSON.stringify(ip)}`);
  let text = ip;
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two groups.
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const b = Buffer.alloc(4);
    parseV4(tail, b, 0);
    text = `${text.slice(0, lastColon + 1)}${b.readUInt16BE(0).toString(16)}:${b.readUInt16BE(2).toString(16)}`;
  }
  const [head, rest] = text.split('::');
  const headGroups = head ? head.split(':') : [];
  const restGroups = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const groups =
    rest === undefined
      ? headGroups
      : [...headGroups, ...new Array(8 - headGroups.length - restGroups.length).fill('0'), ...restGroups];
  for (let i = 0; i < 8; i++) out.writeUInt16BE(parseInt(groups[i] ?? '0', 16), i * 2);
  return out;
}

/** Inverse of ipToBytes; IPv6 in RFC 5952 canonical form. */
export function bytesToIp(b: Buffer, family: number): string {
  if (family === AF_INET) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(b.readUInt16BE(i * 2));
  // Longest run (>= 2) of zero groups becomes '::'.
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

/** Canonical text of an address the caller knows is valid (model data); throws otherwise. */
export function mustCanonicalIp(text: string): string {
  const c = canonicalIp(text);
  if (c === undefined) throw new Error(`not a usable IP address: ${JSON.stringify(text)}`);
  return c;
}
