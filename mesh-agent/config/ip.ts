// IP address parsing and canonicalisation for config sources.
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
 * addresses (0.0.0.0/8, ::), multicast (224.0.0.0/4, ff00::/8), the IPv4 limited broadcast, and
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
