// Shared guard for tests that need the real kernel datapath. Such tests carry "[kernel]" in their
// names; test/run.ts fails a CI run in which any of them was skipped.
import * as fs from 'node:fs';
import { NetnsScanner } from '../mesh-agent/datapath/netns';

export function kernelUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root';
  if (!fs.existsSync('/sys/kernel/btf/vmlinux') && !fs.existsSync('/proc/sys/kernel/unprivileged_bpf_disabled')) {
    return 'no BPF support visible';
  }
  if (!fs.readFileSync('/proc/mounts', 'utf8').includes(' cgroup2 ')) return 'no cgroup2 mount';
  return null;
}

/** `{ skip }` option for node:test: a reason string when the kernel tests cannot run here. */
export const kernelSkip = (): { skip: string | false } => ({ skip: kernelUnavailable() ?? false });

/**
 * The network namespaces of a sandbox node's meshed pods, as the agent scans them: what
 * desiredState() needs to pair same-node sockets (and to name pods without a known cgroup).
 */
export function podNamespaces(sb: { node(name: string): { cgroupPath: string } }, node = 'node1'): { netns: Map<bigint, string[]>; netnsCgroups: Map<bigint, string[]> } {
  const v = new NetnsScanner(sb.node(node).cgroupPath).scan();
  return { netns: v.byCookie, netnsCgroups: v.cgroups };
}
