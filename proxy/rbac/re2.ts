// RE2-syntax regular expressions, matched in linear time.
//
// Envoy's `safe_regex` is RE2: no backtracking, so no input can make a match take more than
// O(input × program) time. A JavaScript RegExp backtracks, and `(a+)+$`-shaped patterns (or merely
// `(.*a){12}` on the wrong input) can hang the event loop — the whole proxy. So patterns are parsed
// here with RE2's syntax and rules, compiled to a Thompson NFA and simulated state-set by
// state-set, with a lazily built DFA cache as RE2 has (see NfaMatcher). JS RegExp is used only to test ONE
// code point against a character class (no quantifier there, nothing to backtrack), which gives
// Unicode properties and case folding for free.
//
// Semantics (RE2 with Envoy's options: UTF-8, Perl classes, longest-match off):
//   - Envoy matches with RE2::FullMatch: the whole input must match (anchored at both ends).
//   - `.` is any code point but `\n` (with (?s) also `\n`); JS's `.` would also skip `\r`, U+2028/9.
//   - `\d` [0-9], `\s` [\t\n\f\r ], `\w` [0-9A-Za-z_], `\b` ASCII word boundary — RE2's ASCII
//     definitions, not JS's Unicode `\s`.
//   - `^`/`$` are text anchors; with (?m) line anchors. `$` does not match before a final `\n`.
//   - Flags (?i) (?m) (?s) (?U), scoped to the group, also as (?i:...) and with `-`.
//   - Repetition counts up to 1000, stacked repetition (`a**`) is an error, as in RE2.
// Rejected, as RE2 rejects them: backreferences, lookaround, possessive/stacked quantifiers,
// unknown escapes. Rejected although RE2 accepts them (rare; we say so rather than guess):
// `\C` (single byte) and `\Q...\E` inside a character class.
//
// Limits (documented in README.md): a program of more than MAX_PROGRAM states is rejected at
// compile time; an input longer than MAX_INPUT code units is not matched (the caller fails closed).

export const MAX_PROGRAM = 1000;
export const MAX_INPUT = 65536;
const MAX_DFA_STATES = 256;
const MAX_REPEAT = 1000;
const MAX_NESTING = 1000; // RE2's maximum nesting depth of groups

export class Re2SyntaxError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
    this.name = 'Re2SyntaxError';
  }
}

type CharTest = (cp: number) => boolean;
type Assertion = 'bot' | 'eot' | 'bol' | 'eol' | 'wordb' | 'nonwordb';

type Node =
  | { k: 'empty' }
  | { k: 'char'; test: CharTest }
  | { k: 'cat'; xs: Node[] }
  | { k: 'alt'; xs: Node[] }
  | { k: 'rep'; x: Node; min: number; max: number } // max -1: unbounded
  | { k: 'assert'; a: Assertion };

interface Flags {
  i: boolean;
  m: boolean;
  s: boolean;
}

const EMPTY: Node = { k: 'empty' };
const MAX_CP = 0x10ffff;

// ---------------------------------------------------------------------------------------------
// Character classes: a list of code point ranges plus JS `\p{..}` parts, tested with one JS RegExp
// over a single code point (cached for ASCII).

type Range = [number, number];

const R_DIGIT: Range[] = [[0x30, 0x39]];
const R_SPACE: Range[] = [[0x09, 0x0a], [0x0c, 0x0d], [0x20, 0x20]];
const R_WORD: Range[] = [[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]];

const POSIX: Record<string, Range[]> = {
  alnum: [[0x30, 0x39], [0x41, 0x5a], [0x61, 0x7a]],
  alpha: [[0x41, 0x5a], [0x61, 0x7a]],
  ascii: [[0x00, 0x7f]],
  blank: [[0x09, 0x09], [0x20, 0x20]],
  cntrl: [[0x00, 0x1f], [0x7f, 0x7f]],
  digit: [[0x30, 0x39]],
  graph: [[0x21, 0x7e]],
  lower: [[0x61, 0x7a]],
  print: [[0x20, 0x7e]],
  punct: [[0x21, 0x2f], [0x3a, 0x40], [0x5b, 0x60], [0x7b, 0x7e]],
  space: [[0x09, 0x0d], [0x20, 0x20]],
  upper: [[0x41, 0x5a]],
  word: R_WORD,
  xdigit: [[0x30, 0x39], [0x41, 0x46], [0x61, 0x66]],
};

