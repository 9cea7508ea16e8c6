// The per-node L7 proxy server. See README.md beside this file.
export { createL7Proxy, type L7Proxy, type ListenAddress } from './proxy';
export {
  DEFAULT_LIMITS,
  DEFAULT_TIMEOUTS,
  DEFAULT_UPSTREAM,
  type L7ProxyOptions,
  type OriginLookup,
  type ProxyLimits,
  type ProxyLogger,
  type ProxyTimeouts,
  type UpstreamLimits,
} from './options';
export { ProxyError, type ProxyErrorCode } from '../../core/errors';
export { H2_PREFACE, classifyPreface, sniffProtocol, type Sniffed } from './sniff';
export { hostPort, peerIp, resolveOrigin, type OriginResult } from './origin';
export { PolicyTable, parsePolicyKey, type PolicyKey } from './policies';
export { normalizePath, parseRequestTarget, validAuthority, type TargetResult } from './request-target';
export { HOP_BY_HOP, checkHttp1Head, connectionOptions, forwardHeaders, headersForMatching, isGrpcContentType } from './headers';
export { RBAC_DENIED_BODY, UNKNOWN_ORIGIN_BODY, GrpcStatus, encodeGrpcMessage, grpcStatusForHttp } from './local-reply';
export { classifyUpstreamError, type UpstreamFailure } from './upstream';
export { createProxyMetrics, type DecisionLabel, type ProxyMetrics, type UpstreamErrorReason } from './metrics';
export { buildAttributes } from './core';
