// Loading, attaching, adopting and removing the kernel datapath.
//
// The layout of the pins under the bpffs directory is in abi/pins.ts.
// The sk_msg program is attached to the pinned sockhash itself and lives as long as that map.
// Pins are what keep the datapath working while no agent runs; a new agent adopts them.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as bpf from '../../native';
import { DatapathError } from '../../core/errors';
import { config as configCodec, COUNTER_NAMES, CounterName, DatapathConfig } from '../../abi/codecs';
import { RawMap } from './maps';
import { collectRetired, migrateRetired, type MigrationResult, restoreRetired, retiredDir, retireIncompatible, type RetiredMap } from './migrate';
import { describeMissing, type KernelFeatures, missingRequired, probeFeatures } from './features';
import * as pins from '../../abi/pins';
import { DEFAULT_BPFFS_DIR, findCgroup2Mount, MAP_NAMES, type MapName, OBJECTS } from '../../abi/pins';


export interface DatapathSettings {
  /** cgroup v2 directory whose sockets are meshed (in Kubernetes: the pods' parent cgroup). */
  cgroupPath: string;
  bpffsDir?: string;
  /** Directory holding the compiled objects; default: build/bpf of this checkout. */
  objDir?: string;
  mapSizes?: Partial<Record<MapName, number>>;
}

export type AttachOutcome = 'attached' | 'adopted' | 'upgraded';

export interface ProgramStatus {
  name: string;
  attachType: string;
  progId: number;
  tag: string;
  linkId?: number;
  outcome?: AttachOutcome;
}

export function defaultObjDir(): string {
  return process.env.SOCKMESH_BPF_DIR ?? path.resolve(__dirname, '../../../build/bpf');
}

/** Lines of the verifier's own log kept in a rejection's message (the whole log is in its details). */
const VERIFIER_TAIL_LINES = 8;

/**
 * A program of ours the verifier refused: the error names the program and the object, and carries
 * the last lines of the verifier's log (the reason is at its end), so an operator on a kernel we
 * did not test can report exactly what failed.
 */
export function verifierRejection(object: string, kernel: string, err: bpf.BpfError): DatapathError {
  const log = err.verifierLog ?? '';
  const program = /prog '([^']+)': (?:BPF program load failed|failed to load|-- BEGIN PROG LOAD LOG --)/.exec(log)?.[1] ?? 'unknown';
  const begin = log.indexOf('-- BEGIN PROG LOAD LOG --');
  const end = log.indexOf('-- END PROG LOAD LOG --', begin);
  const body = begin >= 0 ? log.slice(log.indexOf('\n', begin) + 1, end >= 0 ? end : undefined) : log;
  const tail = body
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l && !l.startsWith('libbpf: '))
    .slice(-VERIFIER_TAIL_LINES);
  return new DatapathError(
    'SM_VERIFIER',
    `the kernel's verifier (Linux ${kernel}) rejected program ${program} of ${object}; the log ends:\n  ${tail.join('\n  ')}`,
    { cause: err, details: { program, object, kernel, verifierLog: log } },
  );
}

/** Mount bpffs at /sys/fs/bpf when nothing is mounted there (as systemd normally does). */
export function ensureBpffs(root = '/sys/fs/bpf'): void {
  const mounted = fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === root && l.split(' ')[2] === 'bpf');
  if (mounted) return;
  fs.mkdirSync(root, { recursive: true });
  const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
  execFileSync('mount', ['-t', 'bpf', 'bpf', root]);
}

/** Refuse anything but a non-root cgroup v2 directory. */
export function checkAttachCgroup(cgroupPath: string): { path: string; id: bigint } {
  const cg2 = fs.realpathSync(findCgroup2Mount());
  let real: string;
  try {
    real = fs.realpathSync(cgroupPath);
  } catch (e) {
    throw new DatapathError('SM_NOT_CGROUP2', `attach cgroup ${cgroupPath} does not exist`, { cause: e });
  }
  if (real === cg2) {
    throw new DatapathError(
      'SM_ROOT_CGROUP',
      `refusing to attach to the root cgroup ${real}: give the cgroup that holds the meshed pods (e.g. kubepods)`,
    );
  }
  if (!real.startsWith(cg2 + '/') || !fs.existsSync(path.join(real, 'cgroup.procs'))) {
    throw new DatapathError('SM_NOT_CGROUP2', `${cgroupPath} is not a cgroup v2 directory under ${cg2}`);
  }
  return { path: real, id: fs.statSync(real, { bigint: true }).ino };
}