function complement(rs: Range[]): Range[] {
  const sorted = [...rs].sort((a, b) => a[0] - b[0]);
  const out: Range[] = [];
  let next = 0;
  for (const [lo, hi] of sorted) {
    if (lo > next) out.push([next, lo - 1]);
    next = Math.max(next, hi + 1);
  }
  if (next <= MAX_CP) out.push([next, MAX_CP]);
  return out;
}

const hex = (cp: number): string => `\\u{${cp.toString(16)}}`;

class ClassBuilder {
  ranges: Range[] = [];
  props: string[] = []; // JS class items such as \p{Lu}, \P{Script=Greek}
  addRanges(rs: Range[]): void {
    for (const r of rs) this.ranges.push(r);
  }
  build(negated: boolean, fold: boolean): CharTest {
    const body = this.ranges.map(([lo, hi]) => (lo === hi ? hex(lo) : `${hex(lo)}-${hex(hi)}`)).join('') + this.props.join('');
    const re = new RegExp(`^[${negated ? '^' : ''}${body}]$`, fold ? 'iu' : 'u');
    const slow: CharTest = (cp) => re.test(String.fromCodePoint(cp));
    const ascii = new Uint8Array(128);
    // Plain ranges (the usual case) are tabulated directly; with Unicode properties, or case
    // folding of non-ASCII ranges (the Kelvin sign folds to 'k'), JS decides.
    const direct = this.props.length === 0 && (!fold || this.ranges.every(([, hi]) => hi < 128));
    if (direct) {
      for (const [lo, hi] of this.ranges) {
        for (let c = lo; c <= Math.min(hi, 127); c++) {
          ascii[c] = 1;
          if (fold && ((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a))) ascii[c ^ 0x20] = 1;
        }
      }
      if (negated) for (let c = 0; c < 128; c++) ascii[c] ^= 1;
    } else {
      for (let c = 0; c < 128; c++) ascii[c] = slow(c) ? 1 : 0;
    }
    const ranges = this.ranges;
    const nonAscii: CharTest =
      direct && !fold
        ? (cp) => {
            for (const [lo, hi] of ranges) if (cp >= lo && cp <= hi) return !negated;
            return negated;
          }
        : slow;
    return (cp) => (cp < 128 ? ascii[cp] === 1 : nonAscii(cp));
  }
}

function literalTest(cp: number, fold: boolean): CharTest {
  if (!fold) return (c) => c === cp;
  const b = new ClassBuilder();
  b.ranges.push([cp, cp]);
  return b.build(false, true);
}

const dotTest = (s: boolean): CharTest => (s ? () => true : (c) => c !== 0x0a);

// ---------------------------------------------------------------------------------------------
// Parser

const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9';
const isOctal = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '7';
const isAsciiAlnum = (c: string): boolean => /^[0-9A-Za-z]$/.test(c);

class Parser {
  private pos = 0;
  private depth = 0;
  private names = new Set<string>();
  constructor(private readonly src: string) {}

  fail(msg: string, at = this.pos): never {
    throw new Re2SyntaxError(msg, at);
  }
  private peek(o = 0): string | undefined {
    return this.pos + o < this.src.length ? this.src[this.pos + o] : undefined;
  }
  private eat(s: string): boolean {
    if (this.src.startsWith(s, this.pos)) {
      this.pos += s.length;
      return true;
    }
    return false;
  }
  /** The next code point of the pattern (patterns may hold non-BMP characters). */
  private nextCodePoint(): number {
    const cp = this.src.codePointAt(this.pos)!;
    this.pos += cp > 0xffff ? 2 : 1;
    return cp;
  }

