// Where a steered connection was going, and who opened it, from the kernel: the sm_steer map that
// sockops fills when a client's connect (steered by connect4/6) completes, keyed by the client's
// address. The proxy looks its accepted connection's peer up here; nothing in the request is
// trusted for it.
import { SteerMap } from '../abi/steer-map';
import type { ConnectionOrigin } from './types';

export class KernelOrigins {
  private readonly map: SteerMap;
  /** identity number -> SPIFFE id (pushed by the agent with the policies). */
  private identities = new Map<number, string>();

  constructor(bpffsDir: string) {
    this.map = SteerMap.open(bpffsDir);
  }

  setIdentities(ids: Map<number, string>): void {
    this.identities = ids;
  }

  /**
   * The origin of a connection whose peer is ip:port, or undefined when the kernel did not steer
   * it. The record is consumed: call this once per accepted connection.
   */
  lookup(ip: string, port: number): ConnectionOrigin | undefined {
    const s = this.map.take(ip, port);
    if (!s) return undefined;
    const principal = s.identity ? this.identities.get(s.identity) : undefined;
    return { destinationIp: s.orig.ip, destinationPort: s.orig.port, ...(principal ? { principal } : {}) };
  }

  close(): void {
    this.map.close();
  }
}
