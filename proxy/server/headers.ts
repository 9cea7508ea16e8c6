// Header handling shared by both protocols: what is forwarded (hop-by-hop fields removed), what
// the policy sees (the forwarded fields, so the policy and the application agree), and the checks
// on an HTTP/1.1 request head that Node's parser (llhttp) does not make.
import type * as http from 'node:http';
import { validAuthority } from './request-target';

/**
 * Removed by every intermediary: RFC 9110 §7.6.1 (Connection and the fields it names, Keep-Alive,
 * Proxy-Connection, TE, Transfer-Encoding, Upgrade), plus HTTP2-Settings (RFC 9113 §3.1, only
 * meaningful with an h2c upgrade, which is never passed). `te: trailers` survives on HTTP/2 (gRPC needs it).
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
]);

/** Host carries the routing the policy decided on; a client's `Connection: host` cannot remove it. */
const NOT_NOMINATABLE: ReadonlySet<string> = new Set(['host']);

/** Field names listed in every Connection header of a flat [name, value, ...] list, lower-cased. */
export function connectionOptions(raw: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i].toLowerCase() !== 'connection') continue;
    for (const t of raw[i + 1].split(',')) {
      const name = t.trim().toLowerCase();
      if (name) out.add(name);
    }
  }
  return out;
}

export interface FilterOptions {
  /** Further names to drop (lower case). */
  drop?: ReadonlySet<string>;
  /** Keep `te: trailers` (HTTP/2 → HTTP/2). */
  keepTeTrailers?: boolean;
  /** Keep Connection and Upgrade (a 101 response). */
  keepUpgrade?: boolean;
}

/** A flat [name, value, ...] list without hop-by-hop fields and pseudo-headers; names keep their case. */
export function forwardHeaders(raw: readonly string[], opts: FilterOptions = {}): string[] {
  const nominated = connectionOptions(raw);
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i];
    const lower = name.toLowerCase();
    const value = raw[i + 1];
    if (lower.startsWith(':')) continue;
    if (opts.drop?.has(lower)) continue;
    if (opts.keepUpgrade && (lower === 'connection' || lower === 'upgrade')) {
      out.push(name, value);
      continue;
    }
    if (HOP_BY_HOP.has(lower)) {
      if (lower === 'te' && opts.keepTeTrailers && value.trim().toLowerCase() === 'trailers') out.push(name, value);
      continue;
    }
    if (nominated.has(lower) && !NOT_NOMINATABLE.has(lower)) continue;
    out.push(name, value);
  }
  return out;
}

/** Envoy's view for matching: lower-case names, repeated fields joined with "," (cookies with "; "). */
export function headersForMatching(flat: readonly string[]): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const name = flat[i].toLowerCase();
    const value = flat[i + 1];
    const prev = out[name];
    out[name] = prev === undefined ? value : prev + (name === 'cookie' ? '; ' : ',') + value;
  }
  return out;
}

/** gRPC (and gRPC-Web): its errors are reported in grpc-status, not in the HTTP status. */
export function isGrpcContentType(contentType: string | undefined): boolean {
  return contentType !== undefined && /^application\/grpc(?:-web(?:-text)?)?(?:$|[+;])/i.test(contentType.trim());
}

export interface HeadRejection {
  status: number;
  reason: string;
}

/**
 * What llhttp accepts but a proxy must not forward. (llhttp itself answers 400 for both
 * Content-Length and Transfer-Encoding, repeated Content-Length, obs-fold, bad chunk framing,
 * bare CR/LF, and 431 for a head over maxHeaderSize — see README.)
 */
export function checkHttp1Head(req: http.IncomingMessage, maxHeaders: number): HeadRejection | undefined {
  // Node keeps at most maxHeadersCount (= maxHeaders + 1) fields and drops the rest silently.
  if (req.rawHeaders.length / 2 > maxHeaders) return { status: 431, reason: 'too many header fields' };
  let hosts = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i].toLowerCase() === 'host') hosts++;
  if (hosts > 1) return { status: 400, reason: 'more than one Host header' };
  const host = req.headers.host;
  if (host !== undefined && !validAuthority(host)) return { status: 400, reason: 'invalid Host header' };
  const te = req.headers['transfer-encoding'];
  // llhttp accepts "gzip, chunked"; the body we stream upstream is de-chunked only, so any other
  // coding would be lost. RFC 9112 §6.1: 501 for a transfer coding not understood.
  if (te !== undefined && te.trim().toLowerCase() !== 'chunked') {
    return { status: 501, reason: 'transfer coding other than chunked' };
  }
  return undefined;
}

/** Flat list of strings from undici's raw Buffer list (latin1: header bytes pass through unchanged). */
export function rawToStrings(raw: readonly (Buffer | string)[] | null | undefined): string[] {
  if (!raw) return [];
  return raw.map((b) => (typeof b === 'string' ? b : b.toString('latin1')));
}

/** [[name, value], ...] from a flat list. */
export function pairs(flat: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}