  parse(): Node {
    const n = this.alternation({ i: false, m: false, s: false });
    if (this.pos < this.src.length) this.fail(this.peek() === ')' ? 'unexpected )' : 'unexpected character');
    return n;
  }

  // Flags set by (?i) inside a group last until the group's end, across `|`: one Flags object per
  // group, shared by its branches.
  private alternation(outer: Flags): Node {
    const f: Flags = { ...outer };
    const branches: Node[] = [this.concatenation(f)];
    while (this.eat('|')) branches.push(this.concatenation(f));
    return branches.length === 1 ? branches[0] : { k: 'alt', xs: branches };
  }

  private concatenation(f: Flags): Node {
    const items: Node[] = [];
    for (;;) {
      const c = this.peek();
      if (c === undefined || c === '|' || c === ')') break;
      const start = this.pos;
      const atom = this.atom(f);
      if (atom === null) continue; // a flag group such as (?i): changes f, matches nothing
      items.push(this.repetitions(atom, start));
    }
    return items.length === 0 ? EMPTY : items.length === 1 ? items[0] : { k: 'cat', xs: items };
  }

  /** `{n}`, `{n,}`, `{n,m}` at the cursor, or null when the text there is not a repeat (then `{` is a literal, as in RE2). */
  private braces(): { min: number; max: number; len: number } | null {
    const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.pos, this.pos + 24));
    if (!m) return null;
    const min = Number(m[1]);
    const max = m[2] === undefined ? min : m[3] === '' ? -1 : Number(m[3]);
    return { min, max, len: m[0].length };
  }

  private repetitions(atom: Node, start: number): Node {
    let node = atom;
    let repeated = false;
    for (;;) {
      const c = this.peek();
      let min: number;
      let max: number;
      const at = this.pos;
      if (c === '*') [min, max] = [0, -1];
      else if (c === '+') [min, max] = [1, -1];
      else if (c === '?') [min, max] = [0, 1];
      else if (c === '{') {
        const b = this.braces();
        if (!b) break;
        [min, max] = [b.min, b.max];
        if (min > MAX_REPEAT || max > MAX_REPEAT || (max !== -1 && max < min)) {
          this.fail(`bad repetition operator: ${this.src.slice(at, at + b.len)}`, at);
        }
        this.pos += b.len - 1;
      } else break;
      this.pos++;
      this.eat('?'); // non-greedy: the same language, and only the language matters for a full match
      if (repeated) this.fail(`bad repetition operator: ${this.src.slice(start, this.pos)} (RE2 does not stack repetitions)`, at);
      repeated = true;
      node = { k: 'rep', x: node, min, max };
    }
    return node;
  }

  /** One atom; null for a flag-setting group. */
  private atom(f: Flags): Node | null {
    const c = this.peek()!;
    switch (c) {
      case '(':
        return this.group(f);
      case '[':
        return this.charClass(f);
      case '.':
        this.pos++;
        return { k: 'char', test: dotTest(f.s) };
      case '^':
        this.pos++;
        return { k: 'assert', a: f.m ? 'bol' : 'bot' };
      case '$':
        this.pos++;
        return { k: 'assert', a: f.m ? 'eol' : 'eot' };
      case '\\':
        return this.escape(f);
      case '*':
      case '+':
      case '?':
        return this.fail(`missing argument to repetition operator: ${c}`);
      case '{':
        if (this.braces()) this.fail('missing argument to repetition operator: {');
        this.pos++;
        return { k: 'char', test: literalTest(0x7b, f.i) };
      default:
        return { k: 'char', test: literalTest(this.nextCodePoint(), f.i) };
    }
  }

  private group(f: Flags): Node | null {
    const open = this.pos;
    this.pos++; // (
    if (!this.eat('?')) return this.groupBody(f, open);
    if (this.eat(':')) return this.groupBody(f, open);
    if (this.src.startsWith('P<', this.pos) || (this.peek() === '<' && this.peek(1) !== '=' && this.peek(1) !== '!')) {
      this.eat('P');
      this.pos++; // <
      const m = /^([A-Za-z0-9_]+)>/.exec(this.src.slice(this.pos));
      if (!m) this.fail('invalid named capture group', open);
      if (this.names.has(m[1])) this.fail(`duplicate capture group name ${m[1]}`, open);
      this.names.add(m[1]);
      this.pos += m[0].length;
      return this.groupBody(f, open);
    }
    const la = this.src.slice(this.pos, this.pos + 2);
    if (la.startsWith('=') || la.startsWith('!') || la === '<=' || la === '<!') {
      this.fail('lookahead and lookbehind are not supported by RE2', open);
    }
    if (la.startsWith('P=') || la.startsWith('P>')) this.fail('backreferences are not supported by RE2', open);
    // Flags: (?flags) or (?flags:re), flags from imsU with at most one '-'.
    const nf: Flags = { ...f };
    let negate = false;
    let any = false;
    for (;;) {
      const ch = this.peek();
      if (ch === undefined) this.fail('missing )', open);
      this.pos++;
      if (ch === 'i' || ch === 'm' || ch === 's' || ch === 'U') {
        any = true;
        if (ch !== 'U') nf[ch as 'i' | 'm' | 's'] = !negate; // U (ungreedy) does not change what matches
        continue;
      }
      if (ch === '-') {
        if (negate) this.fail('invalid or unsupported Perl syntax: double negation in flags', open);
        negate = true;
        any = false;
        continue;
      }
      if ((ch === ')' || ch === ':') && any) {
        if (ch === ')') {
          Object.assign(f, nf); // rest of the enclosing group
          return null;
        }
        return this.groupBody(nf, open);
      }
      this.fail('invalid or unsupported Perl syntax', open);
    }
  }

  private groupBody(f: Flags, open: number): Node {
    if (++this.depth > MAX_NESTING) this.fail(`groups nested deeper than ${MAX_NESTING}`, open);
    const inner = this.alternation(f);
    if (!this.eat(')')) this.fail('missing )', open);
    this.depth--;
    return inner;
  }

  /** `\x..`, `\x{...}`, octal, `\a\f\t\n\r\v`, escaped punctuation: one code point, or undefined if the escape is not a character. */
  private charEscape(inClass: boolean): number | undefined {
    const start = this.pos;
    const c = this.peek(1);
    if (c === undefined) this.fail('trailing \\', start);
    const simple: Record<string, number> = { a: 7, f: 12, t: 9, n: 10, r: 13, v: 11 };
    if (c in simple) {
      this.pos += 2;
      return simple[c];
    }
    if (c === 'x') {
      this.pos += 2;
      if (this.eat('{')) {
        const m = /^([0-9A-Fa-f]{1,8})\}/.exec(this.src.slice(this.pos));
        if (!m || parseInt(m[1], 16) > MAX_CP) this.fail('invalid escape sequence: \\x{...}', start);
        this.pos += m[0].length;
        return parseInt(m[1], 16);
      }
      const m = /^[0-9A-Fa-f]{2}/.exec(this.src.slice(this.pos));
      if (!m) this.fail('invalid escape sequence: \\x', start);
      this.pos += 2;
      return parseInt(m[0], 16);
    }
    // Octal: \0, \0oo, \ooo where a single \1-\7 would be a backreference.
    if (c === '0' || (isOctal(c) && isOctal(this.peek(2)))) {
      this.pos += 1;
      let digits = '';
      while (digits.length < 3 && isOctal(this.peek())) digits += this.src[this.pos++];
      return parseInt(digits, 8);
    }
    if (isDigit(c)) this.fail('backreferences are not supported by RE2', start);
    if (c.charCodeAt(0) < 0x80 && !isAsciiAlnum(c)) {
      this.pos += 2;
      return c.charCodeAt(0);
    }
    if (inClass) this.fail(`invalid escape sequence in character class: \\${c}`, start);
    return undefined;
  }

  /** `\d\D\s\S\w\W\pX\p{..}\PX\P{..}` into `b`; false if the escape is something else. */
  private classEscape(b: ClassBuilder): boolean {
    const c = this.peek(1);
    const perl: Record<string, Range[]> = { d: R_DIGIT, s: R_SPACE, w: R_WORD };
    if (c !== undefined && c.toLowerCase() in perl) {
      this.pos += 2;
      const rs = perl[c.toLowerCase()];
      b.addRanges(c === c.toLowerCase() ? rs : complement(rs));
      return true;
    }
    if (c === 'p' || c === 'P') {
      const start = this.pos;
      this.pos += 2;
      let name: string;
      if (this.eat('{')) {
        const end = this.src.indexOf('}', this.pos);
        if (end < 0) this.fail('invalid character class range: missing }', start);
        name = this.src.slice(this.pos, end);
        this.pos = end + 1;
      } else {
        if (this.peek() === undefined) this.fail('invalid character class range', start);
        name = String.fromCodePoint(this.nextCodePoint());
      }
      let neg = c === 'P';
      if (name.startsWith('^')) {
        neg = !neg;
        name = name.slice(1);
      }
      if (name === 'Any') {
        if (!neg) b.ranges.push([0, MAX_CP]);
        return true;
      }
      // RE2 knows Unicode general categories (L, Lu, ...) and scripts (Greek, ...); JS spells a
      // script \p{Script=Greek}. Binary properties (JS's \p{Alphabetic}) are not RE2 and are refused.
      const item = /^[A-Z][a-z]?$/.test(name) ? `${neg ? '\\P' : '\\p'}{${name}}` : `${neg ? '\\P' : '\\p'}{Script=${name}}`;
      try {
        new RegExp(`[${item}]`, 'u');
      } catch {
        this.fail(`invalid character class range: unknown Unicode class ${name}`, start);
      }
      b.props.push(item);
      return true;
    }
    return false;
  }

  private charClass(f: Flags): Node {
    const open = this.pos;
    this.pos++; // [
    const negated = this.eat('^');
    const b = new ClassBuilder();
    let first = true;
    for (;;) {
      const c = this.peek();
      if (c === undefined) this.fail('missing ]', open);
      if (c === ']' && !first) {
        this.pos++;
        break;
      }
      first = false;
      if (c === '[' && this.peek(1) === ':') {
        const m = /^\[:(\^?)([a-z]+):\]/.exec(this.src.slice(this.pos));
        if (m) {
          const rs = POSIX[m[2]];
          if (!rs) this.fail(`invalid character class range: [:${m[2]}:]`);
          b.addRanges(m[1] ? complement(rs) : rs);
          this.pos += m[0].length;
          continue;
        }
      }
      if (c === '\\') {
        if (this.peek(1) === 'Q' || this.peek(1) === 'E') this.fail('\\Q...\\E inside a character class is not supported');
        if (this.classEscape(b)) continue;
      }
      const lo = this.classChar();
      if (this.peek() === '-' && this.peek(1) !== ']' && this.peek(1) !== undefined) {
        const dash = this.pos;
        this.pos++;
        if (this.peek() === '\\' && /[dDsSwWpP]/.test(this.peek(1) ?? '')) this.fail('invalid character class range', dash);
        const hi = this.classChar();
        if (hi < lo) this.fail(`invalid character class range: ${String.fromCodePoint(lo)}-${String.fromCodePoint(hi)}`, dash);
        b.ranges.push([lo, hi]);
      } else {
        b.ranges.push([lo, lo]);
      }
    }
    return { k: 'char', test: b.build(negated, f.i) };
  }

  private classChar(): number {
    if (this.peek() === '\\') {
      const cp = this.charEscape(true);
      return cp!;
    }
    return this.nextCodePoint();
  }

  private escape(f: Flags): Node {
    const start = this.pos;
    const c = this.peek(1);
    const assertions: Record<string, Assertion> = { A: 'bot', z: 'eot', b: 'wordb', B: 'nonwordb' };
    if (c !== undefined && c in assertions) {
      this.pos += 2;
      return { k: 'assert', a: assertions[c] };
    }
    if (c === 'Q') {
      this.pos += 2;
      let end = this.src.indexOf('\\E', this.pos);
      if (end < 0) end = this.src.length;
      const lit = this.src.slice(this.pos, end);
      this.pos = Math.min(this.src.length, end + 2);
      const xs: Node[] = [...lit].map((ch) => ({ k: 'char', test: literalTest(ch.codePointAt(0)!, f.i) }));
      return xs.length === 0 ? EMPTY : xs.length === 1 ? xs[0] : { k: 'cat', xs };
    }
    if (c === 'C') this.fail('\\C (any byte) is not supported', start);
    const b = new ClassBuilder();
    if (this.classEscape(b)) return { k: 'char', test: b.build(false, f.i) };
    const cp = this.charEscape(false);
    if (cp === undefined) this.fail(`invalid escape sequence: \\${c}`, start);
    return { k: 'char', test: literalTest(cp, f.i) };
  }
}

