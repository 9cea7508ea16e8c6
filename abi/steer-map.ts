// The pinned sm_steer map, read from outside the agent: sockops records there, per steered client
// socket (keyed by the client's address and port), where the client was connecting and which
// identity it has. The L7 proxy takes (reads and deletes) it for each accepted connection; sockops
// deletes what is left when the client socket closes. Mirrors `sm_steer` in
// bpf/include/maps.h; the codecs are in codecs.ts.
import * as bpf from '../native';
import { parseAddress } from '../core/ip';
import { steerKey, steerValue, type SteerValue } from './codecs';
import { mapPin } from './pins';

export class SteerMap {
  private constructor(private readonly fd: number) {}

  /** Opens the map of the datapath pinned at `bpffsDir` (throws BpfError ENOENT when none is). */
  static open(bpffsDir: string): SteerMap {
    return new SteerMap(bpf.objGet(mapPin(bpffsDir, 'sm_steer')));
  }

  /** The record of the client socket ip:port, or undefined when the kernel did not steer it. */
  lookup(ip: string, port: number): SteerValue | undefined {
    // Dual-stack sockets show IPv4 peers as ::ffff:a.b.c.d; the kernel keys them in IPv4 form, and
    // so does the codec (core/ip.ts folds mapped addresses).
    if (!parseAddress(ip, { zone: true })) return undefined;
    const v = bpf.mapLookup(this.fd, steerKey.encode({ ip, port }), steerValue.size);
    return v ? steerValue.decode(v) : undefined;
  }

  /**
   * The record of ip:port, deleted as it is read: each steered connection is accepted once, and a
   * record left behind could be inherited by a later socket on the same address and port.
   */
  take(ip: string, port: number): SteerValue | undefined {
    const v = this.lookup(ip, port);
    if (v) bpf.mapDelete(this.fd, steerKey.encode({ ip, port }));
    return v;
  }

  close(): void {
    bpf.closeFd(this.fd);
  }
}
