// IP address text <-> network-order bytes, as the datapath's __be32 addr[4] fields hold them.
import { isIP } from 'node:net';

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

/** Canonical text of an address, so two spellings of one address compare equal. */
export function canonicalIp(ip: string): string {
  return bytesToIp(ipToBytes(ip), familyOf(ip));
}
