// The model from the Kubernetes API: this node's enrolled pods become workloads; Services and
// EndpointSlices become services and endpoints when `services` is on (the agent turns it on when
// no control plane supplies them). Each collection is mirrored by a Reflector (list, then watch
// with bookmarks, 410 → re-list); any change schedules one recomputation of the whole model
// (debounced), and an 'update' is emitted only when the model's canonical JSON changed.
import { EventEmitter } from 'node:events';
import { KubeConfig, type KubeConfigLike } from './client-node';
import type { Logger } from '../../../core/log';
import type { ModelSource, ModelSourceEvents, SourceSnapshot } from '../source';
import type { CgroupDriver } from './cgroup';
import { canonicalJson, deriveModel, type Derived, type LocalPod, type Warning } from './derive';
import { parseEnrollment, type Enrollment, type EnrollmentOptions } from './enrollment';
import { KubernetesSourceError } from '../../../core/errors';
import { ClientNodeApi, statusCodeOf, type KubeApi } from './kube-api';
import type { EndpointSlice, KubeObject, Namespace, Pod, Service } from './objects';
import { Reflector, type ReflectorOptions, type ReflectorStats } from './reflector';

export interface KubernetesSourceOptions {
  /** Default: `loadFromDefault()` — $KUBECONFIG, ~/.kube/config, else the in-cluster service account. */
  kubeConfig?: KubeConfigLike;
  /** This node's name (the pod field selector `spec.nodeName=`; set from the downward API). */
  nodeName: string;
  enrollment?: EnrollmentOptions;
  /** Watch Services and EndpointSlices and derive services/endpoints (true when no control plane is configured). */
  services: boolean;
  /** cgroup v2 mount (default /sys/fs/cgroup), for pod cgroups; see cgroup.ts. */
  cgroupRoot?: string;
  /** The kubelet's cgroup driver (default `auto`); `none` turns the cgroup mapping off. */
  cgroupDriver?: CgroupDriver | 'none';
  log: Logger;
  /** Coalesce changes arriving within this many ms into one recomputation (default 100). */
  debounceMs?: number;
  /** start() rejects when the initial lists have not all succeeded by then (default 60 s). */
  syncTimeoutMs?: number;
  /** Reflector tuning; see reflector.ts. */
  backoff?: ReflectorOptions['backoff'];
  watchTimeoutSeconds?: ReflectorOptions['watchTimeoutSeconds'];
  pageSize?: number;
  /** Replaces the HTTP layer (default: ClientNodeApi over kubeConfig). */
  api?: KubeApi;
}

/** What is watched, with which selectors (README.md and the RBAC rules follow this table). */
export function watchedResources(nodeName: string, services: boolean): Array<{ name: string; path: string; fieldSelector?: string; labelSelector?: string }> {
  const r: Array<{ name: string; path: string; fieldSelector?: string; labelSelector?: string }> = [
    { name: 'namespaces', path: '/api/v1/namespaces' },
    { name: 'pods', path: '/api/v1/pods', fieldSelector: `spec.nodeName=${nodeName}` },
  ];
  if (services) {
    // As kube-proxy: services another proxy implementation claims are not ours, and headless
    // services' slices have nothing to translate.
    r.push({ name: 'services', path: '/api/v1/services', labelSelector: '!service.kubernetes.io/service-proxy-name' });
    r.push({
      name: 'endpointslices',
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      labelSelector: 'kubernetes.io/service-name,!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name',
    });
  }
  return r;
}

export interface KubernetesSourceState {
  synced: boolean;
  resources: Record<string, ReflectorStats>;
  updates: number;
}

export class KubernetesSource extends EventEmitter<ModelSourceEvents> implements ModelSource {
  readonly description: string;
  private readonly enrollment: Enrollment;
  private readonly api: KubeApi;
  private readonly reflectors = new Map<string, Reflector<KubeObject>>();
  private derived?: Derived;
  private lastJson = '';
  private lastWarnings = new Set<string>();
  private timer?: NodeJS.Timeout;
  private started = false;
  private stopped = false;
  private updates = 0;
  private abortStart?: (e: Error) => void;

  constructor(private readonly o: KubernetesSourceOptions) {
    super();
    if (!o.nodeName) throw new KubernetesSourceError('SM_K8S_OPTIONS', 'kubernetes source: nodeName is required (the pod field selector spec.nodeName=)');
    this.enrollment = parseEnrollment(o.enrollment);
    let server = '(custom api)';
    if (o.api) {
      this.api = o.api;
    } else {
      let kc = o.kubeConfig;
      if (!kc) {
        kc = new KubeConfig();
        kc.loadFromDefault();
      }
      server = kc.getCurrentCluster()?.server ?? '?';
      this.api = new ClientNodeApi(kc);
    }
    this.description = `kubernetes ${server} node ${o.nodeName}${o.services ? ' (pods, services)' : ' (pods)'}`;
    for (const r of watchedResources(o.nodeName, o.services)) {
      this.reflectors.set(
        r.name,
        new Reflector<KubeObject>({
          ...r,
          api: this.api,
          log: o.log,
          onChange: () => this.changed(),
          backoff: o.backoff,
          watchTimeoutSeconds: o.watchTimeoutSeconds,
          pageSize: o.pageSize,
        }),
      );
    }
  }