const ATTACH_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(bpf.consts)
    .filter(([k]) => k.startsWith('BPF_CGROUP_') || k === 'BPF_SK_MSG_VERDICT')
    .map(([k, v]) => [v as number, k.replace(/^BPF_/, '').toLowerCase()]),
);

export function attachTypeName(t: number): string {
  return ATTACH_NAMES[t] ?? `attach_type_${t}`;
}

/**
 * Is program `progId` (attached now) the same as the freshly loaded one? Same instructions (tag,
 * which the kernel computes with map references blanked) AND the same maps: a program bound to
 * maps that are no longer the pinned ones must be replaced, or the agent would write maps nobody
 * reads.
 */
function sameProgram(progId: number, fresh: bpf.ProgInfo): boolean {
  const fd = bpf.progGetFdById(progId);
  try {
    const old = bpf.progInfo(fd);
    const ids = (x: number[]) => [...x].sort((a, b) => a - b).join(',');
    return old.tag === fresh.tag && ids(old.mapIds) === ids(fresh.mapIds);
  } finally {
    bpf.closeFd(fd);
  }
}

/** Calls `fn` for each program attached to the pinned sockhash (fds valid during the call). */
function forEachSkMsgProgram(sockhash: string, fn: (id: number, progFd: number, mapFd: number) => void): void {
  if (!fs.existsSync(sockhash)) return;
  const mfd = bpf.objGet(sockhash);
  try {
    for (const id of bpf.progQuery(mfd, bpf.consts.BPF_SK_MSG_VERDICT).progIds) {
      const pfd = bpf.progGetFdById(id);
      try {
        fn(id, pfd, mfd);
      } finally {
        bpf.closeFd(pfd);
      }
    }
  } finally {
    bpf.closeFd(mfd);
  }
}

/**
 * An open datapath: the maps (as fds this process owns) and what is attached. Obtained with
 * `Datapath.install()` (load + attach or adopt, for the agent) or `Datapath.openPinned()`
 * (read-only tools such as `sockmesh status`).
 */
export class Datapath {
  readonly bpffsDir: string;
  readonly maps: Record<MapName, RawMap>;
  readonly programs: ProgramStatus[];
  /** What the kernel can do, as probed by install() (undefined for a datapath only opened). */
  features?: KernelFeatures;
  /** Pinned maps install() found incompatible with this build and carried over (migrate.ts). */
  migrations: MigrationResult[] = [];
  /** Retired sockhashes still holding sockets from before an upgrade. */
  retiredInUse: Array<{ pin: string; sockets: number }> = [];
  private rcuInnerFd = -1;

  private constructor(bpffsDir: string, maps: Record<MapName, RawMap>, programs: ProgramStatus[]) {
    this.bpffsDir = bpffsDir;
    this.maps = maps;
    this.programs = programs;
  }

