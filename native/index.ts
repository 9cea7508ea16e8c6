/**
 * Typed wrapper over the sockmesh_bpf addon: a thin, generic libbpf binding
 * (objects, maps, links, attach/query, pins). Nothing here knows about the
 * mesh.
 *
 * File descriptors are plain numbers owned by the caller: close them with
 * closeFd(). Program/map fds reported by a BpfObject belong to that object and
 * become invalid (and may be reused by unrelated files) after close(); dupFd()
 * anything that must outlive it.
 *
 * The addon is loaded lazily on first use so that importing this module (e.g.
 * for types or in unit tests of other components) never requires a build.
 */
import * as fs from 'fs';
import * as path from 'path';

import { SockmeshError } from '../core/errors';
import { CONST_NAMES, ConstName } from './const-names';

export { CONST_NAMES, ConstName };

/**
 * Every failure of this module is a BpfError: the kernel's family of the one error hierarchy
 * (core/errors.ts). Its code is the errno name ('ENOENT', 'E2BIG', ...) or 'SM_VERIFIER' for a
 * verifier rejection.
 */
export class BpfError extends SockmeshError<string> {
  /** Positive errno (libbpf-specific codes are >= 4000). */
  readonly errno: number;
  /** Operation that failed: 'map_update', 'object_load', 'link_create', ... */
  readonly op: string;
  /** Tail (~16 KiB) of libbpf/verifier output, for object_open/object_load. */
  readonly verifierLog?: string;

  constructor(message: string, code: string, errno: number, op: string, verifierLog?: string) {
    super(code, message);
    this.errno = errno;
    this.op = op;
    if (verifierLog !== undefined) this.verifierLog = verifierLog;
  }
}

export interface OpenOptions {
  /**
   * Directory on bpffs where maps declared with LIBBPF_PIN_BY_NAME are pinned,
   * or reused if already pinned there (libbpf's default is /sys/fs/bpf). Reuse
   * requires identical type/key/value/max_entries/flags, else load() fails
   * EINVAL ("couldn't reuse pinned map ... parameter mismatch").
   */
  pinRoot?: string;
  /** Per-map max_entries overrides applied before load; unknown names throw ENOENT. */
  maxEntries?: Record<string, number>;
  /** Verifier log level for all programs (0 = only on failure, the default). */
  kernelLogLevel?: number;
}

export interface ProgramDesc {
  name: string;
  section: string;
  progType: number;
  attachType: number;
  /** -1 before load(); owned by the object. */
  fd: number;
}

export interface MapDesc {
  name: string;
  /** -1 before load(); owned by the object. */
  fd: number;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** libbpf-internal map (.rodata, .bss, ...). */
  internal: boolean;
  /** Set for maps pinned by name (requires pinRoot or an explicit pin path). */
  pinPath?: string;
}

export interface MapInfo {
  id: number;
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  btfId: number;
}

export interface LinkInfo {
  id: number;
  progId: number;
  type: number;
  attachType?: number;
  /** For cgroup links: the cgroup's id (its inode number on cgroup2). */
  cgroupId?: number;
  netnsIno?: number;
  ifindex?: number;
}

export interface ProgQueryResult {
  progIds: number[];
  attachFlags: number;
}

export interface ProgInfo {
  id: number;
  name: string;
  /** Hex of the 8-byte program tag. */
  tag: string;
  type: number;
  /** runCnt/runTimeNs only advance while sysctl kernel.bpf_stats_enabled=1. */
  runCnt: number;
  runTimeNs: number;
  mapIds: number[];
  loadTimeNs: number;
  btfId: number;
  xlatedProgLen: number;
  jitedProgLen: number;
  verifiedInsns: number;
}

export interface BatchResult {
  keys: Buffer[];
  values: Buffer[];
}

interface NativeObject {
  load(): void;
  programs(): ProgramDesc[];
  maps(): MapDesc[];
  close(): void;
  log(): string;
  isLoaded(): boolean;
}

