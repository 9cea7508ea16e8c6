// Where the datapath lives on the host, and what it is made of: the bpffs layout of the pins, the
// object files and the names of their maps. The agent creates these; the proxy, the CLI and the
// benchmarks open them. Map names mirror the map definitions in bpf/include/maps.h.
//
// Layout under the bpffs directory (default /sys/fs/bpf/sockmesh):
//   maps/<map name>    every map, pinned by libbpf (LIBBPF_PIN_BY_NAME) and reused on the next load
//   links/<prog name>  one pinned bpf_link per cgroup program
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DatapathError } from '../core/errors';

export const DEFAULT_BPFFS_DIR = '/sys/fs/bpf/sockmesh';

export const OBJECTS = ['sock_lb.bpf.o', 'sock_redir.bpf.o', 'skb_policy.bpf.o', 'sock_create.bpf.o'] as const;

export type MapName =
  | 'sm_services'
  | 'sm_backends'
  | 'sm_revnat'
  | 'sm_revnat_pods'
  | 'sm_local_netns'
  | 'sm_local_eps'
  | 'sm_sockhash'
  | 'sm_sock_state'
  | 'sm_udp_flows'
  | 'sm_counters'
  | 'sm_config'
  | 'sm_steer'
  | 'sm_l7_ready'
  | 'sm_ip_identity'
  | 'sm_cgroup_identity'
  | 'sm_identities'
  | 'sm_netns_identity'
  | 'sm_policy_dst'
  | 'sm_policy'
  | 'sm_rcu_sync';

export const MAP_NAMES: readonly MapName[] = [
  'sm_services',
  'sm_backends',
  'sm_revnat',
  'sm_revnat_pods',
  'sm_local_netns',
  'sm_local_eps',
  'sm_sockhash',
  'sm_sock_state',
  'sm_udp_flows',
  'sm_counters',
  'sm_config',
  'sm_steer',
  'sm_l7_ready',
  'sm_ip_identity',
  'sm_cgroup_identity',
  'sm_identities',
  'sm_netns_identity',
  'sm_policy_dst',
  'sm_policy',
  'sm_rcu_sync',
];

/** Maps whose capacity an operator may set (settings `mapSizes`). */
export const SIZABLE_MAPS: readonly MapName[] = [
  'sm_services',
  'sm_backends',
  'sm_revnat',
  'sm_revnat_pods',
  'sm_local_netns',
  'sm_local_eps',
  'sm_sockhash',
  'sm_udp_flows',
  'sm_steer',
  'sm_l7_ready',
  'sm_ip_identity',
  'sm_cgroup_identity',
  'sm_identities',
  'sm_netns_identity',
  'sm_policy_dst',
  'sm_policy',
];

/** Where the maps of the datapath pinned at `bpffsDir` are. */
export function mapsDir(bpffsDir: string): string {
  return path.join(bpffsDir, 'maps');
}

/** Where the links of the datapath pinned at `bpffsDir` are. */
export function linksDir(bpffsDir: string): string {
  return path.join(bpffsDir, 'links');
}

/** The pin of one map of the datapath at `bpffsDir`. */
export function mapPin(bpffsDir: string, name: MapName): string {
  return path.join(mapsDir(bpffsDir), name);
}

/** The cgroup2 mount point, from /proc/mounts (it is not always /sys/fs/cgroup). */
export function findCgroup2Mount(): string {
  for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[2] === 'cgroup2') return f[1].replace(/\\040/g, ' ');
  }
  throw new DatapathError('SM_NOT_CGROUP2', 'no cgroup2 filesystem is mounted (see /proc/mounts)');
}
