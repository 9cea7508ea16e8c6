// The evaluator for a destination, looked up at request time so that a new table applies to the
// next request, including the next request of an open keep-alive connection or HTTP/2 session.
import * as net from 'node:net';
import type { Evaluator } from '../types';
import { ProxyError } from '../../core/errors';
import { hostPort, peerIp } from './origin';

export interface PolicyKey {
  /** Canonical IP; absent for a ":port" key (any destination IP). */
  ip?: string;
  port: number;
}

/**
 * "10.0.0.1:80", "[fd00::1]:80" (canonical) or "fd00::1:80" (everything after the last ':' is the
 * port), or ":80" for every destination IP. Throws SM_PROXY_POLICY_KEY otherwise.
 */
export function parsePolicyKey(key: string): PolicyKey {
  const bad = (why: string) => new ProxyError('SM_PROXY_POLICY_KEY', `policy key ${JSON.stringify(key)}: ${why}`);
  const cut = key.lastIndexOf(':');
  if (cut < 0) throw bad('expected "ip:port", "[ipv6]:port" or ":port"');
  const portText = key.slice(cut + 1);
  if (!/^\d{1,5}$/.test(portText)) throw bad('port is not a number');
  const port = Number(portText);
  if (port < 1 || port > 65535) throw bad('port out of range');
  let ip = key.slice(0, cut);
  if (ip === '') return { port };
  if (ip.startsWith('[') && ip.endsWith(']')) ip = ip.slice(1, -1);
  if (net.isIP(ip) === 0) throw bad(`${JSON.stringify(ip)} is not an IP address`);
  return { ip: peerIp(ip), port };
}

export class PolicyTable {
  private readonly exact = new Map<string, { evaluator: Evaluator; key: string }>();
  private readonly anyIp = new Map<number, { evaluator: Evaluator; key: string }>();
  readonly size: number;

  /** Validates every key before anything is used: a bad table is refused whole. */
  constructor(map: ReadonlyMap<string, Evaluator> = new Map()) {
    for (const [key, evaluator] of map) {
      if (!evaluator || typeof evaluator.evaluate !== 'function') {
        throw new ProxyError('SM_PROXY_POLICY_KEY', `policy key ${JSON.stringify(key)}: value is not an Evaluator`);
      }
      const k = parsePolicyKey(key);
      if (k.ip === undefined) this.anyIp.set(k.port, { evaluator, key });
      else this.exact.set(hostPort(k.ip, k.port), { evaluator, key });
    }
    this.size = map.size;
  }

  /** Exact ip:port first, then :port. `ip` must be canonical (see peerIp). */
  lookup(ip: string, port: number): { evaluator: Evaluator; key: string } | undefined {
    return this.exact.get(hostPort(ip, port)) ?? this.anyIp.get(port);
  }
}
