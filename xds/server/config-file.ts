// The control plane's config file: the agent's local-file format (config/README.md)
// plus an optional top-level `xds:` list of raw resources in proto3 JSON, each with its `@type`
// (one of the six type URLs of xds/types.ts), served as they are beside the generated ones (a
// raw resource replaces a generated one of the same type and name):
//
//   xds:
//     - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
//       name: outbound|8080||legacy.default.svc.cluster.local
//       type: STATIC
//       ...
//
// The agent's loader rejects unknown keys, so the `xds:` entry is blanked out of the text (spaces,
// newlines kept) before the rest goes to it: every position in its errors stays right. Errors in
// the list are reported the same way, FILE:LINE:COL: xds[I]...: REASON.

import { readFileSync } from 'node:fs';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode, type Pair } from 'yaml';
import { ConfigError, isConfigError, type ConfigIssue } from '../../config/errors';
import { parseConfigText, type LoadedConfig } from '../../config/local-file';
import type { Json, TypeUrl } from '../types';
import { encodeJson } from '../proto/json';
import { isTypeUrl, resourceName, SHORT_NAME } from '../proto/resource-types';
import { ALL_TYPES } from '../types';

export interface ExtraResource {
  typeUrl: TypeUrl;
  name: string;
  /** proto3 JSON without `@type`. */
  json: Json;
}

export interface ControlPlaneConfig {
  loaded: LoadedConfig;
  extra: ExtraResource[];
}

/** Replaces text[from, to) by spaces, keeping newlines (so line/column positions do not move). */
function blank(text: string, from: number, to: number): string {
  return text.slice(0, from) + text.slice(from, to).replace(/[^\n\r]/g, ' ') + text.slice(to);
}

/** Removes the `xds` pair from the text, flow-style commas included; returns the text and the value node. */
function extractXds(text: string): { rest: string; node: YamlNode | null | undefined; found: boolean } {
  const doc = parseDocument(text, { uniqueKeys: true, merge: false });
  if (doc.errors.length || !isMap(doc.contents)) return { rest: text, node: undefined, found: false };
  const items = doc.contents.items as Pair[];
  const idx = items.findIndex((p) => isScalar(p.key) && p.key.value === 'xds');
  if (idx < 0) return { rest: text, node: undefined, found: false };
  const pair = items[idx];
  const key = pair.key as YamlNode;
  const value = pair.value as YamlNode | null;
  const from = key.range?.[0] ?? 0;
  let to = value?.range?.[1] ?? key.range?.[1] ?? from;
  let start = from;
  if (doc.contents.flow) {
    // `{a: 1, xds: [...], b: 2}`: take the comma after the pair, or else the one before it.
    const after = /^\s*,/.exec(text.slice(to));
    if (after) to += after[0].length;
    else {
      const before = /,\s*$/.exec(text.slice(0, start));
      if (before) start -= before[0].length;
    }
  }
  return { rest: blank(text, start, to), node: value, found: true };
}

/**
 * Parses and validates control-plane config text. Throws ConfigError listing every problem (the
 * agent's format rules and the `xds:` list's).
 */
export function parseControlPlaneText(text: string, file = '<config>'): ControlPlaneConfig {
  const { rest, node, found } = extractXds(text);
  const issues: ConfigIssue[] = [];
  let loaded: LoadedConfig | undefined;
  try {
    loaded = parseConfigText(rest, file);
  } catch (e) {
    if (!isConfigError(e)) throw e;
    issues.push(...e.errors);
  }
  const extra: ExtraResource[] = [];
  if (found) {
    const lc = new LineCounter();
    // Positions come from a second parse with a LineCounter over the original text.
    const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true, merge: false });
    const xdsNode = isMap(doc.contents) ? (doc.contents.get('xds', true) as YamlNode | undefined) : node;
    const at = (n: YamlNode | null | undefined, path: string, reason: string) => {
      const off = n?.range?.[0];
      if (off === undefined) issues.push({ file, path, reason });
      else {
        const { line, col } = lc.linePos(off);
        issues.push({ file, path, line, col, reason });
      }
    };
    if (xdsNode === null || xdsNode === undefined || (isScalar(xdsNode) && xdsNode.value === null)) {
      // `xds:` with nothing: an empty list.
    } else if (!isSeq(xdsNode)) {
      at(xdsNode, 'xds', 'expected a list of resources (each a mapping with "@type")');
    } else {
      const seen = new Set<string>();
      xdsNode.items.forEach((item, i) => {
        const path = `xds[${i}]`;
        const n = item as YamlNode;
        if (!isMap(n)) return at(n, path, 'expected a mapping with "@type" and the fields of the resource');
        const json = n.toJSON() as Json;
        const type = json['@type'];
        if (typeof type !== 'string') return at(n, `${path}.@type`, `missing "@type" (one of ${ALL_TYPES.join(', ')})`);
        if (!isTypeUrl(type)) return at(n.get('@type', true) as YamlNode, `${path}.@type`, `unsupported @type ${type} (expected one of ${ALL_TYPES.join(', ')})`);
        const { ['@type']: _drop, ...body } = json;
        try {
          encodeJson(type, body);
        } catch (e) {
          const sub = (e as { path?: string }).path ?? '';
          const msg = (e as Error).message.replace(`${sub || '(root)'}: `, '');
          // The JSON path as YAML keys: Any contents sit in the mapping that holds "@type", so the
          // "(type)" segments json.ts adds are skipped.
          const keys = sub.split(/\.|\[|\]/).filter((k) => k && !k.startsWith('(')).map((k) => (/^\d+$/.test(k) ? Number(k) : k));
          const target = keys.length ? (n.getIn(keys, true) as YamlNode | undefined) : undefined;
          return at(target ?? n, sub ? `${path}.${sub}` : path, `not a valid ${type.split('/').pop()}: ${msg}`);
        }
        const name = resourceName(type, body);
        if (!name) return at(n, path, `${SHORT_NAME[type]} resource has no name`);
        const key = `${type}\0${name}`;
        if (seen.has(key)) return at(n, path, `duplicate ${SHORT_NAME[type]} resource ${name}`);
        seen.add(key);
        extra.push({ typeUrl: type, name, json: body });
      });
    }
  }
  if (issues.length || !loaded) {
    issues.sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || (a.col ?? 0) - (b.col ?? 0));
    throw new ConfigError(issues);
  }
  return { loaded, extra };
}

/** Reads and parses a control-plane config file; throws ConfigError (an unreadable file included). */
export function loadControlPlaneFile(path: string): ControlPlaneConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError([{ file: path, path: '(file)', reason: `cannot read config file: ${(e as Error).message}` }]);
  }
  return parseControlPlaneText(text, path);
}