// ---------------------------------------------------------------------------------------------
// Thompson NFA

const enum Op {
  Char,
  Split,
  Assert,
  Nop, // an empty move: the empty regex, x{0}
  Match,
}

/** An upper bound of the states compileNode makes, computed before making them. */
function programSize(n: Node): number {
  switch (n.k) {
    case 'empty':
    case 'char':
    case 'assert':
      return 1;
    case 'cat':
      return n.xs.reduce((a, x) => a + programSize(x), 0);
    case 'alt':
      return n.xs.reduce((a, x) => a + programSize(x) + 1, 0);
    case 'rep': {
      const copies = n.max === -1 ? n.min + 1 : Math.max(n.max, 1);
      return Math.min((programSize(n.x) + 1) * copies, Number.MAX_SAFE_INTEGER);
    }
  }
}

class Program {
  op: Op[] = [];
  out: number[] = [];
  out1: number[] = [];
  tests: (CharTest | null)[] = [];
  asserts: (Assertion | null)[] = [];
  start = 0;

  add(op: Op, test: CharTest | null = null, a: Assertion | null = null): number {
    this.op.push(op);
    this.out.push(-1);
    this.out1.push(-1);
    this.tests.push(test);
    this.asserts.push(a);
    return this.op.length - 1;
  }
}

