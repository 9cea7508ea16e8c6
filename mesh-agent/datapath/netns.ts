// The network namespaces of the processes in the meshed cgroup, with their cookies and addresses:
// how the agent names a caller whose pod cgroup it does not know (no Kubernetes source, `--xds`
// alone). connect4/6 look the socket's netns cookie up in sm_netns_identity when the cgroup walk
// finds nothing; a namespace is a pod's when it holds that pod's addresses.
//
// Matching is strict, so that a pod cannot claim another's identity by adding its address: a
// namespace gets an identity only if every workload address it holds belongs to one workload, and
// each of those addresses is held by this namespace alone. Anything else stays unresolved (fail
// closed).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as bpf from '../../native';
import { canonicalIp } from '../../core/ip';

export interface NetnsView {
  /** netns cookie -> the addresses configured in that namespace (canonical) */
  byCookie: Map<bigint, string[]>;
  /** netns cookie -> the cgroup directories of the processes found in it */
  cgroups: Map<bigint, string[]>;
  /** Namespaces that could not be read (a process gone between listing and reading is not one). */
  errors: string[];
}

export class NetnsScanner {
  constructor(private readonly cgroupPath: string) {}

  /** Every network namespace a process below the meshed cgroup is in. */
  scan(): NetnsView {
    const view: NetnsView = { byCookie: new Map(), cgroups: new Map(), errors: [] };
    const seen = new Map<bigint, bigint>(); // netns inode -> cookie
    for (const [pid, cg] of pidsBelow(this.cgroupPath)) {
      const nsPath = `/proc/${pid}/ns/net`;
      let ino: bigint;
      try {
        ino = fs.statSync(nsPath, { bigint: true }).ino;
      } catch {
        continue; // the process is gone
      }
      const known = seen.get(ino);
      if (known !== undefined) {
        const cgs = view.cgroups.get(known);
        if (cgs && !cgs.includes(cg)) cgs.push(cg);
        continue;
      }
      seen.set(ino, -1n);
      try {
        // Re-read every scan: addresses are what identify the namespace, and they can change.
        const info = bpf.netnsInfo(nsPath);
        // Loopback and link-local included: they belong to no workload and match nothing.
        const addrs = info.addrs.map((a) => canonicalIp(a.replace(/%.*$/, ''))).filter((a): a is string => a !== undefined);
        view.byCookie.set(info.cookie, addrs);
        view.cgroups.set(info.cookie, [cg]);
        seen.set(ino, info.cookie);
      } catch (e) {
        if ((e as { code?: string }).code !== 'ENOENT') view.errors.push(`${nsPath}: ${(e as Error).message}`);
      }
    }
    return view;
  }
}

/** Every process below `cg`, with the cgroup directory it is in. */
function pidsBelow(cg: string): Array<[number, string]> {
  const out: Array<[number, string]> = [];
  const walk = (dir: string) => {
    try {
      for (const l of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n')) if (l) out.push([Number(l), dir]);
    } catch {
      return; // removed while we walked
    }
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) walk(path.join(dir, e.name));
  };
  walk(cg);
  return out;
}

/**
 * netns cookie -> the workload it belongs to, by the strict rule above. `owner` maps each workload
 * address to its workload's key.
 */
export function matchNamespaces(byCookie: Map<bigint, string[]>, owner: Map<string, string>): Map<bigint, string> {
  const holders = new Map<string, number>(); // workload address -> how many namespaces hold it
  for (const addrs of byCookie.values()) for (const a of new Set(addrs)) if (owner.has(a)) holders.set(a, (holders.get(a) ?? 0) + 1);
  const out = new Map<bigint, string>();
  for (const [cookie, addrs] of byCookie) {
    const mine = [...new Set(addrs)].filter((a) => owner.has(a));
    if (!mine.length) continue;
    const owners = new Set(mine.map((a) => owner.get(a)!));
    if (owners.size !== 1 || mine.some((a) => holders.get(a) !== 1)) continue;
    out.set(cookie, [...owners][0]);
  }
  return out;
}