interface Addon {
  setErrorClass(ctor: typeof BpfError): void;
  objectOpen(path: string, opts?: OpenOptions): NativeObject;
  mapInfo(fd: number): MapInfo;
  mapCreate(
    type: number,
    keySize: number,
    valueSize: number,
    maxEntries: number,
    name?: string,
    flags?: number,
    innerMapFd?: number,
  ): number;
  mapLookup(fd: number, key: Uint8Array | null, valueSize: number, flags?: number): Buffer | null;
  mapUpdate(fd: number, key: Uint8Array | null, value: Uint8Array, flags?: number): void;
  mapDelete(fd: number, key: Uint8Array | null): boolean;
  mapGetNextKey(fd: number, key: Uint8Array | null, keySize: number): Buffer | null;
  mapLookupBatch(fd: number, keySize: number, valueSize: number, maxCount?: number): BatchResult;
  mapUpdateBatch(fd: number, keys: Uint8Array[], values: Uint8Array[], flags?: number): void;
  mapDeleteBatch(fd: number, keys: Uint8Array[]): number;
  numPossibleCpus(): number;
  netnsInfo(path: string): { cookie: bigint; addrs: string[] };
  peerCred(fd: number): { pid: number; uid: number; gid: number };
  unixConnect(path: string, timeoutMs?: number): number;
  sendFds(fd: number, data: Uint8Array, fds?: number[]): number;
  recvFds(fd: number, maxBytes?: number): { data: Buffer; fds: number[] };
  linkCreate(progFd: number, targetFd: number, attachType: number, flags?: number): number;
  linkUpdate(linkFd: number, newProgFd: number, oldProgFd?: number): void;
  linkInfo(linkFd: number): LinkInfo;
  linkDetach(linkFd: number): void;
  progAttach(progFd: number, targetFd: number, attachType: number, flags?: number): void;
  progDetach(progFd: number, targetFd: number, attachType: number): void;
  progQuery(targetFd: number, attachType: number, queryFlags?: number): ProgQueryResult;
  progInfo(progFd: number): ProgInfo;
  progGetFdById(id: number): number;
  mapGetFdById(id: number): number;
  linkGetFdById(id: number): number;
  openPath(path: string, flags?: number): number;
  closeFd(fd: number): void;
  dupFd(fd: number): number;
  objPin(fd: number, path: string): void;
  objGet(path: string): number;
  isBpffs(path: string): boolean;
  libbpfVersion(): string;
  probeCanLoad(): boolean;
  probeProgType(progType: number): boolean;
  probeMapType(mapType: number): boolean;
  probeHelper(progType: number, helperId: number, expectedAttachType?: number): boolean;
  probeMapLink(progType: number, attachType: number, mapType: number): boolean;
  probeLockedLookup(): boolean;
  consts: Readonly<Record<string, number>>;
}

/**
 * Where the addon is loaded from: $SOCKMESH_NATIVE_ADDON if set, else the
 * node-gyp output seen from dist/native/index.js (or from native/ itself when
 * this file runs uncompiled).
 */
export function addonPath(): string {
  const override = process.env.SOCKMESH_NATIVE_ADDON;
  if (override !== undefined && override !== '') return path.resolve(override);
  const candidates = [
    path.resolve(__dirname, '../../native/build/Release/sockmesh_bpf.node'),
    path.resolve(__dirname, 'build/Release/sockmesh_bpf.node'),
  ];
  return candidates.find((p) => fs.existsSync(p)) ?? candidates[0]!;
}

let addon: Addon | undefined;

function native(): Addon {
  if (addon !== undefined) return addon;
  const p = addonPath();
  let loaded: Addon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    loaded = require(p) as Addon;
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new BpfError(
      `addon_load(path=${p}): ENOENT: cannot load native addon (build it: see native/README.md): ${why}`,
      'ENOENT',
      2,
      'addon_load',
    );
  }
  loaded.setErrorClass(BpfError);
  addon = loaded;
  return loaded;
}

