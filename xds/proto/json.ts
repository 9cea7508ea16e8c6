// Protobuf ⇄ proto3 JSON, as the protobuf JSON mapping specifies and as Envoy's and istioctl's config
// dumps print it (https://protobuf.dev/programming-guides/proto3/#json):
//
// - field names lowerCamelCase (or `json_name`); both that and the .proto name are accepted on input;
// - default values of fields without presence omitted (0, "", false, enum 0, empty repeated/map);
//   messages, oneof members and proto3 `optional` fields are printed whenever set, even if empty;
// - enums by name (an unknown number stays a number), int64/uint64 as decimal strings, bytes as
//   base64, float/double NaN/±Infinity as "NaN"/"Infinity"/"-Infinity";
// - google.protobuf.Any as `{"@type": URL, ...fields of the packed message}`, recursively, for
//   every type in the Root (load.ts); the well-known types with a special JSON form are packed as
//   `{"@type": URL, "value": <their JSON>}`; a type the Root does not know stays
//   `{"@type": URL, "value": "<base64 of the packed bytes>"}` and is re-encoded byte for byte;
// - wrappers (BoolValue, UInt32Value, ...) as the bare value, Duration as "1.500s", Timestamp as
//   RFC 3339 in UTC ("2024-01-02T03:04:05.120Z"), Struct/Value/ListValue as plain JSON,
//   FieldMask as "a.b,cD".
//
// Output digits follow Go's protojson (Duration/Timestamp fractions in 0, 3, 6 or 9 digits; float32
// printed with the fewest digits that round-trip), so a dump produced by istioctl round-trips.
// protobufjs's own toObject/fromObject implement none of the above beyond Any, hence this walker.
//
// On input, a top-level `@type` (as config dumps print inside Any fields) is accepted if it names
// the requested type and is dropped. Map keys are sorted on input, so equal JSON encodes to equal
// bytes whatever the key order (the control plane hashes the bytes into resource versions).

import * as protobuf from 'protobufjs';
import type { Json } from '../types';
import { XdsError } from '../../core/errors';
import { findMessageType, messageType, typeNameOf } from './load';

export interface FromJsonOptions {
  /** Skip JSON keys the message type has no field for, instead of failing (default false). */
  ignoreUnknownFields?: boolean;
}

/**
 * A message (or its encoded bytes) of type `typeName` (full name or type URL) as proto3 JSON.
 * Throws XdsError SM_XDS_DECODE if the bytes, or any Any packed inside them, do not decode.
 */
export function toProto3Json(typeName: string, input: protobuf.Message | Uint8Array | Record<string, unknown>): Json {
  const type = messageType(typeName);
  const msg = input instanceof Uint8Array ? decodeAs(type, input, '') : input;
  return messageToJson(type, msg as Msg, '') as Json;
}

/** Proto3 JSON of type `typeName` as a protobufjs Message. Throws XdsError SM_XDS_JSON naming the path. */
export function fromProto3Json(typeName: string, json: unknown, opts: FromJsonOptions = {}): protobuf.Message {
  const type = messageType(typeName);
  let j = json;
  if (isPlainObject(j) && '@type' in j && !isSpecialWkt(type)) {
    const t = j['@type'];
    if (typeof t !== 'string' || typeNameOf(t) !== typeNameOf(type.fullName)) {
      throw jsonErr('@type', `@type ${JSON.stringify(t)} does not match the expected type ${typeNameOf(type.fullName)}`);
    }
    const { ['@type']: _drop, ...rest } = j;
    j = rest;
  }
  const obj = messageFromJson(type, j, '', opts);
  try {
    return type.fromObject(obj as Record<string, unknown>);
  } catch (e) {
    throw jsonErr('', (e as Error).message, e);
  }
}

/** fromProto3Json + encode. */
export function encodeJson(typeName: string, json: unknown, opts: FromJsonOptions = {}): Uint8Array {
  const type = messageType(typeName);
  return type.encode(fromProto3Json(typeName, json, opts)).finish();
}

/** decode + toProto3Json. */
export function decodeToJson(typeName: string, bytes: Uint8Array): Json {
  return toProto3Json(typeName, bytes);
}

/** Decodes bytes as `typeName`, throwing XdsError SM_XDS_DECODE on failure. */
export function decodeMessage(typeName: string, bytes: Uint8Array): protobuf.Message {
  return decodeAs(messageType(typeName), bytes, '');
}

