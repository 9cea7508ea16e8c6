// One agent per datapath: two agents reconciling the same maps would undo each other's work.
//
// The lock is a listening unix socket in the abstract namespace, named after the bpffs directory.
// The kernel gives the name to one socket at a time and releases it when the process dies, even
// by SIGKILL, so there is no stale file to detect and no pid to trust. (Abstract names are per
// network namespace; the agent runs in the host's.)
import { createHash } from 'node:crypto';
import * as net from 'node:net';
import * as path from 'node:path';
import { DatapathError } from '../core/errors';

export function lockName(bpffsDir: string): string {
  const h = createHash('sha256').update(path.resolve(bpffsDir)).digest('hex').slice(0, 16);
  return `\0sockmesh-agent-${h}`;
}

/** Take the lock for `bpffsDir`; resolves to the release function. */
export function acquireAgentLock(bpffsDir: string): Promise<() => void> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((c) => c.destroy());
    server.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EADDRINUSE') {
        reject(new DatapathError('SM_AGENT_RUNNING', `another sockmesh agent manages ${bpffsDir}; stop it first`));
      } else {
        reject(e);
      }
    });
    server.listen(lockName(bpffsDir), () => {
      server.unref(); // the lock must not keep the process alive
      resolve(() => server.close());
    });
  });
}
