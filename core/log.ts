// Structured logs: one JSON object per line on stderr, so they can be shipped and grepped as is.
//
// Backed by pino, with the field names the agent has always written (tests and operators parse
// them): `level` as a label ("info", not pino's number), `time` in ISO 8601, `msg`, `component`,
// then the call's fields. bigints are written as strings and Errors as {name, code, message}, as
// before; pino's own pid/hostname are left out.
import pino from 'pino';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: readonly Level[] = ['debug', 'info', 'warn', 'error'];

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** One synchronous stderr destination for every logger: a line is out before process.exit(). */
let stderrDest: pino.DestinationStream | undefined;
function stderr(): pino.DestinationStream {
  return (stderrDest ??= pino.destination({ fd: 2, sync: true }));
}

export function createLogger(opts: { level?: Level; component?: string; write?: (line: string) => void } = {}): Logger {
  const wanted = opts.level ?? (process.env.SOCKMESH_LOG_LEVEL as Level | undefined);
  const level: Level = wanted && LEVELS.includes(wanted) ? wanted : 'info';
  const write = opts.write;
  const dest: pino.DestinationStream = write ? { write: (s: string) => write(s.endsWith('\n') ? s.slice(0, -1) : s) } : stderr();
  const p = pino(
    {
      level,
      base: opts.component ? { component: opts.component } : null,
      messageKey: 'msg',
      // Not pino's err serializer: Errors are {name, code, message} under any key (normalize below).
      serializers: { err: (v: unknown) => v },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: {
        level: (label) => ({ level: label }),
        log: (obj) => normalize(obj, new Set()) as Record<string, unknown>,
      },
    },
    dest,
  );
  // `msg` goes into the object, first, not as pino's message argument (which pino writes last):
  // lines read level, time, component, msg, fields — the order the agent has always written, and
  // what greps such as /"msg":"xds server listening".*"address"/ rely on.
  const at = (l: Level) => (m: string, f?: Record<string, unknown>) => p[l]({ msg: m, ...f });
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** Deep copy of plain objects and arrays with bigints as strings and Errors as plain fields. */
function normalize(v: unknown, seen: Set<unknown>): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Error) return errorFields(v);
  if (v === null || typeof v !== 'object' || seen.has(v)) return v;
  if (Array.isArray(v)) {
    seen.add(v);
    const out = v.map((x) => normalize(x, seen));
    seen.delete(v);
    return out;
  }
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return v; // Date, Buffer, ...: their own toJSON
  seen.add(v);
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) out[k] = normalize(x, seen);
  seen.delete(v);
  return out;
}

function errorFields(e: Error): Record<string, unknown> {
  return { name: e.name, code: (e as { code?: unknown }).code, message: e.message };
}