/** The proto3 JSON name of a field: its json_name option, else lowerCamelCase of its name. */
export function jsonName(field: protobuf.Field): string {
  const opt = field.options?.json_name;
  return typeof opt === 'string' ? opt : lowerCamel(field.name);
}

export function lowerCamel(name: string): string {
  // protoc's ToJsonName: drop each '_' and upper-case the character after it.
  let out = '';
  let up = false;
  for (const ch of name) {
    if (ch === '_') {
      up = true;
      continue;
    }
    out += up ? ch.toUpperCase() : ch;
    up = false;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

type Msg = Record<string, unknown>;

const hasOwn = (o: object, k: string) => Object.prototype.hasOwnProperty.call(o, k);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function jsonErr(path: string, reason: string, cause?: unknown): XdsError {
  return new XdsError('SM_XDS_JSON', `${path || '(root)'}: ${reason}`, { path, cause });
}

function decodeErr(path: string, reason: string, cause?: unknown): XdsError {
  return new XdsError('SM_XDS_DECODE', `${path || '(root)'}: ${reason}`, { path, cause });
}

function join(path: string, key: string | number): string {
  return typeof key === 'number' ? `${path}[${key}]` : path ? `${path}.${key}` : key;
}

function decodeAs(type: protobuf.Type, bytes: Uint8Array, path: string): protobuf.Message {
  try {
    return type.decode(bytes);
  } catch (e) {
    throw decodeErr(path, `cannot decode ${typeNameOf(type.fullName)}: ${(e as Error).message}`, e);
  }
}

const WRAPPERS: Record<string, string> = {
  '.google.protobuf.DoubleValue': 'double',
  '.google.protobuf.FloatValue': 'float',
  '.google.protobuf.Int64Value': 'int64',
  '.google.protobuf.UInt64Value': 'uint64',
  '.google.protobuf.Int32Value': 'int32',
  '.google.protobuf.UInt32Value': 'uint32',
  '.google.protobuf.BoolValue': 'bool',
  '.google.protobuf.StringValue': 'string',
  '.google.protobuf.BytesValue': 'bytes',
};

const SPECIAL = new Set([
  '.google.protobuf.Any',
  '.google.protobuf.Duration',
  '.google.protobuf.Timestamp',
  '.google.protobuf.Struct',
  '.google.protobuf.Value',
  '.google.protobuf.ListValue',
  '.google.protobuf.FieldMask',
  ...Object.keys(WRAPPERS),
]);

/**
 * Well-known types with a JSON form of their own: packed in an Any as `{"@type", "value": JSON}`
 * (an Any in an Any too), and never carrying a top-level `@type` of their own.
 */
function isSpecialWkt(type: protobuf.Type): boolean {
  return SPECIAL.has(fullNameOf(type));
}

const INT64 = new Set(['int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);
const INT32 = new Set(['int32', 'sint32', 'sfixed32']);
const UINT32 = new Set(['uint32', 'fixed32']);
const UNSIGNED64 = new Set(['uint64', 'fixed64']);

function longToString(v: unknown, unsigned: boolean): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'bigint' || typeof v === 'string') return String(v);
  if (v && typeof v === 'object' && 'low' in v && 'high' in v) {
    const l = v as { low: number; high: number; unsigned?: boolean };
    const big = (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0);
    return String(unsigned || l.unsigned ? big : BigInt.asIntN(64, big));
  }
  return String(v);
}

const firstNames = new WeakMap<protobuf.Enum, Map<number, string>>();
/** Number → name, the first declared name for aliased values (as protoc-generated code does). */
function enumNames(e: protobuf.Enum): Map<number, string> {
  let m = firstNames.get(e);
  if (!m) {
    m = new Map();
    for (const [name, num] of Object.entries(e.values)) if (!m.has(num)) m.set(num, name);
    firstNames.set(e, m);
  }
  return m;
}

function toBase64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
}

// ---------------------------------------------------------------------------------------------
// Message → JSON

function messageToJson(type: protobuf.Type, msg: Msg, path: string): unknown {
  switch (fullNameOf(type)) {
    case '.google.protobuf.Any':
      return anyToJson(msg, path);
    case '.google.protobuf.Duration':
      return durationToJson(msg.seconds, Number(msg.nanos ?? 0));
    case '.google.protobuf.Timestamp':
      return timestampToJson(msg.seconds, Number(msg.nanos ?? 0), path);
    case '.google.protobuf.Struct':
      return structToJson(msg, path);
    case '.google.protobuf.Value':
      return valueToJson(msg, path);
    case '.google.protobuf.ListValue':
      return ((msg.values as Msg[] | undefined) ?? []).map((v, i) => valueToJson(v, join(path, i)));
    case '.google.protobuf.FieldMask':
      return ((msg.paths as string[] | undefined) ?? []).map(lowerCamel).join(',');
  }
  const wrapped = WRAPPERS[fullNameOf(type)];
  if (wrapped) {
    const f = type.fields.value;
    return scalarToJson(wrapped, msg.value ?? f.typeDefault);
  }
  const out: Record<string, unknown> = {};
  for (const field of type.fieldsArray) {
    const v = msg[field.name];
    const p = join(path, jsonName(field));
    if (field.map) {
      if (v && typeof v === 'object' && Object.keys(v).length) out[jsonName(field)] = mapToJson(field, v as Msg, p);
    } else if (field.repeated) {
      if (Array.isArray(v) && v.length) out[jsonName(field)] = v.map((x, i) => fieldValueToJson(field, x, join(p, i)));
    } else {
      if (!hasOwn(msg, field.name) || v === null || v === undefined) continue;
      const presence = field.partOf !== null && field.partOf !== undefined;
      if (!presence && !(field.resolvedType instanceof protobuf.Type) && isDefaultScalar(field, v)) continue;
      out[jsonName(field)] = fieldValueToJson(field, v, p);
    }
  }
  return out;
}

function mapKeyType(field: protobuf.Field): string {
  return (field as unknown as { keyType: string }).keyType;
}

function isDefaultScalar(field: protobuf.Field, v: unknown): boolean {
  if (field.resolvedType instanceof protobuf.Enum) return Number(v) === 0;
  if (INT64.has(field.type)) return longToString(v, false) === '0';
  if (field.type === 'bytes') return (v as Uint8Array).length === 0;
  if (field.type === 'bool') return v === false;
  if (field.type === 'string') return v === '';
  return v === 0 && !Object.is(v, -0);
}

function fieldValueToJson(field: protobuf.Field, v: unknown, path: string): unknown {
  const rt = field.resolvedType;
  if (rt instanceof protobuf.Type) return messageToJson(rt, v as Msg, path);
  if (rt instanceof protobuf.Enum) return enumToJson(rt, Number(v));
  return scalarToJson(field.type, v);
}

function enumToJson(e: protobuf.Enum, n: number): unknown {
  if (fullNameOf(e) === '.google.protobuf.NullValue') return null;
  return enumNames(e).get(n) ?? n;
}

function scalarToJson(type: string, v: unknown): unknown {
  if (INT64.has(type)) return longToString(v, UNSIGNED64.has(type));
  switch (type) {
    case 'double':
    case 'float': {
      const n = Number(v);
      if (Number.isNaN(n)) return 'NaN';
      if (n === Infinity) return 'Infinity';
      if (n === -Infinity) return '-Infinity';
      return type === 'float' ? shortestFloat32(n) : n;
    }
    case 'bytes':
      return toBase64(v as Uint8Array);
    default:
      return v;
  }
}

/** The float32 value `n` with the fewest significant digits that read back as the same float32. */
function shortestFloat32(n: number): number {
  const f = Math.fround(n);
  for (let p = 1; p <= 9; p++) {
    const c = Number(f.toPrecision(p));
    if (Math.fround(c) === f) return c;
  }
  return f;
}

function mapToJson(field: protobuf.Field, obj: Msg, path: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const keyType = mapKeyType(field);
  for (const [k, v] of Object.entries(obj)) {
    let key = k;
    if (INT64.has(keyType) && k.length === 8 && !/^-?\d+$/.test(k)) {
      // protobufjs keys 64-bit maps by an 8-char hash of the Long.
      key = longToString(protobuf.util.longFromHash(k, UNSIGNED64.has(keyType)), UNSIGNED64.has(keyType));
    }
    out[key] = fieldValueToJson(field, v, join(path, key));
  }
  return out;
}

function anyToJson(msg: Msg, path: string): unknown {
  const url = (msg.type_url as string | undefined) ?? '';
  const value = (msg.value as Uint8Array | undefined) ?? new Uint8Array(0);
  if (!url) {
    if (value.length) throw decodeErr(path, 'Any has a value but no type_url');
    return {};
  }
  const t = findMessageType(url);
  if (!t) return { '@type': url, value: toBase64(value) };
  const inner = decodeAs(t, value, path);
  const j = messageToJson(t, inner as unknown as Msg, path);
  return isSpecialWkt(t) ? { '@type': url, value: j } : { '@type': url, ...(j as Record<string, unknown>) };
}

function fraction(nanos: number): string {
  if (nanos === 0) return '';
  const s = String(nanos).padStart(9, '0');
  if (s.endsWith('000000')) return '.' + s.slice(0, 3);
  if (s.endsWith('000')) return '.' + s.slice(0, 6);
  return '.' + s;
}

function durationToJson(secondsV: unknown, nanos: number): string {
  const seconds = BigInt(longToString(secondsV ?? 0, false));
  const neg = seconds < 0n || nanos < 0;
  const abs = seconds < 0n ? -seconds : seconds;
  return `${neg ? '-' : ''}${abs}${fraction(Math.abs(nanos))}s`;
}

function timestampToJson(secondsV: unknown, nanos: number, path: string): string {
  const seconds = Number(longToString(secondsV ?? 0, false));
  const d = new Date(seconds * 1000);
  if (Number.isNaN(d.getTime())) throw decodeErr(path, `Timestamp out of range: ${seconds}s`);
  return d.toISOString().replace(/\.\d{3}Z$/, '') + fraction(nanos) + 'Z';
}

function structToJson(msg: Msg, path: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const fields = (msg.fields as Record<string, Msg> | undefined) ?? {};
  for (const [k, v] of Object.entries(fields)) out[k] = valueToJson(v, join(path, k));
  return out;
}

/**
 * Field names of google.protobuf.Value in this Root. protobufjs's bundled struct.proto spells them
 * camelCase (nullValue...) whatever keepCase says, so they are looked up by field number.
 */
let valueFieldNames: { null: string; number: string; string: string; bool: string; struct: string; list: string } | undefined;
function vf(): NonNullable<typeof valueFieldNames> {
  if (!valueFieldNames) {
    const t = messageType('google.protobuf.Value');
    const byId = (id: number) => {
      const f = t.fieldsArray.find((x) => x.id === id);
      if (!f) throw new XdsError('SM_XDS_PROTO_LOAD', `google.protobuf.Value has no field ${id}`);
      return f.name;
    };
    valueFieldNames = { null: byId(1), number: byId(2), string: byId(3), bool: byId(4), struct: byId(5), list: byId(6) };
  }
  return valueFieldNames;
}

function valueToJson(msg: Msg, path: string): unknown {
  const n = vf();
  const set = (k: string) => hasOwn(msg, k) && msg[k] !== null && msg[k] !== undefined;
  if (set(n.null)) return null;
  if (set(n.number)) return scalarToJson('double', msg[n.number]);
  if (set(n.string)) return msg[n.string];
  if (set(n.bool)) return msg[n.bool];
  if (set(n.struct)) return structToJson(msg[n.struct] as Msg, path);
  if (set(n.list)) return (((msg[n.list] as Msg).values as Msg[] | undefined) ?? []).map((v, i) => valueToJson(v, join(path, i)));
  return null; // a Value with no kind set: printed as null, as Envoy does
}

// ---------------------------------------------------------------------------------------------
// JSON → protobufjs object form (keepCase names, Any packed, enums as numbers, longs as strings)

/**
 * protobufjs computes `fullName` on every read (it walks the parents and joins their names); the
 * conversions ask it several times per message, which was a large share of a config reload's CPU.
 */
const fullNames = new WeakMap<protobuf.ReflectionObject, string>();
function fullNameOf(t: protobuf.ReflectionObject): string {
  let n = fullNames.get(t);
  if (n === undefined) {
    n = t.fullName;
    fullNames.set(t, n);
  }
  return n;
}

const fieldIndex = new WeakMap<protobuf.Type, Map<string, protobuf.Field>>();
function fieldsByJsonKey(type: protobuf.Type): Map<string, protobuf.Field> {
  let m = fieldIndex.get(type);
  if (!m) {
    m = new Map();
    for (const f of type.fieldsArray) {
      m.set(f.name, f);
      m.set(jsonName(f), f);
    }
    fieldIndex.set(type, m);
  }
  return m;
}

function messageFromJson(type: protobuf.Type, j: unknown, path: string, opts: FromJsonOptions): unknown {
  switch (fullNameOf(type)) {
    case '.google.protobuf.Any':
      return anyFromJson(j, path, opts);
    case '.google.protobuf.Duration':
      return durationFromJson(j, path);
    case '.google.protobuf.Timestamp':
      return timestampFromJson(j, path);
    case '.google.protobuf.Struct':
      return structFromJson(j, path);
    case '.google.protobuf.Value':
      return valueFromJson(j, path);
    case '.google.protobuf.ListValue':
      if (!Array.isArray(j)) throw jsonErr(path, `expected a list for google.protobuf.ListValue, got ${describe(j)}`);
      return { values: j.map((v, i) => valueFromJson(v, join(path, i))) };
    case '.google.protobuf.FieldMask':
      if (typeof j !== 'string') throw jsonErr(path, `expected a string for google.protobuf.FieldMask, got ${describe(j)}`);
      return { paths: j === '' ? [] : j.split(',').map((p) => p.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase())) };
  }
  const wrapped = WRAPPERS[fullNameOf(type)];
  if (wrapped) return { value: scalarFromJson(wrapped, j, path) };

  if (!isPlainObject(j)) throw jsonErr(path, `expected an object for ${typeNameOf(type.fullName)}, got ${describe(j)}`);
  const index = fieldsByJsonKey(type);
  const out: Record<string, unknown> = {};
  const oneofSeen = new Map<string, string>();
  for (const [key, val] of Object.entries(j)) {
    const field = index.get(key);
    const p = join(path, key);
    if (!field) {
      if (opts.ignoreUnknownFields) continue;
      throw jsonErr(p, `unknown field "${key}" in ${typeNameOf(type.fullName)}`);
    }
    const isValueMsg = field.resolvedType instanceof protobuf.Type && fullNameOf(field.resolvedType) === '.google.protobuf.Value';
    if (val === null && !(isValueMsg && !field.repeated && !field.map)) continue; // null means "not set"
    if (hasOwn(out, field.name)) throw jsonErr(p, `field ${field.name} given twice`);
    if (field.partOf) {
      const other = oneofSeen.get(field.partOf.name);
      if (other !== undefined) throw jsonErr(p, `oneof ${field.partOf.name}: both "${other}" and "${key}" are set`);
      oneofSeen.set(field.partOf.name, key);
    }
    if (field.map) {
      if (!isPlainObject(val)) throw jsonErr(p, `expected an object for map field, got ${describe(val)}`);
      const m: Record<string, unknown> = {};
      for (const k of Object.keys(val).sort()) {
        checkMapKey(mapKeyType(field), k, join(p, k));
        m[k] = fieldValueFromJson(field, val[k], join(p, k), opts);
      }
      if (Object.keys(m).length) out[field.name] = m;
    } else if (field.repeated) {
      if (!Array.isArray(val)) throw jsonErr(p, `expected a list, got ${describe(val)}`);
      if (val.length) out[field.name] = val.map((x, i) => {
        if (x === null) throw jsonErr(join(p, i), 'null is not allowed in a list');
        return fieldValueFromJson(field, x, join(p, i), opts);
      });
    } else {
      const v = fieldValueFromJson(field, val, p, opts);
      const presence = field.partOf !== null && field.partOf !== undefined;
      // Fields without presence equal to their default are not written (as protoc's encoders do),
      // so equal content encodes to equal bytes.
      if (!presence && !(field.resolvedType instanceof protobuf.Type) && isDefaultInput(field, v)) continue;
      out[field.name] = v;
    }
  }
  return out;
}

