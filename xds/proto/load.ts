// The one protobufjs Root of the xDS layer: Envoy's v3 API (the parts a mesh datapath reads, plus
// the extensions that Istio's config dumps carry inside Any fields) and Istio's ambient types.
//
// Sources: Envoy/xDS/googleapis/PGV .proto files vendored by @grpc/grpc-js-xds under deps/, the
// google/protobuf well-known types bundled with protobufjs, and our own istio/*.proto next to this
// file. Parsed once, on first use (~0.4 s), with keepCase so field names are the .proto names;
// json.ts maps them to proto3 JSON names.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import { XdsError } from '../../core/errors';

/** Entry files; their imports are followed. Every message type they reach can appear in an Any. */
export const PROTO_FILES: readonly string[] = [
  // The protocol.
  'envoy/service/discovery/v3/ads.proto',
  'envoy/service/status/v3/csds.proto',
  // The four Envoy resource types.
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  // Filters a mesh datapath interprets.
  'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/network/rbac/v3/rbac.proto',
  'envoy/extensions/filters/http/rbac/v3/rbac.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/udp/udp_proxy/v3/udp_proxy.proto',
  'envoy/extensions/filters/udp/udp_proxy/v3/route.proto',
  'envoy/extensions/path/match/uri_template/v3/uri_template_match.proto',
  // Extensions found in Istio-generated resources (so their Any fields decode instead of staying opaque).
  'envoy/extensions/filters/http/fault/v3/fault.proto',
  'envoy/extensions/filters/http/cors/v3/cors.proto',
  'envoy/extensions/filters/http/grpc_stats/v3/config.proto',
  'envoy/extensions/filters/listener/original_dst/v3/original_dst.proto',
  'envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto',
  'envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto',
  'envoy/extensions/filters/network/set_filter_state/v3/set_filter_state.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
  'envoy/extensions/transport_sockets/tls/v3/secret.proto',
  'envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto',
  'envoy/extensions/transport_sockets/internal_upstream/v3/internal_upstream.proto',
  'envoy/extensions/request_id/uuid/v3/uuid.proto',
  'envoy/extensions/matching/common_inputs/network/v3/network_inputs.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/extensions/clusters/aggregate/v3/cluster.proto',
  'envoy/extensions/load_balancing_policies/round_robin/v3/round_robin.proto',
  'envoy/extensions/load_balancing_policies/least_request/v3/least_request.proto',
  'envoy/extensions/load_balancing_policies/ring_hash/v3/ring_hash.proto',
  'envoy/extensions/load_balancing_policies/wrr_locality/v3/wrr_locality.proto',
  'envoy/extensions/load_balancing_policies/pick_first/v3/pick_first.proto',
  'envoy/extensions/load_balancing_policies/client_side_weighted_round_robin/v3/client_side_weighted_round_robin.proto',
  'udpa/type/v1/typed_struct.proto',
  'xds/type/v3/typed_struct.proto',
  'xds/type/matcher/v3/ip.proto',
  'xds/type/matcher/v3/matcher.proto',
  // Admin config dumps (what `istioctl proxy-config ... -o json` and /config_dump print).
  'envoy/admin/v3/config_dump.proto',
  // Istio ambient (ours, see istio/*.proto).
  'istio/workload.proto',
  'istio/authorization.proto',
];

let root: protobuf.Root | undefined;

function packageDir(pkg: string): string {
  return path.dirname(require.resolve(`${pkg}/package.json`));
}

/**
 * Where istio/*.proto live. They are source files, not compiled output, so from dist/xds/proto/
 * (or any other outDir) we walk up to the repository; SOCKMESH_XDS_PROTO_DIR overrides.
 */
export function istioProtoDir(): string {
  const ok = (d: string) => fs.existsSync(path.join(d, 'istio', 'workload.proto'));
  const env = process.env.SOCKMESH_XDS_PROTO_DIR;
  if (env && ok(env)) return env;
  if (ok(__dirname)) return __dirname;
  for (let d = __dirname; ; d = path.dirname(d)) {
    const cand = path.join(d, 'xds', 'proto');
    if (ok(cand)) return cand;
    if (path.dirname(d) === d) break;
  }
  const cwd = path.join(process.cwd(), 'xds', 'proto');
  if (ok(cwd)) return cwd;
  throw new XdsError('SM_XDS_PROTO_LOAD', `cannot find xds/proto/istio/workload.proto (searched from ${__dirname}); set SOCKMESH_XDS_PROTO_DIR`);
}

/** Include directories, in lookup order. */
export function protoIncludeDirs(): string[] {
  const deps = path.join(packageDir('@grpc/grpc-js-xds'), 'deps');
  return [
    istioProtoDir(),
    path.join(deps, 'envoy-api'),
    path.join(deps, 'xds'),
    path.join(deps, 'googleapis'),
    path.join(deps, 'protoc-gen-validate'),
    // google/protobuf/descriptor.proto (imported by the annotation protos) ships with protobufjs.
    packageDir('protobufjs'),
  ];
}

/** The shared Root, loaded and resolved on first call. */
export function protoRoot(): protobuf.Root {
  if (root) return root;
  const dirs = protoIncludeDirs();
  const r = new protobuf.Root();
  r.resolvePath = (_origin: string, target: string): string => {
    if (path.isAbsolute(target)) return target;
    for (const d of dirs) {
      const p = path.join(d, target);
      if (fs.existsSync(p)) return p;
    }
    return target; // google/protobuf/*.proto: protobufjs's bundled copies
  };
  try {
    r.loadSync(PROTO_FILES as string[], { keepCase: true });
    r.resolveAll();
  } catch (e) {
    throw new XdsError('SM_XDS_PROTO_LOAD', `loading the xDS protos failed: ${(e as Error).message}`, { cause: e });
  }
  root = r;
  return r;
}

const TYPE_URL_PREFIX = 'type.googleapis.com/';

/** `type.googleapis.com/a.b.C` (or any `.../a.b.C`) → `a.b.C`; a bare name is returned unchanged. */
export function typeNameOf(typeUrlOrName: string): string {
  const slash = typeUrlOrName.lastIndexOf('/');
  const name = slash >= 0 ? typeUrlOrName.slice(slash + 1) : typeUrlOrName;
  return name.startsWith('.') ? name.slice(1) : name;
}

export function typeUrlOf(typeName: string): string {
  return TYPE_URL_PREFIX + typeNameOf(typeName);
}

/** The message type named (by full name or type URL), or undefined if the Root does not know it. */
export function findMessageType(typeUrlOrName: string): protobuf.Type | undefined {
  const name = typeNameOf(typeUrlOrName);
  const r = protoRoot(); // load errors propagate; only the lookup may fail
  try {
    const t = r.lookup(name);
    return t instanceof protobuf.Type ? t : undefined;
  } catch {
    return undefined;
  }
}

export function messageType(typeUrlOrName: string): protobuf.Type {
  const t = findMessageType(typeUrlOrName);
  if (!t) throw new XdsError('SM_XDS_UNKNOWN_TYPE', `unknown message type ${typeNameOf(typeUrlOrName)}`);
  return t;
}
