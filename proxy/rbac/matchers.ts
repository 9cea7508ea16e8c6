// The leaf matchers of RBAC: StringMatcher, RegexMatcher, HeaderMatcher, PathMatcher and the
// uri_template path matcher, with Envoy's semantics (source/common/common/matchers.cc,
// source/common/http/header_utility.cc, source/extensions/path/uri_template_lib). Each compiles to
// a closure; validation problems go to the scope (config-reader.ts) and make compile fail.

import { Msg, Scope } from './config-reader';
import { compileRe2, MAX_INPUT, Re2SyntaxError } from './re2';
import { EvalContext, fromBool, NO, Pred, Tri, UNKNOWN, YES } from './tri';
import { uriTemplateToRe2 } from './uri-template';

export type StrPred = (s: string, ctx: EvalContext) => Tri;

/** Envoy's ignore_case is absl's ASCII-only case folding: 'É' and 'é' stay different. */
export function asciiLower(s: string): string {
  let out = '';
  let from = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x41 && c <= 0x5a) {
      out += s.slice(from, i) + String.fromCharCode(c + 32);
      from = i + 1;
    }
  }
  return from === 0 ? s : out + s.slice(from);
}

/** envoy.type.matcher.v3.RegexMatcher: RE2, whole-input match. */
export function compileRegexMatcher(v: unknown, scope: Scope, what: string): StrPred | undefined {
  const m = Msg.read(v, scope, ['googleRe2', 'regex']);
  if (!m) return undefined;
  if (m.has('googleRe2')) m.at('googleRe2').warn('google_re2 (max_program_size) is deprecated and ignored; sockmesh applies its own program size limit');
  const src = m.str('regex', { required: true, minLen: 1 });
  if (src === undefined) return undefined;
  let re;
  try {
    re = compileRe2(src);
  } catch (e) {
    if (e instanceof Re2SyntaxError) {
      return m.at('regex').error(`invalid RE2 regex ${JSON.stringify(src)}: ${e.message} (at offset ${e.offset})`);
    }
    throw e;
  }
  const note = `${what}: regex ${JSON.stringify(src)} not evaluated on an input longer than ${MAX_INPUT} characters`;
  return (s, ctx) => {
    const r = re.fullMatch(s);
    if (r === undefined) {
      ctx.notes.push(note);
      return UNKNOWN;
    }
    return r ? YES : NO;
  };
}

const STRING_PATTERNS = ['exact', 'prefix', 'suffix', 'safeRegex', 'contains', 'custom'] as const;

/** envoy.type.matcher.v3.StringMatcher. `what` names the matched attribute in notes. */
export function compileStringMatcher(v: unknown, scope: Scope, what: string): StrPred | undefined {
  const m = Msg.read(v, scope, [...STRING_PATTERNS, 'ignoreCase']);
  if (!m) return undefined;
  const kind = m.oneof(STRING_PATTERNS, 'string matcher', true);
  const ic = m.bool('ignoreCase') === true;
  switch (kind) {
    case undefined:
      return undefined;
    case 'exact': {
      const x = m.str('exact');
      if (x === undefined) return undefined; // not a string: reported
      if (!ic) return (s) => fromBool(s === x);
      const lx = asciiLower(x);
      return (s) => fromBool(s.length === lx.length && asciiLower(s) === lx);
    }
    case 'prefix': {
      const x = m.str('prefix', { minLen: 1 });
      if (x === undefined) return undefined;
      if (!ic) return (s) => fromBool(s.startsWith(x));
      const lx = asciiLower(x);
      return (s) => fromBool(s.length >= lx.length && asciiLower(s.slice(0, lx.length)) === lx);
    }
    case 'suffix': {
      const x = m.str('suffix', { minLen: 1 });
      if (x === undefined) return undefined;
      if (!ic) return (s) => fromBool(s.endsWith(x));
      const lx = asciiLower(x);
      return (s) => fromBool(s.length >= lx.length && asciiLower(s.slice(s.length - lx.length)) === lx);
    }
    case 'contains': {
      const x = m.str('contains', { minLen: 1 });
      if (x === undefined) return undefined;
      if (!ic) return (s) => fromBool(s.includes(x));
      const lx = asciiLower(x);
      return (s) => fromBool(asciiLower(s).includes(lx));
    }
    case 'safeRegex':
      // Envoy refuses this combination ("ignore_case has no effect for safe_regex"): use (?i).
      if (ic) return m.at('ignoreCase').error('ignore_case has no effect for safe_regex (Envoy rejects it); use (?i) in the regex');
      return compileRegexMatcher(m.get('safeRegex'), m.at('safeRegex'), what);
    case 'custom': {
      const desc = `${what}: custom string matcher extension`;
      m.at('custom').warn(`${desc} cannot be evaluated by sockmesh; it fails closed`);
      return (_s, ctx) => {
        ctx.notes.push(desc);
        return UNKNOWN;
      };
    }
  }
}