function isDefaultInput(field: protobuf.Field, v: unknown): boolean {
  if (field.resolvedType instanceof protobuf.Enum) return v === 0;
  if (INT64.has(field.type)) return v === '0' || v === '-0';
  if (field.type === 'bytes') return (v as Uint8Array).length === 0;
  if (field.type === 'bool') return v === false;
  if (field.type === 'string') return v === '';
  return v === 0 && !Object.is(v, -0);
}

function checkMapKey(keyType: string, k: string, path: string): void {
  if (keyType === 'bool' && k !== 'true' && k !== 'false') throw jsonErr(path, `map key must be "true" or "false"`);
  if ((INT32.has(keyType) || UINT32.has(keyType) || INT64.has(keyType)) && !/^-?\d+$/.test(k)) {
    throw jsonErr(path, `map key must be an integer, got ${JSON.stringify(k)}`);
  }
}

function fieldValueFromJson(field: protobuf.Field, v: unknown, path: string, opts: FromJsonOptions): unknown {
  const rt = field.resolvedType;
  if (rt instanceof protobuf.Type) return messageFromJson(rt, v, path, opts);
  if (rt instanceof protobuf.Enum) return enumFromJson(rt, v, path);
  return scalarFromJson(field.type, v, path);
}

function enumFromJson(e: protobuf.Enum, v: unknown, path: string): number {
  if (fullNameOf(e) === '.google.protobuf.NullValue' && v === null) return 0;
  if (typeof v === 'string') {
    if (hasOwn(e.values, v)) return e.values[v];
    throw jsonErr(path, `unknown value ${JSON.stringify(v)} for enum ${typeNameOf(e.fullName)} (expected one of ${Object.keys(e.values).join(', ')})`);
  }
  if (typeof v === 'number' && Number.isInteger(v) && v >= -2147483648 && v <= 2147483647) return v;
  throw jsonErr(path, `expected an enum name of ${typeNameOf(e.fullName)}, got ${describe(v)}`);
}

