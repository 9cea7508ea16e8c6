// A pod's cgroup v2 directory, as the kubelet names it. The datapath tells callers of connect()
// apart by cgroup, so the agent needs pod → cgroup; the pod spec does not say, but the kubelet's
// naming is fixed (pkg/kubelet/cm: the pod container name is "pod" + uid under its QoS class's
// parent, and Guaranteed pods sit directly under kubepods):
//
//   systemd driver:  kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice
//                    kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice
//                    kubepods.slice/kubepods-pod<uid>.slice                  (Guaranteed)
//                    with the uid's '-' written '_' ('-' separates levels in slice names)
//   cgroupfs driver: kubepods/burstable/pod<uid>, kubepods/besteffort/pod<uid>, kubepods/pod<uid>
//
// Assumes the kubelet's default --cgroup-root (/). For a kubelet with another root and the cgroupfs
// driver, pass <mount>/<root> as cgroupRoot; with the systemd driver such a root also prefixes
// every slice name (kind: kubelet.slice/kubelet-kubepods.slice/...), which is not handled.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Container, Pod } from './objects';

export type QosClass = 'Guaranteed' | 'Burstable' | 'BestEffort';
export type CgroupDriver = 'systemd' | 'cgroupfs' | 'auto';

export const DEFAULT_CGROUP_ROOT = '/sys/fs/cgroup';

/** A static pod's mirror carries the kubelet's own uid for it (the config hash) in this annotation. */
const MIRROR_ANNOTATION = 'kubernetes.io/config.mirror';

/** The uid the kubelet knows the pod by (for a mirror pod, not the API server's metadata.uid). */
export function kubeletPodUid(pod: Pod): string | undefined {
  return pod.metadata?.annotations?.[MIRROR_ANNOTATION] || pod.metadata?.uid || undefined;
}

// --- QoS class -----------------------------------------------------------------------------------

/** A resource quantity as an exact rational (num/den), enough to compare requests with limits. */
function quantity(v: string | number): { num: bigint; den: bigint } | undefined {
  const s = String(v).trim();
  const m = /^([+-]?)(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$/.exec(s);
  if (!m) return undefined;
  const [intPart, frac = ''] = m[2].split('.');
  let num = BigInt((intPart || '0') + frac) * (m[1] === '-' ? -1n : 1n);
  let den = 10n ** BigInt(frac.length);
  const suf = m[3] ?? '';
  const bin: Record<string, number> = { Ki: 10, Mi: 20, Gi: 30, Ti: 40, Pi: 50, Ei: 60 };
  const dec: Record<string, number> = { n: -9, u: -6, m: -3, k: 3, M: 6, G: 9, T: 12, P: 15, E: 18 };
  let exp = 0;
  if (suf in bin) num *= 2n ** BigInt(bin[suf]);
  else if (suf in dec) exp = dec[suf];
  else if (suf) exp = Number(suf.slice(1));
  if (exp >= 0) num *= 10n ** BigInt(exp);
  else den *= 10n ** BigInt(-exp);
  return { num, den };
}

function sameQuantity(a: string | number, b: string | number): boolean {
  const x = quantity(a);
  const y = quantity(b);
  return !!x && !!y && x.num * y.den === y.num * x.den;
}

const QOS_RESOURCES = ['cpu', 'memory'];

/**
 * The pod's QoS class: status.qosClass, which the API server sets at creation; else computed as
 * the kubelet does (pkg/apis/core/helper/qos): BestEffort when no container requests or limits
 * cpu or memory, Guaranteed when every container limits both and its requests (defaulting to the
 * limits) equal them, Burstable otherwise.
 */
export function podQosClass(pod: Pod): QosClass {
  const q = pod.status?.qosClass;
  if (q === 'Guaranteed' || q === 'Burstable' || q === 'BestEffort') return q;
  const containers: Container[] = [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])];
  let any = false;
  let guaranteed = containers.length > 0;
  for (const c of containers) {
    const req = c.resources?.requests ?? {};
    const lim = c.resources?.limits ?? {};
    for (const r of QOS_RESOURCES) {
      const has = (o: Record<string, string | number>) => o[r] !== undefined && quantity(o[r])?.num !== 0n;
      if (has(req) || has(lim)) any = true;
      if (!has(lim)) guaranteed = false;
      else if (req[r] !== undefined && !sameQuantity(req[r], lim[r])) guaranteed = false;
    }
  }
  if (!any) return 'BestEffort';
  return guaranteed ? 'Guaranteed' : 'Burstable';
}

// --- paths -----------------------------------------------------------------------------------------

/** The pod's directory relative to the cgroup root, for one driver. */
export function podCgroupRelative(uid: string, qos: QosClass, driver: 'systemd' | 'cgroupfs'): string {
  if (driver === 'systemd') {
    const u = uid.replace(/-/g, '_');
    if (qos === 'Guaranteed') return `kubepods.slice/kubepods-pod${u}.slice`;
    const cls = qos.toLowerCase();
    return `kubepods.slice/kubepods-${cls}.slice/kubepods-${cls}-pod${u}.slice`;
  }
  if (qos === 'Guaranteed') return `kubepods/pod${uid}`;
  return `kubepods/${qos.toLowerCase()}/pod${uid}`;
}

export interface CgroupOptions {
  /** Where the cgroup v2 hierarchy is mounted (default /sys/fs/cgroup). */
  cgroupRoot?: string;
  /** The kubelet's cgroup driver; `auto` (default) returns whichever of the two exists on disk. */
  driver?: CgroupDriver;
}

/**
 * The pod's cgroup v2 directory (absolute). With an explicit driver, always the computed path
 * (whether it exists or not); with `auto`, the systemd or cgroupfs path that exists under
 * cgroupRoot, or undefined when neither does (pod not started, or not on this node).
 */
export function podCgroupPath(pod: Pod, opts: { cgroupRoot?: string; driver: 'systemd' | 'cgroupfs' }): string;
export function podCgroupPath(pod: Pod, opts?: CgroupOptions): string | undefined;
export function podCgroupPath(pod: Pod, opts: CgroupOptions = {}): string | undefined {
  const uid = kubeletPodUid(pod);
  if (!uid) return undefined;
  const root = opts.cgroupRoot ?? DEFAULT_CGROUP_ROOT;
  const qos = podQosClass(pod);
  const driver = opts.driver ?? 'auto';
  if (driver !== 'auto') return path.join(root, podCgroupRelative(uid, qos, driver));
  for (const d of ['systemd', 'cgroupfs'] as const) {
    const p = path.join(root, podCgroupRelative(uid, qos, d));
    if (fs.existsSync(p)) return p;
  }
  return undefined;
}

/** Which driver the kubelet on this machine uses, judged by the kubepods directory under cgroupRoot. */
export function detectCgroupDriver(cgroupRoot = DEFAULT_CGROUP_ROOT): 'systemd' | 'cgroupfs' | undefined {
  if (fs.existsSync(path.join(cgroupRoot, 'kubepods.slice'))) return 'systemd';
  if (fs.existsSync(path.join(cgroupRoot, 'kubepods'))) return 'cgroupfs';
  return undefined;
}