/** Numeric BPF_*, O_* and BPF_FS_MAGIC values from the headers the addon was built with. */
export const consts: Readonly<Record<ConstName, number>> = (() => {
  const o = {} as Record<ConstName, number>;
  for (const name of CONST_NAMES) {
    Object.defineProperty(o, name, {
      enumerable: true,
      get: () => {
        const v = native().consts[name];
        if (v === undefined) {
          throw new BpfError(`consts(${name}): ENOENT: not exported by the addon (rebuild it)`, 'ENOENT', 2, 'consts');
        }
        return v;
      },
    });
  }
  return Object.freeze(o);
})();

/** Names and values the loaded addon actually exports (used to check CONST_NAMES). */
export function addonConsts(): Readonly<Record<string, number>> {
  return native().consts;
}

export function libbpfVersion(): string {
  return native().libbpfVersion();
}

/**
 * A libbpf bpf_object. Typical use: open -> load -> programs()/maps() -> dup the
 * fds to keep -> close. Unclosed objects are closed when garbage collected,
 * which also invalidates their fds, so keep a reference or dup.
 */
export class BpfObject {
  private constructor(
    private readonly handle: NativeObject,
    readonly path: string,
  ) {}

  static open(path: string, opts?: OpenOptions): BpfObject {
    return new BpfObject(native().objectOpen(path, opts), path);
  }

  /** Loads all programs and creates (or reuses pinned) maps. Can be called once. */
  load(): void {
    this.handle.load();
  }

  get loaded(): boolean {
    return this.handle.isLoaded();
  }

  programs(): ProgramDesc[] {
    return this.handle.programs();
  }

  maps(): MapDesc[] {
    return this.handle.maps();
  }

  /** Program by function name; throws BpfError ENOENT if absent. */
  program(name: string): ProgramDesc {
    const p = this.programs().find((x) => x.name === name);
    if (p === undefined) throw notFound('object_program', this.path, `program '${name}'`);
    return p;
  }

  /** Map by name (as libbpf names it, e.g. 'x.rodata' for internal maps); throws ENOENT if absent. */
  map(name: string): MapDesc {
    const m = this.maps().find((x) => x.name === name);
    if (m === undefined) throw notFound('object_map', this.path, `map '${name}'`);
    return m;
  }

  /** libbpf output captured during the last open()/load() (verifier log when requested). */
  log(): string {
    return this.handle.log();
  }

  /** bpf_object__close. All fds obtained from programs()/maps() become invalid. Idempotent. */
  close(): void {
    this.handle.close();
  }
}

function notFound(op: string, objPath: string, what: string): BpfError {
  return new BpfError(`${op}(path=${objPath}): ENOENT: No such file or directory (${what})`, 'ENOENT', 2, op);
}

// --- attach -----------------------------------------------------------------

/** bpf_link_create; for cgroup hooks targetFd is an fd of the cgroup directory. Returns the link fd. */
export function linkCreate(progFd: number, targetFd: number, attachType: number, flags = 0): number {
  return native().linkCreate(progFd, targetFd, attachType, flags);
}

/** Atomically swaps the link's program; with oldProgFd the swap fails (EPERM) if it no longer runs that program. */
export function linkUpdate(linkFd: number, newProgFd: number, oldProgFd?: number): void {
  if (oldProgFd === undefined) native().linkUpdate(linkFd, newProgFd);
  else native().linkUpdate(linkFd, newProgFd, oldProgFd);
}

export function linkInfo(linkFd: number): LinkInfo {
  return native().linkInfo(linkFd);
}

/** Detaches the link from its hook; the fd (and any pin) stays valid but defunct. */
export function linkDetach(linkFd: number): void {
  native().linkDetach(linkFd);
}