const INT_RE = /^-?\d+$/;

function scalarFromJson(type: string, v: unknown, path: string): unknown {
  if (INT32.has(type) || UINT32.has(type)) {
    const n = typeof v === 'string' && INT_RE.test(v.trim()) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n)) throw jsonErr(path, `expected an integer (${type}), got ${describe(v)}`);
    const [lo, hi] = UINT32.has(type) ? [0, 4294967295] : [-2147483648, 2147483647];
    if (n < lo || n > hi) throw jsonErr(path, `${n} is out of range for ${type}`);
    return n;
  }
  if (INT64.has(type)) {
    let s: string;
    if (typeof v === 'number' && Number.isInteger(v)) s = BigInt(v).toString();
    else if (typeof v === 'string' && INT_RE.test(v.trim())) s = BigInt(v.trim()).toString();
    else throw jsonErr(path, `expected an integer (${type}, a number or a decimal string), got ${describe(v)}`);
    const b = BigInt(s);
    const [lo, hi] = UNSIGNED64.has(type) ? [0n, (1n << 64n) - 1n] : [-(1n << 63n), (1n << 63n) - 1n];
    if (b < lo || b > hi) throw jsonErr(path, `${s} is out of range for ${type}`);
    return s;
  }
  switch (type) {
    case 'double':
    case 'float': {
      if (v === 'NaN') return NaN;
      if (v === 'Infinity') return Infinity;
      if (v === '-Infinity') return -Infinity;
      const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
      if (typeof n !== 'number' || Number.isNaN(n)) throw jsonErr(path, `expected a number (${type}), got ${describe(v)}`);
      return n;
    }
    case 'bool':
      if (typeof v !== 'boolean') throw jsonErr(path, `expected true or false, got ${describe(v)}`);
      return v;
    case 'string':
      if (typeof v !== 'string') throw jsonErr(path, `expected a string, got ${describe(v)}`);
      return v;
    case 'bytes': {
      if (typeof v !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(v)) throw jsonErr(path, `expected base64 bytes, got ${describe(v)}`);
      return Buffer.from(v.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    }
  }
  throw jsonErr(path, `unsupported scalar type ${type}`);
}

