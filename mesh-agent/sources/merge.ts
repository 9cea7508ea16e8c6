// One model from two sources: a control plane (or the local file) for services, endpoints and
// policy, and the Kubernetes API for this node's pods (their enrolment, IPs and cgroups).
//
// Workloads from Kubernetes win for the pods they describe (they carry the cgroup the datapath needs
// to know who is calling connect()); workloads only the control plane knows (remote pods) are kept,
// so identities of remote sources are known too. A pod Kubernetes does not enrol stays out, even if
// the control plane lists it as local, so that a cluster can migrate namespace by namespace.
import { EventEmitter } from 'node:events';
import type { Model, Workload } from '../../core/model';
import type { ModelSource, ModelSourceEvents, SourceSnapshot } from './source';

const key = (w: Workload) => `${w.namespace}/${w.name}`;

export function mergeModels(primary: Model, pods: Model, nodeName: string | undefined): Model {
  const local = new Map(pods.workloads.map((w) => [key(w), w]));
  const localIps = new Set(pods.workloads.flatMap((w) => w.ips));
  const workloads: Workload[] = [];
  for (const w of primary.workloads) {
    if (local.has(key(w))) continue; // Kubernetes' view of this pod replaces it below
    // The control plane may call a pod of this node local although it is not enrolled here: keep
    // it only as a remote identity (no node), so the datapath does not treat it as meshed.
    const onThisNode = nodeName !== undefined && w.node === nodeName;
    if (onThisNode && !w.ips.some((ip) => localIps.has(ip))) workloads.push({ ...w, node: undefined });
    else if (!w.ips.some((ip) => localIps.has(ip))) workloads.push(w);
  }
  workloads.push(...local.values());
  return {
    services: primary.services.length ? primary.services : pods.services,
    endpoints: primary.services.length ? primary.endpoints : pods.endpoints,
    workloads,
    ...(primary.policies ? { policies: primary.policies } : {}),
  };
}

export class MergedSource extends EventEmitter<ModelSourceEvents> implements ModelSource {
  readonly description: string;
  private last: { primary?: SourceSnapshot; pods?: SourceSnapshot } = {};

  constructor(
    private readonly primary: ModelSource,
    private readonly pods: ModelSource,
    private readonly nodeName?: string,
  ) {
    super();
    this.description = `${primary.description} + ${pods.description}`;
  }

  private merged(): SourceSnapshot {
    const p = this.last.primary!;
    const k = this.last.pods!;
    const nodeName = this.nodeName ?? p.nodeName ?? k.nodeName;
    return { model: mergeModels(p.model, k.model, nodeName), ...(nodeName ? { nodeName } : {}) };
  }

  async start(): Promise<SourceSnapshot> {
    const [p, k] = await Promise.all([this.primary.start(), this.pods.start()]);
    this.last = { primary: p, pods: k };
    this.primary.on('update', (s) => {
      this.last.primary = s;
      this.emit('update', this.merged());
    });
    this.pods.on('update', (s) => {
      this.last.pods = s;
      this.emit('update', this.merged());
    });
    this.primary.on('invalid', (e) => this.emit('invalid', e));
    this.pods.on('invalid', (e) => this.emit('invalid', e));
    return this.merged();
  }

  stop(): void {
    this.primary.stop();
    this.pods.stop();
  }
}
