// The xDS client: ADS over @grpc/grpc-js, State of the World or Delta.
export {
  XdsClient,
  type XdsClientOptions,
  type XdsClientEvents,
  type XdsMode,
  type XdsNack,
  type XdsSnapshot,
  type XdsTypeState,
  type XdsUpdate,
} from './xds-client';
export { istioNode, istioNodeId, nodeToJson, type IstioNodeIdParts, type IstioNodeOptions, type IstioProxyType, type NodeIdentity } from './node-id';
export { Backoff, type BackoffOptions } from './backoff';
export { edsNameOfCluster, rdsNamesOfListener } from './dependencies';