function anyFromJson(j: unknown, path: string, opts: FromJsonOptions): unknown {
  if (!isPlainObject(j)) throw jsonErr(path, `expected an object for google.protobuf.Any, got ${describe(j)}`);
  const url = j['@type'];
  if (url === undefined && Object.keys(j).length === 0) return {};
  if (typeof url !== 'string' || !url.includes('/')) throw jsonErr(path, `Any without a valid "@type" (got ${describe(url)})`);
  const p = join(path, `(${typeNameOf(url)})`);
  const t = findMessageType(url);
  const { ['@type']: _drop, ...rest } = j;
  if (!t) {
    const keys = Object.keys(rest);
    if (keys.length === 0) return { type_url: url, value: Buffer.alloc(0) };
    if (keys.length === 1 && keys[0] === 'value' && typeof rest.value === 'string') {
      return { type_url: url, value: scalarFromJson('bytes', rest.value, join(path, 'value')) };
    }
    throw jsonErr(path, `unknown Any type ${url}: its fields cannot be encoded (only {"@type", "value": base64} is accepted for types the proto Root does not know)`);
  }
  let inner: unknown;
  if (isSpecialWkt(t)) {
    if (!('value' in rest)) throw jsonErr(p, `Any of ${typeNameOf(url)} needs a "value"`);
    inner = messageFromJson(t, rest.value, p, opts);
  } else {
    inner = messageFromJson(t, rest, p, opts);
  }
  let bytes: Uint8Array;
  try {
    bytes = t.encode(t.fromObject(inner as Record<string, unknown>)).finish();
  } catch (e) {
    throw jsonErr(p, (e as Error).message, e);
  }
  return { type_url: url, value: bytes };
}

