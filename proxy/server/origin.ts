// Where an accepted connection was going and who opened it: asked of the datapath once per
// connection, never derived from the request.
import * as net from 'node:net';
import { canonicalIp } from '../../core/ip';
import type { ConnectionOrigin } from '../types';
import type { OriginLookup } from './options';

export type OriginResult =
  | { ok: true; origin: ConnectionOrigin; destination: string }
  /** unknown: the datapath has no record (not steered here); loop: the record points at the proxy itself; error: the lookup threw. */
  | { ok: false; reason: 'unknown' | 'loop' | 'error'; error?: unknown };

/**
 * Calls `lookup` up to `attempts` times, `delayMs` apart, while it answers `undefined`: the kernel
 * entry may be written just after the proxy's accept returns. A throwing lookup is not retried; one
 * that has not answered within `timeoutMs` counts as failed (the connection is refused, not hung).
 */
export async function resolveOrigin(
  lookup: OriginLookup,
  socket: net.Socket,
  attempts: number,
  delayMs: number,
  timeoutMs = 1000,
): Promise<OriginResult> {
  for (let i = 0; i < attempts; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, delayMs));
    if (socket.destroyed) return { ok: false, reason: 'unknown' };
    let origin: ConnectionOrigin | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      origin = await Promise.race([
        Promise.resolve().then(() => lookup(socket)),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`lookupOrigin did not answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (error) {
      return { ok: false, reason: 'error', error };
    } finally {
      clearTimeout(timer);
    }
    if (!origin) continue;
    if (!validOrigin(origin)) return { ok: false, reason: 'error', error: new TypeError('lookupOrigin returned an invalid origin') };
    const ip = peerIp(origin.destinationIp);
    // A record naming the proxy's own listener would make it connect to itself forever.
    if (ip === peerIp(socket.localAddress ?? '') && origin.destinationPort === socket.localPort) {
      return { ok: false, reason: 'loop' };
    }
    const canon: ConnectionOrigin = { ...origin, destinationIp: ip };
    return { ok: true, origin: canon, destination: hostPort(ip, origin.destinationPort) };
  }
  return { ok: false, reason: 'unknown' };
}

function validOrigin(o: ConnectionOrigin): boolean {
  return (
    typeof o.destinationIp === 'string' &&
    net.isIP(o.destinationIp) !== 0 &&
    Number.isInteger(o.destinationPort) &&
    o.destinationPort > 0 &&
    o.destinationPort < 65536
  );
}

/**
 * Canonical text of a socket's address (core/ip.ts: IPv4-mapped IPv6, as a dual-stack listener
 * reports IPv4 peers, is the IPv4 address; an IPv6 zone is dropped); anything else as given.
 */
export function peerIp(ip: string): string {
  return canonicalIp(ip, { zone: true }) ?? ip;
}

/** "1.2.3.4:80" or "[fd00::1]:80". */
export function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}