  /**
   * Load the objects (reusing pinned maps), then for each cgroup program: adopt the pinned link if
   * it already runs the same program, switch it atomically (bpf_link_update) if the program
   * changed, or create and pin a new link. Never attaches a second copy.
   */
  static install(settings: DatapathSettings): Datapath {
    const bpffsDir = settings.bpffsDir ?? DEFAULT_BPFFS_DIR;
    const objDir = settings.objDir ?? defaultObjDir();
    const cg = checkAttachCgroup(settings.cgroupPath);
    const features = probeFeatures();
    if (features.denied) throw new DatapathError('SM_KERNEL', features.denied);
    const missing = missingRequired(features);
    if (missing.length) {
      throw new DatapathError(
        'SM_KERNEL_FEATURE',
        `kernel ${features.kernel} lacks what the datapath needs: ${describeMissing(features, missing)}. Nothing was loaded or attached.`,
        { details: { kernel: features.kernel, missing: missing.map((f) => f.name) } },
      );
    }
    if (bpffsDir.startsWith('/sys/fs/bpf/')) ensureBpffs('/sys/fs/bpf');
    const mapsDir = pins.mapsDir(bpffsDir);
    const linksDir = pins.linksDir(bpffsDir);
    fs.mkdirSync(mapsDir, { recursive: true });
    fs.mkdirSync(linksDir, { recursive: true });
    if (!bpf.isBpffs(bpffsDir)) {
      throw new DatapathError('SM_NOT_INSTALLED', `${bpffsDir} is not on a bpf filesystem: pins would not persist`);
    }

    const maxEntries: Record<string, number> = {};
    for (const [k, v] of Object.entries(settings.mapSizes ?? {})) if (v !== undefined) maxEntries[k] = v;

    const objects: bpf.BpfObject[] = [];
    const programs: ProgramStatus[] = [];
    let retired: RetiredMap[] = [];
    let cgFd = -1;
    try {
      for (const name of OBJECTS) {
        const file = path.join(objDir, name);
        if (!fs.existsSync(file)) {
          throw new DatapathError('SM_NOT_INSTALLED', `${file} not found: run \`npm run build\` first`);
        }
        objects.push(bpf.BpfObject.open(file, { pinRoot: mapsDir, maxEntries }));
      }
      // Pins this build cannot reuse (capacity or layout changed) are moved aside first and
      // carried over once the new programs run (migrate.ts), instead of refusing to start.
      const wanted = new Map<string, bpf.MapDesc>();
      for (const o of objects) for (const m of o.maps()) if (!m.internal && !wanted.has(m.name)) wanted.set(m.name, m);
      retired = retireIncompatible(bpffsDir, wanted);
      for (const [i, obj] of objects.entries()) {
        const name = OBJECTS[i];
        try {
          obj.load();
        } catch (e) {
          restoreRetired(bpffsDir, retired);
          retired = [];
          const err = e as bpf.BpfError;
          if (err.code === 'EINVAL' && /pin|reuse|mismatch|incompatible/i.test(err.message)) {
            throw new DatapathError(
              'SM_MAP_MISMATCH',
              `${name}: a map pinned under ${mapsDir} does not match this build (its flags changed). ` +
                `Remove the datapath (sockmesh datapath remove) or keep the old settings.`,
              { cause: e },
            );
          }
          if (err.code === 'SM_VERIFIER') throw verifierRejection(name, features.kernel, err);
          throw e;
        }
      }
      cgFd = bpf.openPath(cg.path);
      // sk_msg first: a socket takes the sockhash's verdict program when sockops adds it, so a
      // socket added before sk_msg is attached would never be redirected.
      const all = objects.flatMap((obj) => obj.programs().map((p) => ({ obj, p })));
      const isMsg = (x: { p: bpf.ProgramDesc }) => x.p.attachType === bpf.consts.BPF_SK_MSG_VERDICT;
      for (const { obj, p } of all.filter(isMsg)) programs.push(Datapath.attachSkMsg(obj, p));
      for (const { p } of all.filter((x) => !isMsg(x))) programs.push(Datapath.attachCgroupProgram(p, cgFd, cg.id, linksDir));
      const dp = new Datapath(bpffsDir, Datapath.openMaps(bpffsDir), programs);
      dp.features = features;
      dp.migrations = migrateRetired(bpffsDir, retired);
      dp.retiredInUse = collectRetired(bpffsDir).inUse;
      return dp;
    } finally {
      if (cgFd >= 0) bpf.closeFd(cgFd);
      // Links, the sockhash and the pins now hold the programs and maps; our object fds can go.
      for (const o of objects) o.close();
    }
  }

  private static attachCgroupProgram(
    p: bpf.ProgramDesc,
    cgFd: number,
    cgroupId: bigint,
    linksDir: string,
  ): ProgramStatus {
    const linkPath = path.join(linksDir, p.name);
    const newInfo = bpf.progInfo(p.fd);
    const st: ProgramStatus = { name: p.name, attachType: attachTypeName(p.attachType), progId: newInfo.id, tag: newInfo.tag };
    if (fs.existsSync(linkPath)) {
      const adopted = Datapath.adoptLink(linkPath, p, newInfo, cgroupId, st);
      if (adopted) return adopted;
      fs.unlinkSync(linkPath); // detached (its cgroup went away, or someone detached it)
    }
    const linkFd = bpf.linkCreate(p.fd, cgFd, p.attachType);
    try {
      bpf.objPin(linkFd, linkPath);
      st.linkId = bpf.linkInfo(linkFd).id;
      st.outcome = 'attached';
      return st;
    } finally {
      bpf.closeFd(linkFd);
    }
  }