function durationFromJson(j: unknown, path: string): unknown {
  const m = typeof j === 'string' ? /^(-)?(\d+)(?:\.(\d{1,9}))?s$/.exec(j) : null;
  if (!m) throw jsonErr(path, `expected a duration like "1.500s", got ${describe(j)}`);
  const secs = BigInt(m[2]);
  if (secs > 315576000000n) throw jsonErr(path, `duration ${j} is out of range`);
  const nanos = Number((m[3] ?? '').padEnd(9, '0') || '0');
  const sign = m[1] ? -1 : 1;
  return { seconds: (m[1] && secs !== 0n ? '-' : '') + secs.toString(), nanos: sign * nanos };
}

function timestampFromJson(j: unknown, path: string): unknown {
  const m = typeof j === 'string'
    ? /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$/.exec(j)
    : null;
  if (!m) throw jsonErr(path, `expected an RFC 3339 timestamp like "2024-01-02T03:04:05Z", got ${describe(j)}`);
  let ms = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
  if (m[8] !== 'Z' && m[8] !== 'z') {
    const sign = m[8][0] === '-' ? -1 : 1;
    ms -= sign * (Number(m[8].slice(1, 3)) * 60 + Number(m[8].slice(4, 6))) * 60_000;
  }
  if (Number.isNaN(ms)) throw jsonErr(path, `invalid timestamp ${j}`);
  return { seconds: String(Math.floor(ms / 1000)), nanos: Number((m[7] ?? '').padEnd(9, '0') || '0') };
}

