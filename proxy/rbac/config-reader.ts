// Reading an RBAC filter's proto3 JSON while validating it. Every read knows where it is (the path
// into the config, and the policy it belongs to), so that a bad value is reported as
// `filter F, policy P: rules.policies["P"].permissions[0].urlPath.path.safeRegex.regex: ...`.
//
// proto3 JSON parsers accept both the lowerCamelCase JSON name and the proto field name
// (snake_case); Envoy's /config_dump and istioctl write snake_case, protobuf printers and the Istio
// fixtures lowerCamelCase. Fields are named here in lowerCamelCase and found in either spelling;
// giving both spellings of one field is an error (which one would win is not defined). Unknown
// fields are reported as warnings, never silently dropped.
//
// Problems are collected, not thrown one by one: compile reports all of them at once.

import type { RbacIssue, RbacWarning } from './errors';

export type JsonObject = Record<string, unknown>;

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

const snakeCache = new Map<string, string>();

/** `andRules` → `and_rules`; memoised, the field names are few and read constantly. */
export function snakeOf(camel: string): string {
  let s = snakeCache.get(camel);
  if (s === undefined) {
    s = camel.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
    if (snakeCache.size < 1000) snakeCache.set(camel, s);
  }
  return s;
}

/** Where problems go: one per compiled filter. */
export interface Sink {
  filter: string;
  filterIndex: number;
  issues: RbacIssue[];
  warnings: RbacWarning[];
}

export function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return `a ${typeof v} (${JSON.stringify(v)})`;
}

/** A location in the config. */
export class Scope {
  constructor(
    readonly sink: Sink,
    readonly path: string,
    readonly policy?: string,
  ) {}
  at(key: string): Scope {
    return new Scope(this.sink, this.path ? `${this.path}.${key}` : key, this.policy);
  }
  index(i: number): Scope {
    return new Scope(this.sink, `${this.path}[${i}]`, this.policy);
  }
  /** Entering a policy: map key in the path, and the policy named in every message below. */
  policyEntry(name: string): Scope {
    return new Scope(this.sink, `${this.path}[${JSON.stringify(name)}]`, name);
  }
  error(reason: string): undefined {
    this.sink.issues.push({ filter: this.sink.filter, filterIndex: this.sink.filterIndex, ...(this.policy !== undefined ? { policy: this.policy } : {}), path: this.path, reason });
    return undefined;
  }
  warn(message: string): void {
    this.sink.warnings.push({ filter: this.sink.filter, filterIndex: this.sink.filterIndex, ...(this.policy !== undefined ? { policy: this.policy } : {}), path: this.path, message });
  }
}

/** A proto message read from JSON: field access in either spelling, typed reads that report. */
export class Msg {
  private constructor(
    readonly o: JsonObject,
    readonly scope: Scope,
  ) {}

  /**
   * `v` as a message with the given fields (lowerCamelCase); undefined (and an error) if `v` is not
   * an object. Keys outside `known` are warned about; `@type` is always allowed.
   */
  static read(v: unknown, scope: Scope, known: readonly string[]): Msg | undefined {
    if (!isObject(v)) return scope.error(`expected an object, got ${typeName(v)}`);
    const m = new Msg(v, scope);
    for (const k of known) {
      const s = snakeOf(k);
      if (s !== k && hasOwn(v, k) && hasOwn(v, s)) scope.at(k).error(`given twice, as "${k}" and "${s}"`);
    }
    for (const k of Object.keys(v)) {
      if (k !== '@type' && !known.includes(k) && !known.some((n) => snakeOf(n) === k)) scope.at(k).warn('unknown field, ignored');
    }
    return m;
  }

  /** The key under which field `name` is present, in either spelling. */
  key(name: string): string | undefined {
    if (hasOwn(this.o, name)) return name;
    const s = snakeOf(name);
    return s !== name && hasOwn(this.o, s) ? s : undefined;
  }
  has(name: string): boolean {
    return this.key(name) !== undefined;
  }
  get(name: string): unknown {
    const k = this.key(name);
    return k === undefined ? undefined : this.o[k];
  }
  at(name: string): Scope {
    return this.scope.at(this.key(name) ?? name);
  }

