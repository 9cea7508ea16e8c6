// The xDS proto layer: one protobufjs Root (load.ts), proto3 JSON conversion (json.ts), the ADS
// gRPC service definition (ads.ts) and per-type facts (resource-types.ts).
export { PROTO_FILES, protoRoot, protoIncludeDirs, istioProtoDir, findMessageType, messageType, typeNameOf, typeUrlOf } from './load';
export { toProto3Json, fromProto3Json, encodeJson, decodeToJson, decodeMessage, jsonName, lowerCamel, type FromJsonOptions } from './json';
export {
  adsServiceDefinition,
  ADS_SERVICE,
  SOTW_METHOD,
  DELTA_METHOD,
  CODE_INVALID_ARGUMENT,
  type AnyMsg,
  type StatusMsg,
  type DiscoveryRequestMsg,
  type DiscoveryResponseMsg,
  type DeltaDiscoveryRequestMsg,
  type DeltaDiscoveryResponseMsg,
  type ResourceMsg,
} from './ads';
export { SHORT_NAME, WILDCARD_TYPES, FULL_STATE_TYPES, isTypeUrl, resourceName } from './resource-types';
export { XdsError, isXdsError, type XdsErrorCode } from '../../core/errors';
