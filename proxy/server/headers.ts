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
  return filterHeaders(raw, opts, undefined);
}

/**
 * `forwardHeaders(raw, opts)` and `headersForMatching` of its result, in one pass: the per-request
 * path lower-cases every name once instead of three times.
 */
export function forwardAndMatch(raw: readonly string[], opts: FilterOptions): { headers: string[]; matching: Record<string, string> } {
  // A plain object (what buildAttributes hands the policy), filled with own properties only.
  const matching: Record<string, string> = {};
  return { headers: filterHeaders(raw, opts, matching), matching };
}

function filterHeaders(raw: readonly string[], opts: FilterOptions, matching: Record<string, string> | undefined): string[] {
  // Names lower-cased once; the Connection options (connectionOptions) collected on the way.
  const lowers: string[] = [];
  let nominated: Set<string> | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const lower = raw[i].toLowerCase();
    lowers.push(lower);
    if (lower !== 'connection') continue;
    nominated ??= new Set();
    for (const t of raw[i + 1].split(',')) {
      const name = t.trim().toLowerCase();
      if (name) nominated.add(name);
    }
  }
  const out: string[] = [];
  const keep = (name: string, lower: string, value: string) => {
    out.push(name, value);
    if (matching) addForMatching(matching, lower, value);
  };
  for (let i = 0, j = 0; i + 1 < raw.length; i += 2, j++) {
    const name = raw[i];
    const lower = lowers[j];
    const value = raw[i + 1];
    if (lower.startsWith(':')) continue;
    if (opts.drop?.has(lower)) continue;
    if (opts.keepUpgrade && (lower === 'connection' || lower === 'upgrade')) {
      keep(name, lower, value);
      continue;
    }
    if (HOP_BY_HOP.has(lower)) {
      if (lower === 'te' && opts.keepTeTrailers && value.trim().toLowerCase() === 'trailers') keep(name, lower, value);
      continue;
    }
    if (nominated?.has(lower) && !NOT_NOMINATABLE.has(lower)) continue;
    keep(name, lower, value);
  }
  return out;
}

/** Envoy's view for matching: lower-case names, repeated fields joined with "," (cookies with "; "). */
export function headersForMatching(flat: readonly string[]): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  for (let i = 0; i + 1 < flat.length; i += 2) addForMatching(out, flat[i].toLowerCase(), flat[i + 1]);
  return out;
}

/** Works on a null-prototype object and on a plain one (own properties only; "__proto__" is a field like any other). */
function addForMatching(out: Record<string, string>, name: string, value: string): void {
  const prev = hasOwn(out, name) ? out[name] : undefined;
  setOwn(out, name, prev === undefined ? value : prev + (name === 'cookie' ? '; ' : ',') + value);
}

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

/** `o[k] = v`, except that a field named "__proto__" becomes an own property, not the prototype. */
export function setOwn(o: Record<string, string>, k: string, v: string): void {
  if (k === '__proto__') Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  else o[k] = v;
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
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i];
    if (name.length === 4 && name.toLowerCase() === 'host') hosts++;
  }
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