  async start(): Promise<SourceSnapshot> {
    const syncMs = this.o.syncTimeoutMs ?? 60_000;
    let timeout: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        this.abortStart = reject;
        timeout = setTimeout(() => {
          const waiting = [...this.reflectors].filter(([, r]) => !r.state().synced);
          const errs = waiting.map(([n, r]) => `${n}: ${r.state().lastError ?? 'no answer'}`).join('; ');
          reject(new KubernetesSourceError('SM_K8S_SYNC_TIMEOUT', `kubernetes: initial lists not done after ${syncMs} ms (${errs})`, { details: { waiting: waiting.map(([n]) => n) } }));
        }, syncMs);
        Promise.all([...this.reflectors].map(([name, r]) => r.start().catch((e: unknown) => Promise.reject(this.listError(name, e))))).then(() => resolve(), reject);
      });
    } catch (e) {
      this.stop();
      throw e;
    } finally {
      clearTimeout(timeout);
      this.abortStart = undefined;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.recompute();
    this.started = true;
    this.o.log.info('kubernetes source synced', { ...this.counts(), node: this.o.nodeName });
    return { model: this.derived!.model, nodeName: this.o.nodeName };
  }

  stop(): void {
    this.stopped = true;
    for (const r of this.reflectors.values()) r.stop();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.abortStart?.(new Error('kubernetes source stopped before its initial sync'));
  }

  /** Enrolled local pods by workload uid, with QoS class and cgroup directory (when resolved). */
  podCgroups(): Map<string, LocalPod> {
    return new Map((this.derived?.pods ?? []).map((p) => [p.uid, p]));
  }

  /** What the current model leaves out, and why. */
  warnings(): Warning[] {
    return [...(this.derived?.warnings ?? [])];
  }

  state(): KubernetesSourceState {
    return {
      synced: this.started,
      resources: Object.fromEntries([...this.reflectors].map(([n, r]) => [n, r.state()])),
      updates: this.updates,
    };
  }

  private listError(name: string, e: unknown): Error {
    const code = statusCodeOf(e);
    const r = watchedResources(this.o.nodeName, this.o.services).find((x) => x.name === name)!;
    if (code === 403) {
      return new KubernetesSourceError('SM_K8S_FORBIDDEN', `kubernetes: not allowed to list ${name} (${r.path}); the agent's ClusterRole needs list and watch on it (see mesh-agent/sources/kubernetes/README.md)`, {
        cause: e,
        details: { resource: name, path: r.path },
      });
    }
    if (code === 401) return new KubernetesSourceError('SM_K8S_UNAUTHORIZED', `kubernetes: the API server rejected our credentials listing ${name}`, { cause: e });
    return e instanceof Error ? e : new Error(String(e));
  }

  private counts(): Record<string, number> {
    const m = this.derived?.model;
    return { workloads: m?.workloads.length ?? 0, services: m?.services.length ?? 0, endpoints: m?.endpoints.length ?? 0, warnings: this.derived?.warnings.length ?? 0 };
  }

  private changed(): void {
    if (!this.started || this.stopped || this.timer) return; // before the initial sync, start() computes once
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.stopped) this.recompute();
    }, this.o.debounceMs ?? 100);
  }

  private store<T extends KubeObject>(name: string): Iterable<T> {
    return (this.reflectors.get(name)?.store.values() ?? []) as Iterable<T>;
  }

  private recompute(): void {
    const driver = this.o.cgroupDriver ?? 'auto';
    const derived = deriveModel(
      {
        namespaces: this.store<Namespace>('namespaces'),
        pods: this.store<Pod>('pods'),
        services: this.store<Service>('services'),
        endpointSlices: this.store<EndpointSlice>('endpointslices'),
      },
      {
        nodeName: this.o.nodeName,
        enrollment: this.enrollment,
        services: this.o.services,
        cgroup: driver === 'none' ? false : { cgroupRoot: this.o.cgroupRoot, driver },
      },
    );
    this.derived = derived;
    const now = new Set(derived.warnings.map((w) => `${w.resource}: ${w.reason}`));
    for (const w of derived.warnings) {
      if (!this.lastWarnings.has(`${w.resource}: ${w.reason}`)) this.o.log.warn('kubernetes: left out of the datapath', { resource: w.resource, reason: w.reason });
    }
    this.lastWarnings = now;
    const json = canonicalJson(derived.model);
    if (json === this.lastJson) return;
    this.lastJson = json;
    if (!this.started) return; // the initial model is start()'s result
    this.updates++;
    this.o.log.info('kubernetes model changed', this.counts());
    this.emit('update', { model: derived.model, nodeName: this.o.nodeName });
  }
}
