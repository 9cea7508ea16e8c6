// The local control plane: an ADS server (SotW + Delta) serving snapshots, and the sockmesh
// config file mapped to Envoy and ambient resources.
export { AdsServer, parseListenAddress, type AdsServerEvents, type AdsServerOptions } from './ads-server';
export { Snapshot, type ServedResource, type SnapshotEntry } from './snapshot';
export type { NackRecord, ResponseRecord, StreamInfo, TypeStreamInfo } from './stream-base';
export { Subscription } from './subscription';
export {
  modelToXds,
  outboundClusterName,
  serviceHostname,
  endpointServesPort,
  SYNTHETIC_WORKLOAD_UID_PREFIX,
  type JsonResource,
  type ModelToXdsOptions,
} from './model-to-xds';
export { parseControlPlaneText, loadControlPlaneFile, type ControlPlaneConfig, type ExtraResource } from './config-file';
export { FileWatch, type FileWatchOptions } from '../../config/file-watch';
export { startControlPlane, runControlPlaneCli, controlPlaneEntries, DEFAULT_LISTEN, type ControlPlane, type ControlPlaneOptions } from './control-plane';