/**
 * envoy.config.route.v3.HeaderMatcher, as HeaderUtility::matchHeaders:
 *  - header absent and not treat_missing_header_as_empty: only a present_match decides —
 *    present_match:false matches, present_match:true does not — and invert_match flips that
 *    result; every other kind does NOT match an absent header, inverted or not
 *    (`invert_match` + `exact_match: x` does not match a request without the header);
 *  - treat_missing_header_as_empty: an absent header is the value "" and goes through the
 *    ordinary match, then the inversion;
 *  - `exact_match: ""` matches any value (Envoy's HeaderDataExactMatch), `string_match.exact: ""`
 *    only the empty value;
 *  - range_match is [start, end) over the value parsed as absl::SimpleAtoi does (surrounding
 *    whitespace and a sign allowed, 64 bits);
 *  - no match specifier at all means present_match: true.
 * The name is lower-cased (Envoy's LowerCaseString); pseudo-headers (:method, :path, :authority)
 * are ordinary names here.
 */
export function compileHeaderMatcher(v: unknown, scope: Scope): Pred | undefined {
  const kinds = ['exactMatch', 'safeRegexMatch', 'rangeMatch', 'presentMatch', 'prefixMatch', 'suffixMatch', 'containsMatch', 'stringMatch'] as const;
  const m = Msg.read(v, scope, ['name', ...kinds, 'invertMatch', 'treatMissingHeaderAsEmpty']);
  if (!m) return undefined;
  const rawName = m.str('name', { required: true, minLen: 1 });
  if (rawName !== undefined && /[\0\r\n]/.test(rawName)) m.at('name').error('not a valid header name');
  const name = asciiLower(rawName ?? '');
  const invert = m.bool('invertMatch') === true;
  const treatMissing = m.bool('treatMissingHeaderAsEmpty') === true;
  const kind = m.oneof(kinds, 'header matcher', false);
  const what = `header ${JSON.stringify(name)}`;
  let match: StrPred | undefined;
  let present: boolean | undefined; // set for a present match
  switch (kind) {
    case undefined:
      present = true;
      break;
    case 'presentMatch':
      present = m.bool('presentMatch');
      if (present === undefined) return undefined;
      break;
    case 'exactMatch': {
      const x = m.str('exactMatch');
      if (x === undefined) return undefined;
      match = (s) => fromBool(x === '' || s === x);
      break;
    }
    case 'prefixMatch': {
      const x = m.str('prefixMatch', { minLen: 1 });
      if (x === undefined) return undefined;
      match = (s) => fromBool(s.startsWith(x));
      break;
    }
    case 'suffixMatch': {
      const x = m.str('suffixMatch', { minLen: 1 });
      if (x === undefined) return undefined;
      match = (s) => fromBool(s.endsWith(x));
      break;
    }
    case 'containsMatch': {
      const x = m.str('containsMatch', { minLen: 1 });
      if (x === undefined) return undefined;
      match = (s) => fromBool(s.includes(x));
      break;
    }
    case 'safeRegexMatch':
      match = compileRegexMatcher(m.get('safeRegexMatch'), m.at('safeRegexMatch'), what);
      break;
    case 'stringMatch':
      match = compileStringMatcher(m.get('stringMatch'), m.at('stringMatch'), what);
      break;
    case 'rangeMatch': {
      const r = m.msg('rangeMatch', ['start', 'end']);
      if (!r) return undefined;
      const start = r.int64('start');
      const end = r.int64('end');
      if (start === undefined || end === undefined) return undefined;
      match = (s) => {
        const n = simpleAtoi64(s);
        return fromBool(n !== undefined && n >= start && n < end);
      };
      break;
    }
  }
  if (rawName === undefined) return undefined;
  if (present !== undefined) {
    const want = present;
    return (view) => {
      const value = view.header(name);
      const isMatch = value === undefined && !treatMissing ? !want : want;
      return fromBool(isMatch !== invert);
    };
  }
  if (!match) return undefined;
  const specific = match;
  return (view, ctx) => {
    let value = view.header(name);
    if (value === undefined) {
      if (!treatMissing) return NO;
      value = '';
    }
    const r = specific(value, ctx);
    if (r === UNKNOWN) return UNKNOWN;
    return fromBool((r === YES) !== invert);
  };
}

