// The subset of Kubernetes API objects this source reads, as they arrive on the wire (JSON from a
// list or a watch event). Deliberately not @kubernetes/client-node's generated classes: those are
// what its ObjectSerializer produces (Dates, `_continue`), while we parse the raw JSON ourselves so
// that list and watch objects have one shape. Field names and meanings are the core/v1 and
// discovery.k8s.io/v1 ones.

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
}

export interface Container {
  name?: string;
  resources?: { requests?: Record<string, string | number>; limits?: Record<string, string | number> };
}

export interface Pod extends KubeObject {
  spec?: {
    nodeName?: string;
    serviceAccountName?: string;
    /** Deprecated alias of serviceAccountName, still filled in by the API server. */
    serviceAccount?: string;
    hostNetwork?: boolean;
    containers?: Container[];
    initContainers?: Container[];
  };
  status?: {
    phase?: string;
    podIP?: string;
    podIPs?: Array<{ ip?: string }>;
    qosClass?: string;
    conditions?: Array<{ type?: string; status?: string }>;
  };
}

export type Namespace = KubeObject;

export interface ServicePortSpec {
  name?: string;
  port?: number;
  protocol?: string;
  /** A number, or the name of a container port (resolved per pod, visible in EndpointSlices). */
  targetPort?: number | string;
}

export interface Service extends KubeObject {
  spec?: {
    type?: string;
    clusterIP?: string;
    clusterIPs?: string[];
    ports?: ServicePortSpec[];
    sessionAffinity?: string;
    internalTrafficPolicy?: string;
    externalName?: string;
  };
}

export interface EndpointSliceEndpoint {
  addresses?: string[];
  conditions?: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null };
  nodeName?: string;
  zone?: string;
  targetRef?: { kind?: string; namespace?: string; name?: string; uid?: string };
}

export interface EndpointSlice extends KubeObject {
  addressType?: string;
  endpoints?: EndpointSliceEndpoint[] | null;
  /** `name` is the Service port's name; `port` the resolved backend port for these endpoints. */
  ports?: Array<{ name?: string | null; port?: number | null; protocol?: string | null }> | null;
}

/** metav1.Status, as an HTTP error body or the object of a watch ERROR event. */
export interface Status extends KubeObject {
  status?: string;
  message?: string;
  reason?: string;
  code?: number;
}

export interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T;
}

export function objectKey(o: KubeObject): string {
  const m = o.metadata ?? {};
  return m.namespace ? `${m.namespace}/${m.name ?? ''}` : (m.name ?? '');
}
