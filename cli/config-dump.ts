// `sockmesh config-dump [--admin ADDR]`: the config the running agent received from its source
// (model, source description and versions, last apply), from its admin endpoint's /config-dump.
import { parseArgs } from 'node:util';
import { adminGet, DEFAULT_ADMIN_LISTEN } from '../mesh-agent/admin';

export const CONFIG_DUMP_USAGE = `usage: sockmesh config-dump [--admin ADDR]     ADDR: 127.0.0.1:15021 (default) | unix:/PATH\n`;

/** Runs `sockmesh config-dump ...`; returns the exit code. */
export async function runConfigDumpCli(
  args: string[],
  out: (s: string) => void = (s) => process.stdout.write(s),
  err: (s: string) => void = (s) => process.stderr.write(s),
): Promise<number> {
  const { values } = parseArgs({ args, options: { admin: { type: 'string', default: DEFAULT_ADMIN_LISTEN } } });
  let r: Awaited<ReturnType<typeof adminGet>>;
  try {
    r = await adminGet(values.admin!, '/config-dump', 10_000);
  } catch (e) {
    err(`config-dump: cannot reach the agent's admin endpoint ${values.admin}: ${(e as Error).message}\n` + '(is `sockmesh agent` running, with --admin at that address?)\n');
    return 1;
  }
  let body: unknown;
  try {
    body = JSON.parse(r.body);
  } catch {
    err(`config-dump: ${values.admin} answered ${r.status} with something that is not JSON\n`);
    return 1;
  }
  if (r.status !== 200) {
    err(`config-dump: the agent answered ${r.status}: ${(body as { error?: string }).error ?? r.body}\n`);
    return 1;
  }
  out(JSON.stringify(body, null, 2) + '\n');
  return 0;
}