/** absl::SimpleAtoi for int64: optional surrounding ASCII whitespace, optional sign, decimal digits. */
export function simpleAtoi64(s: string): bigint | undefined {
  const m = /^[\t\n\v\f\r ]*([+-]?[0-9]+)[\t\n\v\f\r ]*$/.exec(s);
  if (!m) return undefined;
  const n = BigInt(m[1]);
  return n < -(2n ** 63n) || n >= 2n ** 63n ? undefined : n;
}

/** Path without query and fragment, as Envoy's PathUtil::removeQueryAndFragment. */
export function stripQuery(path: string): string {
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 0x3f || c === 0x23) return path.slice(0, i);
  }
  return path;
}

/** envoy.type.matcher.v3.PathMatcher: a StringMatcher on the path without query; no request → no match. */
export function compilePathMatcher(v: unknown, scope: Scope): Pred | undefined {
  const m = Msg.read(v, scope, ['path']);
  if (!m) return undefined;
  if (m.oneof(['path'], 'path matcher', true) === undefined) return undefined;
  const sm = compileStringMatcher(m.get('path'), m.at('path'), 'url path');
  if (!sm) return undefined;
  return (view, ctx) => (view.urlPath === undefined ? NO : sm(view.urlPath, ctx));
}

const URI_TEMPLATE_TYPE = 'envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig';

/**
 * Permission.uri_template: a TypedExtensionConfig holding UriTemplateMatchConfig. The template is
 * turned into the regex Envoy builds for it and matched, with the linear-time engine, against the
 * path without query (no request: the empty path, which no template matches).
 */
export function compileUriTemplate(v: unknown, scope: Scope): Pred | undefined {
  const m = Msg.read(v, scope, ['name', 'typedConfig']);
  if (!m) return undefined;
  m.str('name', { required: true, minLen: 1 });
  const tc = m.msg('typedConfig', ['pathTemplate']);
  if (!tc) return m.at('typedConfig').error('required field missing');
  const type = tc.o['@type'];
  if (typeof type !== 'string' || type.slice(type.lastIndexOf('/') + 1) !== URI_TEMPLATE_TYPE) {
    return tc.scope.at('@type').error(`unsupported path matcher extension ${JSON.stringify(type)} (supported: ${URI_TEMPLATE_TYPE})`);
  }
  const template = tc.str('pathTemplate', { required: true, minLen: 1 });
  if (template === undefined) return undefined;
  if (template.length > 256) return tc.at('pathTemplate').error('longer than 256 characters');
  let source: string;
  try {
    source = uriTemplateToRe2(template);
  } catch (e) {
    return tc.at('pathTemplate').error(`invalid uri template ${JSON.stringify(template)}: ${(e as Error).message}`);
  }
  const re = compileRe2(source, { maxProgram: 100_000 }); // built by us from ≤256 characters: bounded
  const note = `uri template ${JSON.stringify(template)} not evaluated on a path longer than ${MAX_INPUT} characters`;
  return (view, ctx) => {
    const r = re.fullMatch(view.urlPath ?? '');
    if (r === undefined) {
      ctx.notes.push(note);
      return UNKNOWN;
    }
    return r ? YES : NO;
  };
}