  str(name: string, opts: { required?: boolean; minLen?: number } = {}): string | undefined {
    const v = this.get(name);
    if (v === undefined || v === null) {
      return opts.required ? this.at(name).error('required field missing') : undefined;
    }
    if (typeof v !== 'string') return this.at(name).error(`expected a string, got ${typeName(v)}`);
    if (opts.minLen !== undefined && v.length < opts.minLen) {
      return this.at(name).error(opts.minLen === 1 ? 'must not be empty' : `must be at least ${opts.minLen} characters`);
    }
    return v;
  }

  bool(name: string): boolean | undefined {
    const v = this.get(name);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') return this.at(name).error(`expected true or false, got ${typeName(v)}`);
    return v;
  }

  /**
   * An integer as proto3 JSON writes it: a number or a decimal string (64-bit types are strings).
   * Wrapper types (UInt32Value) are bare values in proto3 JSON; `{value: n}` is accepted too.
   */
  int(name: string, opts: { min: number; max: number; required?: boolean }): number | undefined {
    let v = this.get(name);
    if (isObject(v) && hasOwn(v, 'value') && Object.keys(v).length === 1) v = v.value;
    if (v === undefined || v === null) return opts.required ? this.at(name).error('required field missing') : undefined;
    const n = parseIntValue(v);
    if (n === undefined) return this.at(name).error(`expected an integer, got ${typeName(v)}`);
    if (n < opts.min || n > opts.max) return this.at(name).error(`${n} is out of range [${opts.min}, ${opts.max}]`);
    return n;
  }

  /** A 64-bit integer (Int64Range bounds), kept exact as a bigint. */
  int64(name: string): bigint | undefined {
    const v = this.get(name);
    if (v === undefined || v === null) return 0n; // proto3 default
    let b: bigint | undefined;
    if (typeof v === 'number' && Number.isSafeInteger(v)) b = BigInt(v);
    else if (typeof v === 'string' && /^-?\d{1,19}$/.test(v)) b = BigInt(v);
    if (b === undefined || b < -(2n ** 63n) || b >= 2n ** 63n) return this.at(name).error(`expected a 64-bit integer, got ${typeName(v)}`);
    return b;
  }

  msg(name: string, known: readonly string[]): Msg | undefined {
    const v = this.get(name);
    if (v === undefined || v === null) return undefined;
    return Msg.read(v, this.at(name), known);
  }

  /** A repeated field: each element with its scope. */
  list(name: string, opts: { minItems?: number } = {}): Array<{ value: unknown; scope: Scope }> | undefined {
    const v = this.get(name);
    if (v === undefined || v === null) {
      if (opts.minItems) return this.at(name).error(`required: at least ${opts.minItems} item${opts.minItems > 1 ? 's' : ''}`);
      return [];
    }
    if (!Array.isArray(v)) return this.at(name).error(`expected a list, got ${typeName(v)}`);
    if (opts.minItems !== undefined && v.length < opts.minItems) {
      return this.at(name).error(`must have at least ${opts.minItems} item${opts.minItems > 1 ? 's' : ''}`);
    }
    const s = this.at(name);
    return v.map((value, i) => ({ value, scope: s.index(i) }));
  }

  /**
   * Which of the oneof members `names` are set. Reports "none set" when `required` and several set
   * always (a oneof holds one value; picking one silently would enforce a different policy).
   */
  oneof<T extends string>(names: readonly T[], what: string, required: boolean): T | undefined {
    const set = names.filter((n) => this.has(n) && this.get(n) !== null);
    if (set.length > 1) {
      this.scope.error(`${what}: only one of ${set.map((n) => this.key(n)).join(', ')} may be set`);
      return undefined;
    }
    if (set.length === 0) {
      if (required) {
        const unknown = Object.keys(this.o).filter((k) => k !== '@type');
        this.scope.error(
          `${what}: none of the supported fields is set${unknown.length ? ` (found ${unknown.map((k) => JSON.stringify(k)).join(', ')})` : ' (empty)'}; expected one of ${names.join(', ')}`,
        );
      }
      return undefined;
    }
    return set[0];
  }
}

export function parseIntValue(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) ? v : undefined;
  if (typeof v === 'string' && /^-?\d{1,15}$/.test(v)) return Number(v);
  return undefined;
}
