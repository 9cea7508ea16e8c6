// Which pods are meshed. A pod is enrolled when its namespace or the pod itself carries an
// enrollment label (Istio ambient's `istio.io/dataplane-mode=ambient`, so a cluster migrates from
// ztunnel namespace by namespace with the labels it already has, or our own
// `sockmesh.io/mesh=enabled`), unless the pod opts out (`istio.io/dataplane-mode=none`, Istio's
// opt-out, or `sockmesh.io/mesh=disabled`). The pod's own labels win over its namespace's.
import { KubernetesSourceError } from '../../../core/errors';

export interface EnrollmentOptions {
  /** `key=value` that enrolls a namespace (or a pod); default `istio.io/dataplane-mode=ambient`. */
  namespaceLabel?: string;
  /** Our own `key=value`, honoured on namespaces and pods; default `sockmesh.io/mesh=enabled`. */
  ourLabel?: string;
  /**
   * `key=value` labels that opt a pod (or a namespace) out; default `<namespaceLabel key>=none`
   * and `<ourLabel key>=disabled`.
   */
  optOutLabels?: string[];
}

export interface LabelMatch {
  key: string;
  value: string;
  text: string;
}

export interface Enrollment {
  enroll: LabelMatch[];
  optOut: LabelMatch[];
}

export const DEFAULT_NAMESPACE_LABEL = 'istio.io/dataplane-mode=ambient';
export const DEFAULT_OUR_LABEL = 'sockmesh.io/mesh=enabled';

// A qualified label key (optional DNS-subdomain prefix + name) and a label value, as the API
// server validates them.
const NAME = '[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?';
const KEY_RE = new RegExp(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?${NAME}$`);
const VALUE_RE = new RegExp(`^(${NAME})?$`);

export function parseLabel(text: string, what: string): LabelMatch {
  const eq = text.indexOf('=');
  const key = eq < 0 ? '' : text.slice(0, eq);
  const value = eq < 0 ? '' : text.slice(eq + 1);
  if (eq < 0 || !KEY_RE.test(key) || key.length > 317 || !VALUE_RE.test(value) || value.length > 63) {
    throw new KubernetesSourceError('SM_K8S_OPTIONS', `${what}: "${text}" is not a label key=value (e.g. ${DEFAULT_OUR_LABEL})`);
  }
  return { key, value, text };
}

export function parseEnrollment(o: EnrollmentOptions = {}): Enrollment {
  const ns = parseLabel(o.namespaceLabel ?? DEFAULT_NAMESPACE_LABEL, 'enrollment.namespaceLabel');
  const ours = parseLabel(o.ourLabel ?? DEFAULT_OUR_LABEL, 'enrollment.ourLabel');
  const optOut = (o.optOutLabels ?? [`${ns.key}=none`, `${ours.key}=disabled`]).map((t, i) => parseLabel(t, `enrollment.optOutLabels[${i}]`));
  for (const m of optOut) {
    if ([ns, ours].some((e) => e.key === m.key && e.value === m.value)) {
      throw new KubernetesSourceError('SM_K8S_OPTIONS', `enrollment: "${m.text}" is both an enrollment and an opt-out label`);
    }
  }
  return { enroll: [ns, ours], optOut };
}

function firstMatch(labels: Record<string, string> | undefined, ms: LabelMatch[]): LabelMatch | undefined {
  if (!labels) return undefined;
  return ms.find((m) => labels[m.key] === m.value);
}

export type EnrollmentDecision = { enrolled: true; by: string } | { enrolled: false; why: string };

/**
 * Decides one pod: its own opt-out, then its own enrollment label, then its namespace's opt-out,
 * then its namespace's enrollment label.
 */
export function decideEnrollment(
  podLabels: Record<string, string> | undefined,
  namespaceLabels: Record<string, string> | undefined,
  e: Enrollment,
): EnrollmentDecision {
  const podOut = firstMatch(podLabels, e.optOut);
  if (podOut) return { enrolled: false, why: `pod label ${podOut.text}` };
  const podIn = firstMatch(podLabels, e.enroll);
  if (podIn) return { enrolled: true, by: `pod label ${podIn.text}` };
  const nsOut = firstMatch(namespaceLabels, e.optOut);
  if (nsOut) return { enrolled: false, why: `namespace label ${nsOut.text}` };
  const nsIn = firstMatch(namespaceLabels, e.enroll);
  if (nsIn) return { enrolled: true, by: `namespace label ${nsIn.text}` };
  return { enrolled: false, why: 'no enrollment label on the pod or its namespace' };
}
