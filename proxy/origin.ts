// Where a steered connection was going, and who opened it, from the kernel: the sm_steer map that
// sockops fills when a client's connect (steered by connect4/6) completes, keyed by the client's
// address. The proxy looks its accepted connection's peer up here; nothing in the request is
// trusted for it.
import * as bpf from '../native';
import { parseAddress } from '../core/ip';
import { steerKey, steerValue } from '../abi/codecs';
import { mapPin } from '../abi/pins';
import type { ConnectionOrigin } from './types';

export class KernelOrigins {
  private readonly fd: number;
  /** identity number -> SPIFFE id (pushed by the agent with the policies). */
  private identities = new Map<number, string>();

  constructor(bpffsDir: string) {
    this.fd = bpf.objGet(mapPin(bpffsDir, 'sm_steer'));
  }

  setIdentities(ids: Map<number, string>): void {
    this.identities = ids;
  }

  /** The origin of a connection whose peer is ip:port, or undefined when the kernel did not steer it. */
  lookup(ip: string, port: number): ConnectionOrigin | undefined {
    // Dual-stack sockets show IPv4 peers as ::ffff:a.b.c.d; the kernel keys them in IPv4 form, and
    // so does the codec (core/ip.ts folds mapped addresses).
    if (!parseAddress(ip, { zone: true })) return undefined;
    const v = bpf.mapLookup(this.fd, steerKey.encode({ ip, port }), steerValue.size);
    if (!v) return undefined;
    const s = steerValue.decode(v);
    const principal = s.identity ? this.identities.get(s.identity) : undefined;
    return { destinationIp: s.orig.ip, destinationPort: s.orig.port, ...(principal ? { principal } : {}) };
  }

  close(): void {
    bpf.closeFd(this.fd);
  }
}