/** A fragment: its entry state and its dangling exits (state*2 + 0 for out, + 1 for out1). */
interface Frag {
  start: number;
  outs: number[];
}

function patch(p: Program, outs: number[], to: number): void {
  for (const o of outs) {
    if (o & 1) p.out1[o >> 1] = to;
    else p.out[o >> 1] = to;
  }
}

function single(p: Program, op: Op, test: CharTest | null = null, a: Assertion | null = null): Frag {
  const s = p.add(op, test, a);
  return { start: s, outs: [s * 2] };
}

function compileNode(p: Program, n: Node): Frag {
  switch (n.k) {
    case 'empty':
      return single(p, Op.Nop);
    case 'char':
      return single(p, Op.Char, n.test);
    case 'assert':
      return single(p, Op.Assert, null, n.a);
    case 'cat': {
      const fs = n.xs.map((x) => compileNode(p, x));
      for (let i = 1; i < fs.length; i++) patch(p, fs[i - 1].outs, fs[i].start);
      return { start: fs[0].start, outs: fs[fs.length - 1].outs };
    }
    case 'alt': {
      // split(b1, split(b2, ... split(bn-1, bn)))
      const fs = n.xs.map((x) => compileNode(p, x));
      let start = fs[fs.length - 1].start;
      for (let i = fs.length - 2; i >= 0; i--) {
        const s = p.add(Op.Split);
        p.out[s] = fs[i].start;
        p.out1[s] = start;
        start = s;
      }
      return { start, outs: fs.flatMap((f) => f.outs) };
    }
    case 'rep': {
      const parts: Frag[] = [];
      for (let i = 0; i < n.min; i++) parts.push(compileNode(p, n.x));
      if (n.max === -1) {
        // x*: split → x → back to the split; leave by the split's second exit
        const s = p.add(Op.Split);
        const f = compileNode(p, n.x);
        p.out[s] = f.start;
        patch(p, f.outs, s);
        parts.push({ start: s, outs: [s * 2 + 1] });
      } else {
        // the optional copies: x? x? ... (the same language as nested ones)
        for (let i = n.min; i < n.max; i++) {
          const s = p.add(Op.Split);
          const f = compileNode(p, n.x);
          p.out[s] = f.start;
          parts.push({ start: s, outs: [...f.outs, s * 2 + 1] });
        }
      }
      if (parts.length === 0) return single(p, Op.Nop); // x{0}
      for (let i = 1; i < parts.length; i++) patch(p, parts[i - 1].outs, parts[i].start);
      return { start: parts[0].start, outs: parts[parts.length - 1].outs };
    }
  }
}

