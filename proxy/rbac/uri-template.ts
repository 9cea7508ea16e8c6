// Envoy's URI templates (envoy.extensions.path.match.uri_template.v3), which Istio emits for the
// path forms `{*}` and `{**}`: parsed with Envoy's rules (source/extensions/path/uri_template_lib)
// and turned into the same regular expression Envoy matches, in RE2 syntax for re2.ts.
//
//   /a/*/c          `*`  one path segment: [pchar]+  (no "/")
//   /a/**           `**` any text, "/" included, possibly empty: [pchar/]*
//   /a/{id}         a variable: `*` unless given, {id=*}, {id=**}, {id=x/*/y}
//   /a/*.txt        text after the last operator is a suffix of that segment
//
// Segments are joined by "/" in the regex, so `**` always sits between the slashes written
// around it: `/**/x` matches `/a/b/x` and `//x` but NOT `/x`, and `/a/**` matches `/a/` but not
// `/a` — exactly as Envoy (and therefore Istio's `/{**}/x`) behaves.
// Rejected as Envoy rejects them: no leading "/", non-printable or non-ASCII characters, empty
// or invalid literals (`//`, `a*`), a glob after `**`, more than 5 variables, variable names not
// [a-zA-Z][a-zA-Z0-9_]* of 1..16 characters or repeated, a "/" after a suffix.

// RFC 3986 pchar, minus `*` and `=` handling exactly as Envoy's kLiteral.
const LITERAL_CHARS = "a-zA-Z0-9\\-._~%!$&'()+,;:@=";
const LITERAL_RE = new RegExp(`^[${LITERAL_CHARS}]+$`);
const ONE_SEGMENT = `[${LITERAL_CHARS}]+`;
const ANY_TEXT = `[${LITERAL_CHARS}/]*`;

type Part = { op: '*' | '**' } | { literal: string };
type Segment = Part | { variable: string; match: Part[] };

/** RE2 escaping of a literal: every ASCII punctuation character may be escaped in RE2. */
function escapeLiteral(s: string): string {
  return s.replace(/[^A-Za-z0-9]/g, (c) => '\\' + c);
}

function checkLiteral(s: string): string {
  if (!LITERAL_RE.test(s)) throw new Error(`invalid literal ${JSON.stringify(s)}`);
  return s;
}

function partToRe(p: Part): string {
  if ('op' in p) return p.op === '*' ? ONE_SEGMENT : ANY_TEXT;
  return escapeLiteral(p.literal);
}

function segmentToRe(s: Segment): string {
  if ('variable' in s) return `(?:${s.match.length ? s.match.map(partToRe).join('/') : ONE_SEGMENT})`;
  return partToRe(s);
}

function parseVariable(body: string): Segment {
  const eq = body.indexOf('=');
  const name = eq < 0 ? body : body.slice(0, eq);
  if (!/^[a-zA-Z][a-zA-Z0-9_]*$/.test(name)) throw new Error(`invalid variable name ${JSON.stringify(name)}`);
  if (name.length > 16) throw new Error(`variable name ${JSON.stringify(name)} is longer than 16 characters`);
  if (eq < 0) return { variable: name, match: [] };
  let rest = body.slice(eq + 1);
  if (rest === '') throw new Error(`empty match for variable ${name}`);
  const match: Part[] = [];
  while (rest !== '') {
    if (rest.startsWith('**')) {
      match.push({ op: '**' });
      rest = rest.slice(2);
    } else if (rest.startsWith('*')) {
      match.push({ op: '*' });
      rest = rest.slice(1);
    } else {
      const slash = rest.indexOf('/');
      const lit = slash < 0 ? rest : rest.slice(0, slash);
      match.push({ literal: checkLiteral(lit) });
      rest = rest.slice(lit.length);
    }
    if (rest !== '') {
      if (rest[0] !== '/' || rest.length === 1) throw new Error(`invalid match for variable ${name}`);
      rest = rest.slice(1);
    }
  }
  return { variable: name, match };
}

/** The RE2 pattern Envoy matches for `template`; throws Error with the reason if Envoy would reject it. */
export function uriTemplateToRe2(template: string): string {
  if (!/^\/[\x21-\x7e]*$/.test(template)) throw new Error('must start with "/" and hold only printable ASCII characters');
  let rest = template.slice(1);
  const segments: Segment[] = [];
  let suffix = '';
  while (rest !== '') {
    if (rest.startsWith('**')) {
      segments.push({ op: '**' });
      rest = rest.slice(2);
    } else if (rest.startsWith('*')) {
      segments.push({ op: '*' });
      rest = rest.slice(1);
    } else if (rest.startsWith('{')) {
      const close = rest.indexOf('}');
      if (close < 0) throw new Error('unmatched "{"');
      segments.push(parseVariable(rest.slice(1, close)));
      rest = rest.slice(close + 1);
    } else {
      const slash = rest.indexOf('/');
      const lit = slash < 0 ? rest : rest.slice(0, slash);
      segments.push({ literal: checkLiteral(lit) });
      rest = rest.slice(lit.length);
    }
    if (rest === '') break;
    if (rest === '/') {
      segments.push({ literal: '' }); // a trailing "/"
      break;
    }
    if (rest[0] === '/') {
      rest = rest.slice(1);
      continue;
    }
    // text glued to an operator or variable: the suffix of the last segment
    if (rest.includes('/')) throw new Error(`"/" after the suffix ${JSON.stringify(rest)} (prefix match is not supported)`);
    suffix = checkLiteral(rest);
    break;
  }

  const names = new Set<string>();
  let textGlobSeen = false;
  const glob = (op: '*' | '**'): void => {
    if (textGlobSeen) throw new Error('no "*" or "**" may follow "**"');
    textGlobSeen = op === '**';
  };
  for (const s of segments) {
    if ('variable' in s) {
      if (names.has(s.variable)) throw new Error(`variable ${s.variable} repeated`);
      names.add(s.variable);
      if (names.size > 5) throw new Error('more than 5 variables');
      if (s.match.length === 0) glob('*');
      for (const p of s.match) if ('op' in p) glob(p.op);
    } else if ('op' in s) glob(s.op);
  }
  return '/' + segments.map(segmentToRe).join('/') + escapeLiteral(suffix);
}
