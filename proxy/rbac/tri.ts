// Three-valued matching. A matcher sockmesh cannot evaluate (dynamic metadata, CEL conditions,
// extension matchers, a regex over an over-long input) yields UNKNOWN instead of a guess, and
// and/or/not follow Kleene's logic, so an unknown only decides a policy when the policy's outcome
// really depends on it: `not(metadata)` is UNKNOWN, not "true because metadata was false".
// The engine then resolves an UNKNOWN policy in the restrictive direction (engine.ts).

import type { IpAddress } from '../../core/ip';

export const NO = 0;
export const YES = 1;
export const UNKNOWN = 2;
export type Tri = typeof NO | typeof YES | typeof UNKNOWN;

/** Per-evaluation scratch: descriptions of the unknown leaves met (trimmed by and/or to those that matter). */
export interface EvalContext {
  notes: string[];
}

/** What matchers see of a request: an HTTP request, or only its connection (network RBAC filters). */
export interface View {
  /** Header value (repeated headers already joined with ","), or undefined when absent. */
  header(name: string): string | undefined;
  /** `:path` with the query; undefined when there is no HTTP request (network filter). */
  path: string | undefined;
  /** `:path` without query and fragment (Envoy's PathUtil::removeQueryAndFragment). */
  urlPath: string | undefined;
  principal: string | undefined;
  sni: string;
  destinationPort: number;
  destinationIp(): IpAddress | undefined;
  directRemoteIp(): IpAddress | undefined;
  remoteIp(): IpAddress | undefined;
  /** The attribute text, for notes about an unparseable address. */
  rawIp(which: 'destinationIp' | 'directRemoteIp' | 'remoteIp'): string;
}

export type Pred = (v: View, ctx: EvalContext) => Tri;

export const always: Pred = () => YES;

export function allOf(ps: Pred[]): Pred {
  if (ps.length === 1) return ps[0];
  return (v, ctx) => {
    const mark = ctx.notes.length;
    let r: Tri = YES;
    for (const p of ps) {
      const x = p(v, ctx);
      if (x === NO) {
        ctx.notes.length = mark; // the unknowns met so far did not matter
        return NO;
      }
      if (x === UNKNOWN) r = UNKNOWN;
    }
    return r;
  };
}

export function anyOf(ps: Pred[]): Pred {
  if (ps.length === 1) return ps[0];
  return (v, ctx) => {
    const mark = ctx.notes.length;
    let r: Tri = NO;
    for (const p of ps) {
      const x = p(v, ctx);
      if (x === YES) {
        ctx.notes.length = mark;
        return YES;
      }
      if (x === UNKNOWN) r = UNKNOWN;
    }
    return r;
  };
}

export function not(p: Pred): Pred {
  return (v, ctx) => {
    const x = p(v, ctx);
    return x === UNKNOWN ? UNKNOWN : x === YES ? NO : YES;
  };
}

export const fromBool = (b: boolean): Tri => (b ? YES : NO);
