// Reading proto3 JSON defensively: the translator's inputs are config dumps and live resources that
// another layer converted from bytes, and either may be garbage. Nothing here throws.
//
// proto3 JSON parsers accept both the lowerCamelCase JSON name and the original snake_case field
// name, and real tools emit both (Envoy's admin /config_dump and istioctl write snake_case, the
// protobuf JSON printers write lowerCamelCase; see the fixtures). Every field access therefore goes
// through `field()`, which tries both spellings. Map keys and google.protobuf.Struct contents
// (filter metadata, `services` maps) are user data and are never re-spelled.

import { addressFromBytes, formatAddress } from '../../core/ip';

export type Json = Record<string, unknown>;

export function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const own = (o: Json, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

const snakeCache = new Map<string, string>();

/** `lbEndpoints` → `lb_endpoints` (memoised: field names are few and looked up constantly). */
export function snakeCase(camel: string): string {
  let s = snakeCache.get(camel);
  if (s === undefined) {
    s = camel.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
    if (snakeCache.size < 10_000) snakeCache.set(camel, s);
  }
  return s;
}

/** The key under which `name` (given in lowerCamelCase) is present in `o`, in either spelling. */
export function keyOf(o: unknown, name: string): string | undefined {
  if (!isObj(o)) return undefined;
  if (own(o, name)) return name;
  const s = snakeCase(name);
  return s !== name && own(o, s) ? s : undefined;
}

/** A proto field in either JSON spelling; `undefined` when absent or when `o` is not an object. */
export function field(o: unknown, name: string): unknown {
  const k = keyOf(o, name);
  return k === undefined ? undefined : (o as Json)[k];
}

export function has(o: unknown, name: string): boolean {
  return keyOf(o, name) !== undefined;
}

export function obj(o: unknown, name: string): Json | undefined {
  const v = field(o, name);
  return isObj(v) ? v : undefined;
}

export function arr(o: unknown, name: string): unknown[] {
  const v = field(o, name);
  return Array.isArray(v) ? v : [];
}

export function str(o: unknown, name: string): string | undefined {
  const v = field(o, name);
  return typeof v === 'string' ? v : undefined;
}

export function bool(o: unknown, name: string): boolean {
  return field(o, name) === true;
}

/**
 * An integer as proto3 JSON writes it: a number, or a decimal string (int64, and accepted for every
 * integer type). Wrappers (UInt32Value) are bare values in proto3 JSON; `{value: n}` is accepted
 * too because YAML renderings of dumps sometimes keep it.
 */
export function int(v: unknown): number | undefined {
  if (isObj(v) && own(v, 'value')) v = v.value;
  if (typeof v === 'number') return Number.isSafeInteger(v) ? v : undefined;
  if (typeof v === 'string' && /^-?\d{1,16}$/.test(v)) return Number(v);
  return undefined;
}

export function intField(o: unknown, name: string): number | undefined {
  return int(field(o, name));
}

/** An enum as proto3 JSON writes it (its name), or as a number. */
export function enumName(v: unknown, names: readonly string[]): string | undefined {
  if (typeof v === 'string') return names.includes(v) ? v : undefined;
  const n = int(v);
  return n !== undefined && n >= 0 && n < names.length ? names[n] : undefined;
}

/** Strict base64 / base64url (proto3 JSON accepts both, padded or not). */
export function decodeBytes(v: unknown): Buffer | undefined {
  if (typeof v !== 'string') return undefined;
  const s = v.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(s)) return undefined;
  const body = s.replace(/=+$/, '');
  if (body.length % 4 === 1) return undefined;
  return Buffer.from(body.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

/** Text of a 4- or 16-byte address (RFC 5952 for IPv6, IPv4-mapped folded), or undefined for any other length. */
export function ipFromBytes(b: Buffer): string | undefined {
  const a = addressFromBytes(b);
  return a && formatAddress(a);
}

/**
 * RFC 1123 host name (what an Envoy socket address may hold instead of an IP for DNS clusters).
 * An all-numeric last label is refused (RFC 3696 §2), so `10.0.0.999` is a broken address, not a name.
 */
export function isHostname(s: string): boolean {
  if (s.length === 0 || s.length > 253) return false;
  const labels = s.replace(/\.$/, '').split('.');
  if (/^\d+$/.test(labels[labels.length - 1])) return false;
  return labels.every((l) => /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(l));
}

/** `type.googleapis.com/a.b.C` → `a.b.C`. */
export function shortType(t: unknown): string | undefined {
  if (typeof t !== 'string') return undefined;
  const i = t.lastIndexOf('/');
  return i >= 0 ? t.slice(i + 1) : t;
}

const TYPED_STRUCTS = new Set(['udpa.type.v1.TypedStruct', 'xds.type.v3.TypedStruct']);

/**
 * The type and content of an Any-typed config (`typedConfig`), looking through TypedStruct (which
 * carries a config as a Struct, with its real type in `typeUrl`).
 */
export function typedConfig(filter: unknown): { type?: string; value: Json } | undefined {
  const tc = field(filter, 'typedConfig') ?? field(filter, 'config');
  if (!isObj(tc)) return undefined;
  const t = shortType(tc['@type']);
  if (t !== undefined && TYPED_STRUCTS.has(t)) {
    return { type: shortType(field(tc, 'typeUrl')), value: obj(tc, 'value') ?? {} };
  }
  return { type: t, value: tc };
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Stable JSON for comparing plain data (object keys sorted). */
export function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (isObj(v)) {
    return `{${Object.keys(v)
      .sort()
      .filter((k) => v[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${stableJson(v[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}
