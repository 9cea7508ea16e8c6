// envoy.service.discovery.v3.AggregatedDiscoveryService for @grpc/grpc-js, built from the shared
// protobufjs Root rather than through @grpc/proto-loader, so the client and the server see the
// same message classes as json.ts (one decode of the Any payloads, no second copy of the protos).
//
// Messages cross this boundary in protobufjs's keepCase object form (snake_case field names, Any as
// { type_url, value }): the shapes below. Decoded messages carry proto3 defaults on their prototype
// ('' strings, [] lists), so reading an absent field gives its default.

import type * as grpc from '@grpc/grpc-js';
import type * as protobuf from 'protobufjs';
import { messageType } from './load';

export const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService';
export const SOTW_METHOD = `/${ADS_SERVICE}/StreamAggregatedResources`;
export const DELTA_METHOD = `/${ADS_SERVICE}/DeltaAggregatedResources`;

export interface AnyMsg {
  type_url: string;
  value: Uint8Array;
}

/** google.rpc.Status, as carried in error_detail. */
export interface StatusMsg {
  code?: number;
  message?: string;
  details?: AnyMsg[];
}

export interface DiscoveryRequestMsg {
  version_info?: string;
  /** envoy.config.core.v3.Node, as a protobufjs message (build it with fromProto3Json). */
  node?: protobuf.Message | Record<string, unknown> | null;
  resource_names?: string[];
  type_url?: string;
  response_nonce?: string;
  error_detail?: StatusMsg | null;
}

export interface DiscoveryResponseMsg {
  version_info?: string;
  resources?: AnyMsg[];
  type_url?: string;
  nonce?: string;
  control_plane?: { identifier?: string } | null;
}

export interface DeltaDiscoveryRequestMsg {
  node?: protobuf.Message | Record<string, unknown> | null;
  type_url?: string;
  resource_names_subscribe?: string[];
  resource_names_unsubscribe?: string[];
  initial_resource_versions?: Record<string, string>;
  response_nonce?: string;
  error_detail?: StatusMsg | null;
}

/** envoy.service.discovery.v3.Resource */
export interface ResourceMsg {
  name?: string;
  aliases?: string[];
  version?: string;
  resource?: AnyMsg | null;
}

export interface DeltaDiscoveryResponseMsg {
  system_version_info?: string;
  resources?: ResourceMsg[];
  type_url?: string;
  removed_resources?: string[];
  nonce?: string;
  control_plane?: { identifier?: string } | null;
}

function codec<T>(typeName: string): { serialize: (m: T) => Buffer; deserialize: (b: Buffer) => T } {
  const t = messageType(typeName);
  return {
    serialize: (m: T) => Buffer.from(t.encode(t.fromObject(m as Record<string, unknown>)).finish()),
    deserialize: (b: Buffer) => t.decode(b) as unknown as T,
  };
}

let def: grpc.ServiceDefinition | undefined;

/** The service definition, usable with grpc.Server#addService and for client method paths. */
export function adsServiceDefinition(): grpc.ServiceDefinition {
  if (def) return def;
  const req = codec<DiscoveryRequestMsg>('envoy.service.discovery.v3.DiscoveryRequest');
  const res = codec<DiscoveryResponseMsg>('envoy.service.discovery.v3.DiscoveryResponse');
  const dreq = codec<DeltaDiscoveryRequestMsg>('envoy.service.discovery.v3.DeltaDiscoveryRequest');
  const dres = codec<DeltaDiscoveryResponseMsg>('envoy.service.discovery.v3.DeltaDiscoveryResponse');
  def = {
    StreamAggregatedResources: {
      path: SOTW_METHOD,
      requestStream: true,
      responseStream: true,
      requestSerialize: req.serialize,
      requestDeserialize: req.deserialize,
      responseSerialize: res.serialize,
      responseDeserialize: res.deserialize,
      originalName: 'streamAggregatedResources',
    },
    DeltaAggregatedResources: {
      path: DELTA_METHOD,
      requestStream: true,
      responseStream: true,
      requestSerialize: dreq.serialize,
      requestDeserialize: dreq.deserialize,
      responseSerialize: dres.serialize,
      responseDeserialize: dres.deserialize,
      originalName: 'deltaAggregatedResources',
    },
  } as grpc.ServiceDefinition;
  return def;
}

/** google.rpc.Code INVALID_ARGUMENT, the code of a NACK's error_detail. */
export const CODE_INVALID_ARGUMENT = 3;
