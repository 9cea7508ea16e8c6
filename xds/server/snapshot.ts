// A snapshot: every resource the control plane serves, encoded once, with content-derived versions.
//
// A resource's version is a hash of its encoded bytes (and the Any type URL it is packed with), so
// the same content always has the same version — across pushes and across control-plane restarts.
// That is what lets a Delta client that reconnects with initial_resource_versions be sent nothing
// for what it already has. A type's version (SotW version_info) hashes its resources' names and
// versions; the global version (Delta system_version_info) hashes the type versions.

import { createHash } from 'node:crypto';
import { ALL_TYPES, type Json, type TypeUrl } from '../types';
import { XdsError } from '../../core/errors';
import { encodeJson } from '../proto/json';
import { SHORT_NAME, isTypeUrl, resourceName } from '../proto/resource-types';

/** One resource as served: encoded bytes plus the metadata the streams need. */
export interface ServedResource {
  typeUrl: TypeUrl;
  name: string;
  version: string;
  /** type_url of the Any the bytes are packed in; normally typeUrl, anything for raw test resources. */
  anyTypeUrl: string;
  value: Uint8Array;
}

/**
 * An entry of setSnapshot(): a resource in proto3 JSON form (an XdsResource; `version` is ignored
 * and `name` may be omitted when the JSON carries it), or raw bytes served as they are — the way
 * tests serve deliberately broken resources.
 */
export type SnapshotEntry =
  | { typeUrl: TypeUrl; name?: string; json: Json; version?: string }
  | { typeUrl: TypeUrl; name: string; raw: Uint8Array; anyTypeUrl?: string };

function hash(parts: Array<string | Uint8Array>): string {
  const h = createHash('sha256');
  for (const p of parts) {
    h.update(typeof p === 'string' ? Buffer.from(p) : p);
    h.update('\0');
  }
  return h.digest('hex').slice(0, 16);
}

export class Snapshot {
  readonly byType: ReadonlyMap<TypeUrl, ReadonlyMap<string, ServedResource>>;
  readonly typeVersions: ReadonlyMap<TypeUrl, string>;
  readonly version: string;

  private constructor(byType: Map<TypeUrl, Map<string, ServedResource>>) {
    this.byType = byType;
    const tv = new Map<TypeUrl, string>();
    for (const t of ALL_TYPES) {
      const rs = [...(byType.get(t)?.values() ?? [])].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      tv.set(t, hash(rs.flatMap((r) => [r.name, r.version])));
    }
    this.typeVersions = tv;
    this.version = hash(ALL_TYPES.map((t) => tv.get(t) as string));
  }

  static empty(): Snapshot {
    return new Snapshot(new Map());
  }

  /**
   * Encodes and versions the entries. Throws XdsError (SM_XDS_JSON for JSON that does not fit its
   * type, SM_XDS_INVALID_RESOURCE for a missing or duplicate name) naming the entry.
   */
  static build(entries: Iterable<SnapshotEntry>): Snapshot {
    const byType = new Map<TypeUrl, Map<string, ServedResource>>();
    let i = 0;
    for (const e of entries) {
      const where = `snapshot entry ${i++}`;
      if (!isTypeUrl(e.typeUrl)) throw new XdsError('SM_XDS_INVALID_RESOURCE', `${where}: unknown type URL ${String(e.typeUrl)}`);
      let value: Uint8Array;
      let anyTypeUrl: string = e.typeUrl;
      let name = e.name;
      if ('raw' in e) {
        value = e.raw;
        anyTypeUrl = e.anyTypeUrl ?? e.typeUrl;
      } else {
        name = name ?? resourceName(e.typeUrl, e.json);
        try {
          value = encodeJson(e.typeUrl, e.json);
        } catch (err) {
          throw new XdsError('SM_XDS_JSON', `${where} (${SHORT_NAME[e.typeUrl]} ${name ?? '?'}): ${(err as Error).message}`, { cause: err });
        }
      }
      if (!name) throw new XdsError('SM_XDS_INVALID_RESOURCE', `${where} (${SHORT_NAME[e.typeUrl]}): resource has no name`);
      let m = byType.get(e.typeUrl);
      if (!m) byType.set(e.typeUrl, (m = new Map()));
      if (m.has(name)) throw new XdsError('SM_XDS_INVALID_RESOURCE', `${where}: duplicate ${SHORT_NAME[e.typeUrl]} resource ${name}`);
      m.set(name, { typeUrl: e.typeUrl, name, version: hash([anyTypeUrl, value]), anyTypeUrl, value });
    }
    return new Snapshot(byType);
  }

  resources(typeUrl: TypeUrl): ReadonlyMap<string, ServedResource> {
    return this.byType.get(typeUrl) ?? new Map();
  }

  typeVersion(typeUrl: TypeUrl): string {
    return this.typeVersions.get(typeUrl) as string;
  }

  /** Number of resources per type, for logs. */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of ALL_TYPES) out[SHORT_NAME[t]] = this.resources(t).size;
    return out;
  }
}