const isWordCp = (cp: number): boolean => (cp >= 0x30 && cp <= 0x39) || (cp >= 0x41 && cp <= 0x5a) || cp === 0x5f || (cp >= 0x61 && cp <= 0x7a);

export interface Re2 {
  readonly source: string;
  /** Number of NFA states (for limits and diagnostics). */
  readonly size: number;
  /** Whole-input match; undefined when the input is longer than MAX_INPUT (not matched: the caller fails closed). */
  fullMatch(input: string): boolean | undefined;
}

/** Compiles an RE2 pattern; throws Re2SyntaxError for what RE2 would reject (and the few documented extras). */
export function compileRe2(source: string, opts: { maxProgram?: number } = {}): Re2 {
  const ast = new Parser(source).parse();
  const limit = opts.maxProgram ?? MAX_PROGRAM;
  const est = programSize(ast);
  if (est > limit) throw new Re2SyntaxError(`pattern too large: about ${est} states, the limit is ${limit}`, 0);
  const p = new Program();
  const frag = compileNode(p, ast);
  patch(p, frag.outs, p.add(Op.Match));
  p.start = frag.start;
  return new NfaMatcher(source, p);
}

class NfaMatcher implements Re2 {
  readonly size: number;
  // Reused between calls (matching never re-enters): two state lists and a visited-mark per state.
  private cur: Int32Array;
  private nxt: Int32Array;
  private mark: Uint32Array;
  private gen = 0;
  private stack: Int32Array;
  constructor(
    readonly source: string,
    private readonly p: Program,
  ) {
    this.size = p.op.length;
    this.cur = new Int32Array(this.size);
    this.nxt = new Int32Array(this.size);
    this.mark = new Uint32Array(this.size);
    this.stack = new Int32Array(this.size * 2 + 2);
    this.dfa = p.op.includes(Op.Assert) ? null : { sets: [], accepting: [], next: [], ids: new Map() };
  }

