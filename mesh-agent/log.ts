// Structured logs: one JSON object per line on stderr, so they can be shipped and grepped as is.
// (Issue 5 moves the agent to pino with the same field names.)
export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function createLogger(opts: { level?: Level; component?: string; write?: (line: string) => void } = {}): Logger {
  const min = ORDER[opts.level ?? ((process.env.SOCKMESH_LOG_LEVEL as Level) || 'info')] ?? ORDER.info;
  const write = opts.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < min) return;
    const rec: Record<string, unknown> = { level, time: new Date().toISOString(), msg };
    if (opts.component) rec.component = opts.component;
    Object.assign(rec, fields);
    write(JSON.stringify(rec, (_k, v) => (typeof v === 'bigint' ? v.toString() : v instanceof Error ? errorFields(v) : v)));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  };
}

function errorFields(e: Error): Record<string, unknown> {
  return { name: e.name, code: (e as { code?: unknown }).code, message: e.message };
}
