// Responses the proxy makes itself (denials, malformed requests, upstream failures), in both
// protocols. A gRPC request gets its error as gRPC does: HTTP 200, trailers-only, grpc-status.
import * as http from 'node:http';
import * as http2 from 'node:http2';

export const RBAC_DENIED_BODY = 'RBAC: access denied';
/** A steered request the proxy cannot judge yet (no policy table, or none for the destination): 503. */
export const NO_POLICY_BODY = 'sockmesh: no policy for this destination yet';
/** The answer on a connection the datapath has no record of (the proxy is not an open relay). */
export const UNKNOWN_ORIGIN_BODY = 'access denied: connection not steered by the datapath';

export const GrpcStatus = {
  OK: 0,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** gRPC's HTTP → status mapping (grpc/doc/http-grpc-status-mapping.md); 403 is PERMISSION_DENIED as Envoy's RBAC filter answers. */
export function grpcStatusForHttp(status: number): number {
  switch (status) {
    case 400:
      return GrpcStatus.INTERNAL;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
      return GrpcStatus.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GrpcStatus.UNAVAILABLE;
    default:
      return GrpcStatus.UNKNOWN;
  }
}

/** grpc-message is percent-encoded: bytes outside 0x20..0x7E, and "%" itself (gRPC over HTTP/2 spec). */
export function encodeGrpcMessage(message: string): string {
  let out = '';
  for (const b of Buffer.from(message, 'utf8')) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

export interface LocalReply {
  status: number;
  body: string;
  /** Close the connection after this response (HTTP/1.1). */
  close?: boolean;
  /** gRPC status to use instead of the mapping of `status`. */
  grpcStatus?: number;
}

export function writeLocalHttp1(res: http.ServerResponse, reply: LocalReply, grpc: boolean): void {
  if (res.destroyed || res.writableEnded) return;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const headers: string[] = [];
  let status = reply.status;
  let body: Buffer | undefined;
  if (grpc) {
    status = 200;
    headers.push(
      'content-type',
      'application/grpc',
      'grpc-status',
      String(reply.grpcStatus ?? grpcStatusForHttp(reply.status)),
      'grpc-message',
      encodeGrpcMessage(reply.body),
      'content-length',
      '0',
    );
  } else {
    body = Buffer.from(reply.body, 'utf8');
    headers.push('content-type', 'text/plain', 'content-length', String(body.length));
  }
  if (reply.close) headers.push('connection', 'close');
  res.writeHead(status, http.STATUS_CODES[status] ?? 'Unknown', headers);
  res.end(body);
}

/** The raw bytes of a reply, for sockets no ServerResponse owns (parse errors, CONNECT). */
export function rawHttp1Reply(status: number, body: string, extra: string[] = []): Buffer {
  const b = Buffer.from(body, 'utf8');
  let head = `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Unknown'}\r\ncontent-type: text/plain\r\ncontent-length: ${b.length}\r\n`;
  for (let i = 0; i + 1 < extra.length; i += 2) head += `${extra[i]}: ${extra[i + 1]}\r\n`;
  head += 'connection: close\r\n\r\n';
  return Buffer.concat([Buffer.from(head, 'latin1'), b]);
}

export function writeLocalH2(stream: http2.ServerHttp2Stream, reply: LocalReply, grpc: boolean): void {
  if (stream.destroyed || stream.closed) return;
  if (stream.headersSent) {
    stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  try {
    if (grpc) {
      stream.respond(
        {
          ':status': 200,
          'content-type': 'application/grpc',
          'grpc-status': String(reply.grpcStatus ?? grpcStatusForHttp(reply.status)),
          'grpc-message': encodeGrpcMessage(reply.body),
        },
        { endStream: true },
      );
    } else {
      const body = Buffer.from(reply.body, 'utf8');
      stream.respond({ ':status': reply.status, 'content-type': 'text/plain', 'content-length': body.length });
      stream.end(body);
    }
  } catch {
    stream.destroy();
    return;
  }
  // The request body may still be arriving and nobody will read it: once our side is sent, reset
  // with NO_ERROR (RFC 9113 §8.1) rather than let flow control hold the stream open.
  if (!stream.endAfterHeaders) stream.close(http2.constants.NGHTTP2_NO_ERROR);
}