  /** Adds `s` and everything reachable by empty moves at a position with neighbours prev/next (-1 = none). */
  private addState(list: Int32Array, n: number, s: number, prev: number, next: number): number {
    const p = this.p;
    const st = this.stack;
    let sp = 0;
    st[sp++] = s;
    while (sp > 0) {
      const x = st[--sp];
      if (x < 0 || this.mark[x] === this.gen) continue;
      this.mark[x] = this.gen;
      switch (p.op[x]) {
        case Op.Split:
          st[sp++] = p.out1[x];
          st[sp++] = p.out[x];
          break;
        case Op.Nop:
          st[sp++] = p.out[x];
          break;
        case Op.Assert: {
          let ok: boolean;
          switch (p.asserts[x]!) {
            case 'bot':
              ok = prev === -1;
              break;
            case 'eot':
              ok = next === -1;
              break;
            case 'bol':
              ok = prev === -1 || prev === 0x0a;
              break;
            case 'eol':
              ok = next === -1 || next === 0x0a;
              break;
            case 'wordb':
              ok = (prev !== -1 && isWordCp(prev)) !== (next !== -1 && isWordCp(next));
              break;
            case 'nonwordb':
              ok = (prev !== -1 && isWordCp(prev)) === (next !== -1 && isWordCp(next));
              break;
          }
          if (ok) st[sp++] = p.out[x];
          break;
        }
        default:
          list[n++] = x;
      }
    }
    return n;
  }

