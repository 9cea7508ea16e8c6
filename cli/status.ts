// `sockmesh status`: what is attached, how full each map is, and the datapath counters, read
// straight from the pinned kernel objects (no agent needs to be running), and what the running
// kernel can do (probed here, as the agent probes it at start).
import { NO_USAGE_MAPS } from '../mesh-agent/metrics';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { type KernelFeatures, probeFeatures } from '../mesh-agent/datapath/features';
import { DEFAULT_BPFFS_DIR, MAP_NAMES } from '../abi/pins';

export interface StatusReport {
  bpffsDir: string;
  programs: Array<{ name: string; attachType: string; progId: number; linkId?: number; tag: string }>;
  maps: Array<{ name: string; entries: number | null; capacity: number; usage: number | null }>;
  counters: Record<string, string>;
  kernel: KernelFeatures;
}


export function readStatus(bpffsDir = DEFAULT_BPFFS_DIR): StatusReport {
  const dp = Datapath.openPinned(bpffsDir);
  try {
    const maps = MAP_NAMES.map((name) => {
      const m = dp.maps[name];
      const entries = NO_USAGE_MAPS.has(name) ? null : m.count();
      const capacity = m.maxEntries;
      return { name, entries, capacity, usage: entries === null || !capacity ? null : entries / capacity };
    });
    const counters = Object.fromEntries(Object.entries(dp.counters()).map(([k, v]) => [k, v.toString()]));
    return { bpffsDir, programs: dp.programs, maps, counters, kernel: probeFeatures() };
  } finally {
    dp.close();
  }
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}

export function formatStatus(s: StatusReport): string {
  const out: string[] = [`datapath pinned at ${s.bpffsDir}`, '', 'PROGRAMS'];
  out.push(
    table([
      ['NAME', 'ATTACH', 'PROG ID', 'LINK ID', 'TAG'],
      ...s.programs.map((p) => [p.name, p.attachType, String(p.progId), p.linkId === undefined ? '-' : String(p.linkId), p.tag]),
    ]),
  );
  out.push('', 'MAPS');
  out.push(
    table([
      ['NAME', 'ENTRIES', 'CAPACITY', 'USAGE'],
      ...s.maps.map((m) => [
        m.name,
        m.entries === null ? '-' : String(m.entries),
        m.capacity ? String(m.capacity) : '-',
        m.usage === null ? '-' : `${(m.usage * 100).toFixed(1)}%`,
      ]),
    ]),
  );
  out.push('', 'COUNTERS');
  out.push(table([['COUNTER', 'VALUE'], ...Object.entries(s.counters).map(([k, v]) => [k, v])]));
  out.push('', `KERNEL FEATURES (Linux ${s.kernel.kernel})`);
  out.push(
    table([
      ['FEATURE', 'PRESENT', 'NEEDED', 'SINCE', 'WITHOUT IT'],
      ...s.kernel.features.map((f) => [
        f.name,
        f.present ? 'yes' : f.off ? 'off' : f.error ? 'probe failed' : 'no',
        f.required ? 'required' : 'optional',
        f.since ?? '-',
        f.required ? 'the agent refuses to start' : (f.fallback ?? '-'),
      ]),
    ]),
  );
  return out.join('\n');
}