function structFromJson(j: unknown, path: string): unknown {
  if (!isPlainObject(j)) throw jsonErr(path, `expected an object for google.protobuf.Struct, got ${describe(j)}`);
  const fields: Record<string, unknown> = {};
  for (const k of Object.keys(j).sort()) fields[k] = valueFromJson(j[k], join(path, k));
  return { fields };
}

function valueFromJson(j: unknown, path: string): unknown {
  const n = vf();
  if (j === null) return { [n.null]: 0 };
  if (typeof j === 'number') return { [n.number]: j };
  if (typeof j === 'string') return { [n.string]: j };
  if (typeof j === 'boolean') return { [n.bool]: j };
  if (Array.isArray(j)) return { [n.list]: { values: j.map((v, i) => valueFromJson(v, join(path, i))) } };
  if (isPlainObject(j)) return { [n.struct]: structFromJson(j, path) };
  throw jsonErr(path, `cannot represent ${describe(j)} as google.protobuf.Value`);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? v.slice(0, 57) + '...' : v);
  return `${typeof v} ${String(v)}`;
}

/**
 * Field numbers present in `bytes` that `typeName` (recursively, through its message fields) does
 * not declare, as paths like `groups.rules.matches#11`. protobuf decoders skip unknown fields
 * silently; for a policy that means a condition dropped without a trace, so callers use this to
 * refuse (fail closed) resources from a newer control plane than this build understands.
 */
export function unknownFields(typeName: string, bytes: Uint8Array): string[] {
  const out: string[] = [];
  const walk = (type: protobuf.Type, buf: Uint8Array, path: string): void => {
    const r = protobuf.Reader.create(buf);
    while (r.pos < r.len) {
      const tag = r.uint32();
      const id = tag >>> 3;
      const wire = tag & 7;
      const field = type.fieldsById[id];
      if (field && wire === 2) {
        const resolved = field.resolve().resolvedType;
        if (resolved instanceof protobuf.Type && !field.map) {
          walk(resolved, r.bytes(), path ? `${path}.${field.name}` : field.name);
          continue;
        }
      }
      if (!field) out.push(`${path ? path + '.' : ''}#${id}`);
      r.skipType(wire);
    }
  };
  walk(messageType(typeName), bytes, '');
  return out;
}