/** Legacy BPF_PROG_ATTACH, e.g. sk_msg onto a sockhash with BPF_SK_MSG_VERDICT. */
export function progAttach(progFd: number, targetFd: number, attachType: number, flags = 0): void {
  native().progAttach(progFd, targetFd, attachType, flags);
}

export function progDetach(progFd: number, targetFd: number, attachType: number): void {
  native().progDetach(progFd, targetFd, attachType);
}

/** Programs attached at a hook (cgroup fd, or sockmap/sockhash fd for sk_msg/sk_skb). */
export function progQuery(targetFd: number, attachType: number, queryFlags = 0): ProgQueryResult {
  return native().progQuery(targetFd, attachType, queryFlags);
}

export function progInfo(progFd: number): ProgInfo {
  return native().progInfo(progFd);
}

// --- feature probes: each asks the running kernel (loads or creates a throwaway object, attaches
// nothing); true/false is its answer, a BpfError means the probe itself could not run (EPERM). ---

/** True if this process may load BPF programs at all; throws BpfError (EPERM, ...) otherwise. */
export function probeCanLoad(): boolean {
  return native().probeCanLoad();
}

/** Whether the kernel loads programs of this BPF_PROG_TYPE_* (call probeCanLoad first: libbpf answers false for EPERM too). */
export function probeProgType(progType: number): boolean {
  return native().probeProgType(progType);
}

/** Whether the kernel creates maps of this BPF_MAP_TYPE_*. */
export function probeMapType(mapType: number): boolean {
  return native().probeMapType(mapType);
}

/**
 * Whether programs of `progType` may call the helper numbered `helperId` (enum bpf_func_id); some
 * types need their expected attach type (cgroup sock_addr: e.g. BPF_CGROUP_INET4_CONNECT).
 */
export function probeHelper(progType: number, helperId: number, expectedAttachType?: number): boolean {
  return expectedAttachType === undefined ? native().probeHelper(progType, helperId) : native().probeHelper(progType, helperId, expectedAttachType);
}

/** Whether a program of `progType` attaches through a bpf_link to a map of `mapType` with `attachType`. */
export function probeMapLink(progType: number, attachType: number, mapType: number): boolean {
  return native().probeMapLink(progType, attachType, mapType);
}

/** Whether map lookups and updates take BPF_F_LOCK (values holding a bpf_spin_lock). */
export function probeLockedLookup(): boolean {
  return native().probeLockedLookup();
}

export function progGetFdById(id: number): number {
  return native().progGetFdById(id);
}

export function mapGetFdById(id: number): number {
  return native().mapGetFdById(id);
}

export function linkGetFdById(id: number): number {
  return native().linkGetFdById(id);
}

// --- files --------------------------------------------------------------------

/** open(2) with O_CLOEXEC always added; use consts.O_RDONLY | consts.O_DIRECTORY for cgroups. */
export function openPath(p: string, flags?: number): number {
  return flags === undefined ? native().openPath(p) : native().openPath(p, flags);
}

export function closeFd(fd: number): void {
  native().closeFd(fd);
}

/** F_DUPFD_CLOEXEC; the copy stays valid after the original (or its BpfObject) is closed. */
export function dupFd(fd: number): number {
  return native().dupFd(fd);
}

export function objPin(fd: number, p: string): void {
  native().objPin(fd, p);
}

export function objGet(p: string): number {
  return native().objGet(p);
}

/** True if p is on a bpf filesystem; false if it does not exist. */
export function isBpffs(p: string): boolean {
  return native().isBpffs(p);
}

// --- maps ---------------------------------------------------------------------

export function mapInfo(fd: number): MapInfo {
  return native().mapInfo(fd);
}

/** Creates a map (for tests and tools); returns its fd. innerMapFd is for *_OF_MAPS. */
export function mapCreate(
  type: number,
  keySize: number,
  valueSize: number,
  maxEntries: number,
  name?: string,
  flags = 0,
  innerMapFd?: number,
): number {
  const a = native();
  return innerMapFd === undefined
    ? a.mapCreate(type, keySize, valueSize, maxEntries, name, flags)
    : a.mapCreate(type, keySize, valueSize, maxEntries, name, flags, innerMapFd);
}