  /** Keep or upgrade a pinned link; null when the link is detached and must be replaced. */
  private static adoptLink(
    linkPath: string,
    p: bpf.ProgramDesc,
    newInfo: bpf.ProgInfo,
    cgroupId: bigint,
    st: ProgramStatus,
  ): ProgramStatus | null {
    const linkFd = bpf.objGet(linkPath);
    try {
      const li = bpf.linkInfo(linkFd);
      if (!li.cgroupId) return null;
      if (BigInt(li.cgroupId) !== cgroupId) {
        throw new DatapathError(
          'SM_LINK_FOREIGN',
          `pinned link ${linkPath} is attached to cgroup id ${li.cgroupId}, not the requested one (${cgroupId}); ` +
            `remove the datapath first (sockmesh datapath remove --bpffs ${path.dirname(path.dirname(linkPath))})`,
        );
      }
      st.linkId = li.id;
      if (sameProgram(li.progId, newInfo)) {
        // Same code on the same maps already attached: keep it (and its run statistics); no flap.
        st.progId = li.progId;
        st.outcome = 'adopted';
      } else {
        bpf.linkUpdate(linkFd, p.fd); // atomic swap: no moment without a program
        st.outcome = 'upgraded';
      }
      return st;
    } finally {
      bpf.closeFd(linkFd);
    }
  }

  private static attachSkMsg(obj: bpf.BpfObject, p: bpf.ProgramDesc): ProgramStatus {
    const sockhash = obj.map('sm_sockhash');
    const newInfo = bpf.progInfo(p.fd);
    const st: ProgramStatus = { name: p.name, attachType: attachTypeName(p.attachType), progId: newInfo.id, tag: newInfo.tag };
    const q = bpf.progQuery(sockhash.fd, bpf.consts.BPF_SK_MSG_VERDICT);
    for (const id of q.progIds) {
      if (sameProgram(id, newInfo)) {
        st.progId = id;
        st.outcome = 'adopted';
        return st;
      }
    }
    // Attaching a verdict program to a sockmap replaces the previous one; sockets already in the
    // map keep the program they were added with.
    bpf.progAttach(p.fd, sockhash.fd, bpf.consts.BPF_SK_MSG_VERDICT);
    st.outcome = q.progIds.length ? 'upgraded' : 'attached';
    return st;
  }

  /** Open the pinned maps of an installed datapath, without loading or attaching anything. */
  static openPinned(bpffsDir = DEFAULT_BPFFS_DIR): Datapath {
    if (!fs.existsSync(pins.mapsDir(bpffsDir))) {
      throw new DatapathError('SM_NOT_INSTALLED', `no sockmesh datapath pinned under ${bpffsDir}`);
    }
    return new Datapath(bpffsDir, Datapath.openMaps(bpffsDir), Datapath.readPrograms(bpffsDir));
  }

  private static openMaps(bpffsDir: string): Record<MapName, RawMap> {
    const out = {} as Record<MapName, RawMap>;
    try {
      for (const name of MAP_NAMES) out[name] = RawMap.open(pins.mapPin(bpffsDir, name), name);
    } catch (e) {
      for (const m of Object.values(out)) m.close();
      throw e;
    }
    return out;
  }

  /** What the pinned links and the sockhash run now. */
  static readPrograms(bpffsDir: string): ProgramStatus[] {
    const out: ProgramStatus[] = [];
    const linksDir = pins.linksDir(bpffsDir);
    for (const name of fs.existsSync(linksDir) ? fs.readdirSync(linksDir).sort() : []) {
      const fd = bpf.objGet(path.join(linksDir, name));
      try {
        const li = bpf.linkInfo(fd);
        const pfd = bpf.progGetFdById(li.progId);
        try {
          const pi = bpf.progInfo(pfd);
          out.push({ name, attachType: attachTypeName(li.attachType ?? -1), progId: li.progId, tag: pi.tag, linkId: li.id });
        } finally {
          bpf.closeFd(pfd);
        }
      } finally {
        bpf.closeFd(fd);
      }
    }
    forEachSkMsgProgram(pins.mapPin(bpffsDir, 'sm_sockhash'), (id, pfd) => {
      const pi = bpf.progInfo(pfd);
      out.push({ name: pi.name, attachType: attachTypeName(bpf.consts.BPF_SK_MSG_VERDICT), progId: id, tag: pi.tag });
    });
    return out;
  }

  /**
   * Wait until no datapath program still runs with values read before this call: a map-in-map
   * update returns only after an RCU grace period (see sm_rcu_sync in bpf/include/maps.h).
   */
  rcuSync(): void {
    if (this.rcuInnerFd < 0) this.rcuInnerFd = bpf.mapCreate(bpf.consts.BPF_MAP_TYPE_ARRAY, 4, 4, 1, 'sm_rcu_inner');
    const k = Buffer.alloc(4);
    const v = Buffer.alloc(4);
    v.writeUInt32LE(this.rcuInnerFd);
    bpf.mapUpdate(this.maps.sm_rcu_sync.fd, k, v, bpf.consts.BPF_ANY);
  }

