// The Kubernetes config source (see README.md).
export { KubernetesSource, watchedResources, type KubernetesSourceOptions, type KubernetesSourceState } from './kubernetes-source';
export { podCgroupPath, podCgroupRelative, podQosClass, kubeletPodUid, detectCgroupDriver, DEFAULT_CGROUP_ROOT, type CgroupDriver, type CgroupOptions, type QosClass } from './cgroup';
export { deriveModel, canonicalJson, type ClusterView, type DeriveOptions, type Derived, type LocalPod, type Warning, type K8sWorkload } from './derive';
export { parseEnrollment, decideEnrollment, DEFAULT_NAMESPACE_LABEL, DEFAULT_OUR_LABEL, type Enrollment, type EnrollmentOptions, type EnrollmentDecision } from './enrollment';
export { KubernetesSourceError, type KubernetesErrorCode } from '../../../core/errors';
export { ClientNodeApi, type KubeApi, type ListPage, type WatchHandle } from './kube-api';
export { Reflector, type ReflectorOptions, type ReflectorStats } from './reflector';
export { KubeConfig, kubeConfigFor, type KubeConfigLike } from './client-node';
export type * from './objects';