/**
 * Value for key, or null if absent. valueSize must be the syscall value size:
 * value_size, or roundup8(value_size) * numPossibleCpus() for per-CPU maps.
 * Sockmap/sockhash with an 8-byte value return the socket cookie.
 */
export function mapLookup(fd: number, key: Uint8Array | null, valueSize: number, flags = 0): Buffer | null {
  return native().mapLookup(fd, key, valueSize, flags);
}

export function mapUpdate(fd: number, key: Uint8Array | null, value: Uint8Array, flags = 0 /* BPF_ANY */): void {
  native().mapUpdate(fd, key, value, flags);
}

/** True if deleted, false if the key was absent. */
export function mapDelete(fd: number, key: Uint8Array | null): boolean {
  return native().mapDelete(fd, key);
}

/** Key following `key` (first key when null); null at the end. */
export function mapGetNextKey(fd: number, key: Uint8Array | null, keySize: number): Buffer | null {
  return native().mapGetNextKey(fd, key, keySize);
}

/**
 * Dumps the WHOLE map. maxCount is the number of entries fetched per
 * BPF_MAP_LOOKUP_BATCH call (chunk size), not a cap on the result. Maps or
 * kernels without batch support fall back to get_next_key + lookup.
 */
export function mapLookupBatch(fd: number, keySize: number, valueSize: number, maxCount = 256): BatchResult {
  return native().mapLookupBatch(fd, keySize, valueSize, maxCount);
}

/** Updates keys[i] = values[i], batched when supported; throws with progress in the message on failure. */
export function mapUpdateBatch(fd: number, keys: Uint8Array[], values: Uint8Array[], flags = 0): void {
  native().mapUpdateBatch(fd, keys, values, flags);
}

/** Deletes the given keys (absent ones are skipped); returns how many were deleted. */
export function mapDeleteBatch(fd: number, keys: Uint8Array[]): number {
  return native().mapDeleteBatch(fd, keys);
}

export function numPossibleCpus(): number {
  return native().numPossibleCpus();
}

/**
 * The network namespace at `path` (/proc/PID/ns/net, /var/run/netns/NAME): its cookie, as
 * bpf_get_netns_cookie() sees it, and the addresses configured in it. The calling thread enters
 * the namespace for the call and comes back (the process aborts if it cannot).
 */
export function netnsInfo(path: string): { cookie: bigint; addrs: string[] } {
  return native().netnsInfo(path);
}

/**
 * The process at the other end of a connected unix socket (SO_PEERCRED): pid (in this process's
 * pid namespace; 0 if not visible from it), uid, gid.
 */
export function peerCred(fd: number): { pid: number; uid: number; gid: number } {
  return native().peerCred(fd);
}

/**
 * A blocking unix stream socket connected to `path` (close-on-exec), whose reads and writes fail
 * with EAGAIN after `timeoutMs` (default 5000). The caller owns the fd (closeFd).
 */
export function unixConnect(path: string, timeoutMs?: number): number {
  return native().unixConnect(path, timeoutMs);
}

/**
 * One sendmsg on a unix stream socket: `data` (at least one byte) with `fds` attached
 * (SCM_RIGHTS; the receiver gets its own copies, ours stay open). Never blocks (EAGAIN on a full
 * socket); returns the bytes sent, which may be fewer than `data` (the rest goes without fds).
 */
export function sendFds(fd: number, data: Uint8Array, fds: number[] = []): number {
  return native().sendFds(fd, data, fds);
}

/** One recvmsg: the bytes (empty at end of stream) and the fds that came with them (close-on-exec, the caller's). */
export function recvFds(fd: number, maxBytes?: number): { data: Buffer; fds: number[] } {
  return native().recvFds(fd, maxBytes);
}