  private nextGen(): void {
    this.gen = (this.gen + 1) >>> 0;
    if (this.gen === 0) {
      this.mark.fill(0);
      this.gen = 1;
    }
  }

  fullMatch(input: string): boolean | undefined {
    if (input.length > MAX_INPUT) return undefined;
    if (this.dfa) {
      const r = this.dfaMatch(input);
      if (r !== undefined) return r;
    }
    return this.nfaMatch(input);
  }

  // --- The DFA cache. For a program without assertions, the set of NFA states after each input
  // character depends only on the set before and the character, so sets are numbered as they are
  // met and their transitions on ASCII characters remembered (RE2's DFA, built lazily). Past
  // MAX_DFA_STATES sets the cache is dropped and the NFA simulation does the work, so memory stays
  // bounded whatever the pattern.
  private dfa: { sets: Int32Array[]; accepting: boolean[]; next: Int32Array[]; ids: Map<string, number> } | null;

  private dfaState(list: Int32Array, n: number): number {
    const sorted = list.slice(0, n).sort();
    const key = sorted.join(',');
    const d = this.dfa!;
    let id = d.ids.get(key);
    if (id === undefined) {
      if (d.sets.length >= MAX_DFA_STATES) return -2;
      id = d.sets.length;
      d.ids.set(key, id);
      d.sets.push(sorted);
      d.accepting.push(sorted.some((x) => this.p.op[x] === Op.Match));
      d.next.push(new Int32Array(128).fill(-1));
    }
    return id;
  }

  /** The set after reading `cp` from set `from`, as a DFA state id (-2: cache full). */
  private dfaStep(from: number, cp: number): number {
    const p = this.p;
    this.nextGen();
    let m = 0;
    for (const s of this.dfa!.sets[from]) {
      if (p.op[s] === Op.Char && p.tests[s]!(cp)) m = this.addState(this.nxt, m, p.out[s], -1, -1);
    }
    return this.dfaState(this.nxt, m);
  }

  private dfaMatch(input: string): boolean | undefined {
    const d = this.dfa!;
    let state = d.sets.length ? 0 : -1;
    if (state < 0) {
      this.nextGen();
      state = this.dfaState(this.cur, this.addState(this.cur, 0, this.p.start, -1, -1));
    }
    const len = input.length;
    for (let i = 0; i < len; ) {
      let cp = input.charCodeAt(i);
      let id: number;
      if (cp < 128) {
        id = d.next[state][cp];
        if (id === -1) {
          id = this.dfaStep(state, cp);
          if (id >= 0) d.next[state][cp] = id;
        }
        i++;
      } else {
        cp = input.codePointAt(i)!;
        id = this.dfaStep(state, cp);
        i += cp > 0xffff ? 2 : 1;
      }
      if (id === -2) {
        this.dfa = null; // too many sets for this pattern: the NFA simulation from now on
        return undefined;
      }
      state = id;
      if (d.sets[state].length === 0) return false;
    }
    return d.accepting[state];
  }

  private nfaMatch(input: string): boolean {
    const p = this.p;
    const len = input.length;
    let i = 0;
    const cpAt = (j: number): number => (j >= len ? -1 : input.codePointAt(j)!);
    let cp = cpAt(0);
    let prev = -1;
    this.nextGen();
    let n = this.addState(this.cur, 0, p.start, prev, cp);
    let cur = this.cur;
    let nxt = this.nxt;
    while (i < len) {
      if (n === 0) return false;
      const width = cp > 0xffff ? 2 : 1;
      const after = cpAt(i + width);
      this.nextGen();
      let m = 0;
      for (let k = 0; k < n; k++) {
        const s = cur[k];
        if (p.op[s] === Op.Char && p.tests[s]!(cp)) m = this.addState(nxt, m, p.out[s], cp, after);
      }
      [cur, nxt] = [nxt, cur];
      n = m;
      prev = cp;
      cp = after;
      i += width;
    }
    for (let k = 0; k < n; k++) if (p.op[cur[k]] === Op.Match) return true;
    return false;
  }
}
