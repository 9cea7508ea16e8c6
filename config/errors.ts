// ConfigError: every problem found in a config file, collected and thrown at once.
import { SockmeshError } from '../core/errors';

export interface ConfigIssue {
  /** The file the problem is in (as given to the loader). */
  file: string;
  /** Where in the document, e.g. `services[0].ports[1].port`; `(root)`, `(yaml)` or `(file)` for whole-file problems. */
  path: string;
  /** 1-based line in the file, when known. */
  line?: number;
  /** 1-based column in the file, when known. */
  col?: number;
  /** Human-readable reason. */
  reason: string;
}

export const CONFIG_INVALID = 'SM_CONFIG_INVALID' as const;

/** Formats one issue as `FILE:LINE:COL: PATH: REASON` (or `FILE: PATH: REASON` without a position). */
export function formatIssue(i: ConfigIssue): string {
  const where = i.line !== undefined ? `${i.file}:${i.line}:${i.col ?? 1}` : i.file;
  return `${where}: ${i.path}: ${i.reason}`;
}

export class ConfigError extends SockmeshError<typeof CONFIG_INVALID> {
  readonly errors: ConfigIssue[];

  constructor(errors: ConfigIssue[]) {
    super(CONFIG_INVALID, errors.map(formatIssue).join('\n'));
    this.errors = errors;
  }
}

export function isConfigError(e: unknown): e is ConfigError {
  return e instanceof ConfigError;
}