  /**
   * Where the node's L7 proxy listens and which cgroup it runs in (its own connects are never
   * steered); null: steer nothing. Takes effect for the next connect.
   */
  configureProxy(cfg: DatapathConfig | null): void {
    const translateAll = this.translatesAll();
    const v = configCodec.encode({ ...(cfg ?? { proxyCgroupId: 0n, proxyPort: 0 }), translateAll });
    bpf.mapUpdate(this.maps.sm_config.fd, Buffer.alloc(4), v, bpf.consts.BPF_ANY);
  }

  /**
   * Unpin the sockhashes retired by an upgrade that no longer hold a socket (their sk_msg program
   * goes with them); the rest stay in retiredInUse. Returns the pins removed.
   */
  collectRetired(): string[] {
    const r = collectRetired(this.bpffsDir);
    this.retiredInUse = r.inUse;
    return r.removed;
  }

  /**
   * Translate connects of every socket in the meshed cgroup (true), or only those of enrolled
   * workloads and the node's proxy (false, the default). Takes effect for the next connect.
   */
  setTranslateAll(on: boolean): void {
    const cur = this.rawConfig();
    bpf.mapUpdate(this.maps.sm_config.fd, Buffer.alloc(4), configCodec.encode({ ...cur, translateAll: on }), bpf.consts.BPF_ANY);
  }

  translatesAll(): boolean {
    return !!this.rawConfig().translateAll;
  }

  private rawConfig(): DatapathConfig {
    const v = bpf.mapLookup(this.maps.sm_config.fd, Buffer.alloc(4), configCodec.size);
    return v ? configCodec.decode(v) : { proxyCgroupId: 0n, proxyPort: 0 };
  }

  proxyConfig(): DatapathConfig | null {
    const c = this.rawConfig();
    return c.proxy4 || c.proxy6 ? c : null;
  }

  /** Per-CPU counters, summed. */
  counters(): Record<CounterName, bigint> {
    const m = this.maps.sm_counters;
    const ncpu = bpf.numPossibleCpus();
    const out = {} as Record<CounterName, bigint>;
    COUNTER_NAMES.forEach((name, i) => {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(i);
      const v = bpf.mapLookup(m.fd, k, 8 * ncpu);
      let sum = 0n;
      if (v) for (let c = 0; c < ncpu; c++) sum += v.readBigUInt64LE(c * 8);
      out[name] = sum;
    });
    return out;
  }

  close(): void {
    for (const m of Object.values(this.maps)) m.close();
    if (this.rcuInnerFd >= 0) bpf.closeFd(this.rcuInnerFd);
    this.rcuInnerFd = -1;
  }

  /**
   * Remove the datapath: detach every pinned link and the sk_msg program, then delete the pins.
   * Existing connections keep working (their sockets already have their addresses); new ones are
   * no longer translated or redirected.
   */
  static remove(bpffsDir = DEFAULT_BPFFS_DIR): { detached: string[] } {
    const detached: string[] = [];
    const linksDir = pins.linksDir(bpffsDir);
    if (!fs.existsSync(bpffsDir)) throw new DatapathError('SM_NOT_INSTALLED', `no sockmesh datapath pinned under ${bpffsDir}`);
    for (const name of fs.existsSync(linksDir) ? fs.readdirSync(linksDir) : []) {
      const p = path.join(linksDir, name);
      const fd = bpf.objGet(p);
      try {
        bpf.linkDetach(fd);
        detached.push(name);
      } finally {
        bpf.closeFd(fd);
      }
      fs.unlinkSync(p);
    }
    const sockhashes = [pins.mapPin(bpffsDir, 'sm_sockhash')];
    const rd = retiredDir(bpffsDir);
    if (fs.existsSync(rd)) for (const n of fs.readdirSync(rd)) if (n.startsWith('sm_sockhash-')) sockhashes.push(path.join(rd, n));
    for (const pin of sockhashes) {
      forEachSkMsgProgram(pin, (_id, pfd, mapFd) => {
        bpf.progDetach(pfd, mapFd, bpf.consts.BPF_SK_MSG_VERDICT);
        detached.push(bpf.progInfo(pfd).name);
      });
    }
    fs.rmSync(bpffsDir, { recursive: true, force: true });
    return { detached };
  }
}
