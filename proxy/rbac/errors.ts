// Errors and warnings of the RBAC compiler. RbacConfigError is the SM_RBAC_INVALID family of the
// one error hierarchy (core/errors.ts).
import { SockmeshError } from '../../core/errors';

/** One problem found in a filter's config, located precisely enough to fix it. */
export interface RbacIssue {
  /** The filter's label (its name, with `#index` when several filters share the name). */
  filter: string;
  /** Index of the filter in the list given to compileRbacFilters. */
  filterIndex: number;
  /** The policy (map key under rules / shadowRules), when the problem is inside one. */
  policy?: string;
  /** Path into the filter's typed config, spelled as the config spells it. */
  path: string;
  reason: string;
}

function describe(i: RbacIssue): string {
  const where = `filter ${i.filter}${i.policy !== undefined ? `, policy ${JSON.stringify(i.policy)}` : ''}`;
  return `${where}: ${i.path || '(config)'}: ${i.reason}`;
}

/**
 * A config the evaluator refuses to run. Compile happens when a new policy arrives, so this is
 * thrown before anything replaces the policy in force: the caller keeps the previous evaluator.
 */
export class RbacConfigError extends SockmeshError<'SM_RBAC_INVALID'> {
  /** Every problem found (the message names the first, and how many more there are). */
  readonly issues: RbacIssue[];
  constructor(issues: RbacIssue[]) {
    const first = issues[0];
    const more = issues.length > 1 ? ` (and ${issues.length - 1} more problem${issues.length > 2 ? 's' : ''})` : '';
    super('SM_RBAC_INVALID', `SM_RBAC_INVALID: ${first ? describe(first) : 'invalid RBAC config'}${more}`);
    this.issues = issues;
  }
  /** One line per problem, for CLIs and logs. */
  lines(): string[] {
    return this.issues.map(describe);
  }
}

/** Something accepted but not (fully) enforced as written: an ignored field, a matcher that fails closed. */
export interface RbacWarning {
  filter: string;
  filterIndex: number;
  policy?: string;
  path: string;
  message: string;
}

export function warningText(w: RbacWarning): string {
  return `filter ${w.filter}${w.policy !== undefined ? `, policy ${JSON.stringify(w.policy)}` : ''}: ${w.path || '(config)'}: ${w.message}`;
}

export function isRbacConfigError(e: unknown): e is RbacConfigError {
  return e instanceof RbacConfigError;
}
