// The request target as the policy sees it and the upstream receives it: one string for both, so
// that a rule on "/admin" cannot be walked around with "/./admin", "/x/../admin" or "/%61dmin".
//
// Absolute-form (`GET http://other/x HTTP/1.1`) is accepted the way any origin server must accept
// it (RFC 9112 §3.2.2): the target's authority replaces Host, and the request is rewritten to
// origin-form. It never chooses where the request goes — that is the kernel-recorded destination.

export type TargetResult =
  | { ok: true; path: string; authority?: string }
  | { ok: false; reason: string };

export interface TargetOptions {
  normalize: boolean;
  mergeSlashes: boolean;
  /** HTTP/1.1 allows absolute-form; an HTTP/2 :path does not. */
  allowAbsolute: boolean;
}

// RFC 3986 §3.2.2 reg-name / IPv4 / IP-literal, then an optional port.
const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::\d{0,5})?$/;
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

export function validAuthority(a: string): boolean {
  return AUTHORITY.test(a);
}

export function parseRequestTarget(method: string, target: string, opts: TargetOptions): TargetResult {
  if (target === '*') {
    return method === 'OPTIONS' ? { ok: true, path: '*' } : { ok: false, reason: 'asterisk-form is only allowed with OPTIONS' };
  }
  let authority: string | undefined;
  let rest = target;
  if (!target.startsWith('/')) {
    if (!opts.allowAbsolute) return { ok: false, reason: 'request target must start with "/"' };
    const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(.*)$/s.exec(target);
    if (!m) return { ok: false, reason: 'request target is neither origin-form nor absolute-form' };
    if (m[1].toLowerCase() !== 'http') return { ok: false, reason: `absolute-form with scheme "${m[1]}" is not served` };
    authority = m[2];
    if (authority === '' || authority.includes('@') || !validAuthority(authority)) {
      return { ok: false, reason: 'absolute-form needs a valid host and no userinfo' };
    }
    rest = m[3] === '' ? '/' : m[3].startsWith('?') ? '/' + m[3] : m[3];
  }
  if (rest.includes('#')) return { ok: false, reason: 'fragment in request target' };
  const q = rest.indexOf('?');
  const pathPart = q < 0 ? rest : rest.slice(0, q);
  const query = q < 0 ? '' : rest.slice(q);
  let path = pathPart;
  if (opts.normalize) {
    const n = normalizePath(pathPart, opts.mergeSlashes);
    if (n === undefined) return { ok: false, reason: 'malformed percent-encoding in path' };
    path = n;
  }
  return authority === undefined ? { ok: true, path: path + query } : { ok: true, path: path + query, authority };
}

/**
 * RFC 3986 §6.2.2 normalisation of an absolute path (no query): percent-encoded unreserved
 * characters decoded (so "%2E%2E" is a dot segment), other percent-encodings upper-cased
 * ("%2f" → "%2F", never decoded: an encoded slash is not a separator), dot segments removed
 * (§5.2.4); with `mergeSlashes`, runs of "/" collapsed. `undefined` for a malformed "%".
 * Backslashes are left alone (they are not separators for HTTP, unlike for some file servers).
 */
export function normalizePath(path: string, mergeSlashes: boolean): string | undefined {
  // The common case, returned as is: nothing to decode, and no "." or ".." segment (every segment of
  // an absolute path follows a "/", so without "/." there is none) — what the loops below would return.
  if (!path.includes('%') && !path.includes('/.') && !(mergeSlashes && path.includes('//'))) return path;
  let decoded = '';
  for (let i = 0; i < path.length; i++) {
    const c = path[i];
    if (c !== '%') {
      decoded += c;
      continue;
    }
    const hex = path.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return undefined;
    const ch = String.fromCharCode(parseInt(hex, 16));
    decoded += UNRESERVED.test(ch) ? ch : '%' + hex.toUpperCase();
    i += 2;
  }
  let out = removeDotSegments(decoded);
  if (mergeSlashes) out = out.replace(/\/{2,}/g, '/');
  return out;
}

function removeDotSegments(p: string): string {
  if (!p.startsWith('/')) return p;
  const segs = p.split('/');
  const out: string[] = [];
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i];
    const last = i === segs.length - 1;
    if (s === '.' || s === '..') {
      if (s === '..') out.pop();
      if (last) out.push('');
      continue;
    }
    out.push(s);
  }
  return '/' + out.join('/');
}
