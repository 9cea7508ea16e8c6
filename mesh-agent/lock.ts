// One agent per datapath: two agents reconciling the same maps would undo each other's work.
// A pid file under /run/sockmesh names the owner; a file left by a killed agent (its pid is gone)
// is taken over, which is what makes SIGKILL + restart work.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SockmeshError } from './errors';

export const LOCK_DIR = process.env.SOCKMESH_RUN_DIR ?? '/run/sockmesh';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Take the lock for `bpffsDir`; returns the release function. */
export function acquireAgentLock(bpffsDir: string): () => void {
  fs.mkdirSync(LOCK_DIR, { recursive: true });
  const file = path.join(LOCK_DIR, `agent${path.resolve(bpffsDir).replace(/[^A-Za-z0-9._-]/g, '_')}.pid`);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx');
      fs.writeSync(fd, `${process.pid}\n`);
      fs.closeSync(fd);
      return () => {
        try {
          if (fs.readFileSync(file, 'utf8').trim() === String(process.pid)) fs.unlinkSync(file);
        } catch {
          /* already gone */
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const owner = Number(fs.readFileSync(file, 'utf8').trim());
    if (owner && owner !== process.pid && alive(owner)) {
      throw new SockmeshError(
        'SM_AGENT_RUNNING',
        `another sockmesh agent (pid ${owner}) manages ${bpffsDir}; stop it first (lock file ${file})`,
      );
    }
    fs.rmSync(file, { force: true }); // left by an agent that is gone
  }
  throw new SockmeshError('SM_AGENT_RUNNING', `could not take the agent lock for ${bpffsDir}`);
}
