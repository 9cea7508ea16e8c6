#!/usr/bin/env bash
# Runs a command inside another Linux kernel (Debian's 6.1 or 6.12 cloud kernels) under qemu,
# so that the kernel tests can be run against kernels other than the host's:
#
#   bash scripts/kernel-test.sh KERNEL [--mem MiB] [--cpus N] [--timeout SEC] -- COMMAND [ARGS...]
#
# KERNEL: 6.1, 6.12, or the name of a Debian kernel package (linux-image-...-unsigned).
#
# The guest sees the host's root filesystem read-only (virtiofs), with its own /proc, /sys,
# /dev, bpffs, cgroup2 (at the host's path) and tmpfs at /tmp, /run, /var/tmp; no network device.
# COMMAND runs as root in the caller's directory with PATH, HOME, CI, SOCKMESH_* (and a few
# locale/terminal variables) passed through, plus SOCKMESH_TIME_SCALE (1 under KVM, 10 under
# software emulation, for the tests' fixed waits; a value the caller sets wins) and
# SOCKMESH_VM_KERNEL (the guest's release). COMMAND's stdin is empty.
# Its output is streamed to stdout and its exit status is this script's (124: timed out,
# 125: the VM itself failed). The command must already be built: nothing in the repository is
# writable from the guest.
#
# Environment: SOCKMESH_KERNEL_CACHE (default /var/cache/sockmesh/kernels) holds the unpacked
# kernels, their initramfs and the KVM verdict; SOCKMESH_VM_ACCEL=kvm|tcg skips the KVM probe;
# SOCKMESH_VM_DEBUG=1 prints the guest's console (kernel and init messages) after the run;
# SOCKMESH_VM_CPU overrides qemu's -cpu (default: host under KVM, qemu64 under TCG).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
vmdir="$here/vm"
prog=kernel-test

say() { echo "$prog: $*" >&2; }
die() { say "$*"; exit 125; }
usage() {
  echo "usage: bash scripts/kernel-test.sh KERNEL [--mem MiB] [--cpus N] [--timeout SEC] -- COMMAND [ARGS...]" >&2
  echo "       KERNEL: 6.1 | 6.12 | linux-image-<version>-cloud-amd64-unsigned" >&2
  exit 2
}

# ---------------------------------------------------------------------------------------------
# Arguments

[ $# -ge 1 ] || usage
kernel_arg=$1
shift
mem=2048
cpus=2
timeout_s=3600
while [ $# -gt 0 ]; do
  case "$1" in
    --mem) mem=${2:-}; shift 2 || usage ;;
    --cpus) cpus=${2:-}; shift 2 || usage ;;
    --timeout) timeout_s=${2:-}; shift 2 || usage ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) say "unknown option: $1"; usage ;;
  esac
done
[ $# -ge 1 ] || usage
for n in "$mem" "$cpus" "$timeout_s"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { say "not a positive number: $n"; usage; }
done

# The aliases are pinned so that a run is reproducible; bump them when Debian drops the package
# (`apt-cache search cloud-amd64-unsigned` lists what is available).
# `series` is the fallback when Debian has dropped the pinned build: the newest one of the series.
series=
case "$kernel_arg" in
  6.1) pkg=linux-image-6.1.0-57-cloud-amd64-unsigned series='^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$' ;;
  6.12) pkg=linux-image-6.12.118+deb12-cloud-amd64-unsigned series='^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$' ;;
  linux-image-*) pkg=$kernel_arg ;;
  *) say "unknown kernel: $kernel_arg"; usage ;;
esac
[[ "$pkg" =~ ^linux-image-[A-Za-z0-9.+~-]+$ ]] || die "not a Debian kernel package name: $pkg"

[ "$(id -u)" = 0 ] || die "needs root (apt-get, virtiofsd, qemu's shared memory)"

cache=${SOCKMESH_KERNEL_CACHE:-/var/cache/sockmesh/kernels}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd -P)
cwd=$(pwd -P)

# The guest mounts its own kernel filesystems over /proc, /sys and /dev, and tmpfs over /tmp,
# /run and /var/tmp. The caller's directory may be below the tmpfs ones (a CI checkout may live
# there: the guest carries it over), not one of them itself; the cache (whose modules the guest
# mounts) must be outside all of them.
case "$cwd/" in
  /proc/* | /sys/* | /dev/* | /tmp/ | /run/ | /var/tmp/)
    die "$cwd is hidden in the guest (a kernel filesystem or tmpfs there); use another directory" ;;
esac
case "$cache/" in
  /proc/* | /sys/* | /dev/* | /tmp/* | /run/* | /var/tmp/*)
    die "SOCKMESH_KERNEL_CACHE=$cache is hidden in the guest (tmpfs or a kernel filesystem there); use another directory" ;;
esac

# ---------------------------------------------------------------------------------------------
# Cleanup: every process this script starts and every temp file, whatever way it ends. The
# trap covers signals that can be caught; each background process is also started with a
# parent-death signal (setpriv --pdeathsig), so that even a SIGKILL of this script takes qemu
# and virtiofsd with it (only the temp directory is then left behind).

tmp=
qemu_pid=
vfsd_pid=
cleanup() {
  local pid
  for pid in $qemu_pid $vfsd_pid; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $qemu_pid $vfsd_pid; do
    # Give each a moment to exit by itself, then make sure.
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  qemu_pid=
  vfsd_pid=
  [ -z "$tmp" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Temp directories of earlier runs that were SIGKILLed (the one thing no trap can clean).
for d in "${TMPDIR:-/tmp}"/sockmesh-vm.*; do
  if [ -f "$d/pid" ] && ! kill -0 "$(cat "$d/pid")" 2>/dev/null; then rm -rf "$d"; fi
done
caller_tty=0
[ -t 1 ] && caller_tty=1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sockmesh-vm.XXXXXX")
echo $$ >"$tmp/pid"

# ---------------------------------------------------------------------------------------------
# Host tools. Debian 12's QEMU 7.2 ships the C virtiofsd in qemu-system-common (pulled in by
# qemu-system-x86); Debian 12 has no separate virtiofsd package in its main archive.

virtiofsd=/usr/lib/qemu/virtiofsd
apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq >&2
    apt_updated=1
  fi
}
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
[ -x "$virtiofsd" ] || need+=(qemu-system-common)
# The static build: it is copied into the initramfs and runs there without any libraries.
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
# depmod on the host for the unpacked kernel; modprobe in the guest (from the shared root).
command -v depmod >/dev/null 2>&1 || need+=(kmod)
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
busybox=/bin/busybox

# ---------------------------------------------------------------------------------------------
# The kernel: downloaded and unpacked once into the cache, never installed on the host.

exec 9>"$cache/.lock"
flock 9 # concurrent runs must not unpack or build the same thing at the same time

if [ ! -f "$cache/$pkg/version" ] && [ -n "$series" ]; then
  apt_update_once
  if ! apt-cache show "$pkg" >/dev/null 2>&1; then
    newest=$( (apt-cache search --names-only "$series" || true) | awk '{print $1}' | sort -V | tail -n 1)
    [ -n "$newest" ] || die "neither $pkg nor any other build of its series is in the package lists"
    say "$pkg is no longer in the package lists; using $newest, the newest of its series"
    pkg=$newest
  fi
fi
kdir="$cache/$pkg"
if [ ! -f "$kdir/version" ]; then
  say "fetching $pkg into $cache"
  rm -rf "$kdir.partial"
  mkdir -p "$kdir.partial/dl"
  # Run as root so that apt does not hand the download to its _apt user (who may not be able to
  # write the cache); retry after refreshing the package lists, which may be missing or stale.
  get() { (cd "$kdir.partial/dl" && apt-get -q -o APT::Sandbox::User=root download "$pkg" >&2); }
  get || { apt_update_once && get; } || die "cannot download $pkg"
  dpkg -x "$kdir.partial"/dl/*.deb "$kdir.partial/root"
  rm -rf "$kdir.partial/dl"
  kver=$(ls "$kdir.partial/root/lib/modules")
  [ -f "$kdir.partial/root/boot/vmlinuz-$kver" ] || die "$pkg has no kernel image"
  # The package ships no modules.dep (its postinst would run depmod): make it here.
  depmod -b "$kdir.partial/root" "$kver"
  echo "$kver" >"$kdir.partial/version"
  rm -rf "$kdir"
  mv "$kdir.partial" "$kdir"
fi
kver=$(cat "$kdir/version")
vmlinuz="$kdir/root/boot/vmlinuz-$kver"
moddir="$kdir/root/lib/modules/$kver"

# ---------------------------------------------------------------------------------------------
# The initramfs: busybox, the init scripts and the modules needed before the root is mounted.
# Cached per kernel under a hash of its inputs, so editing scripts/vm/* rebuilds it.

# Module names as the kernel knows them: no directory, no .ko[.xz|.zst|.gz], '-' as '_'.
modname() { local b=${1##*/}; b=${b%%.ko*}; echo "${b//-/_}"; }

declare -A builtin=() modpath=() moddeps=()
while read -r line; do builtin[$(modname "$line")]=1; done <"$moddir/modules.builtin"
while IFS= read -r line; do
  m=${line%%:*}
  modpath[$(modname "$m")]=$m
  moddeps[$(modname "$m")]=${line#*:}
done <"$moddir/modules.dep"

# virtio_pci: the bus of both devices; virtio_console: the command's output; virtiofs (and
# fuse): the root; overlay: to add /lib/modules to a host root that lacks it. Which of these
# are built in differs between the 6.1 and 6.12 cloud kernels.
initrd_modules=()
add_module() { # $1: name; its dependencies first (modules.dep lists all of them, transitively)
  local n=$1 d
  [ -z "${builtin[$n]:-}" ] || return 0
  [ -n "${modpath[$n]:-}" ] || die "$kver has no module $n (neither built in nor in modules.dep)"
  for d in ${moddeps[$n]}; do add_module "$(modname "$d")"; done
  case " ${initrd_modules[*]} " in *" ${modpath[$n]} "*) return 0 ;; esac
  initrd_modules+=("${modpath[$n]}")
}
for m in virtio_pci virtio_console virtiofs overlay; do add_module "$m"; done

initrd_key=$( {
  cat "$vmdir/init" "$vmdir/stage2"
  sha256sum "$busybox"
  printf '%s\n' "${initrd_modules[@]}"
} | sha256sum | cut -c1-16)
initrd="$kdir/initramfs-$initrd_key.cpio"
if [ ! -f "$initrd" ]; then
  say "building the initramfs for $kver (modules: ${initrd_modules[*]:-none})"
  st="$tmp/initramfs"
  mkdir -p "$st/bin" "$st/dev" "$st/modules" "$st/sockmesh"
  cp "$busybox" "$st/bin/busybox"
  ln -s busybox "$st/bin/sh"
  install -m 755 "$vmdir/init" "$st/init"
  install -m 755 "$vmdir/stage2" "$st/stage2"
  # Without a /dev/console in the initramfs the kernel starts init with no stdio at all.
  mknod -m 600 "$st/dev/console" c 5 1
  : >"$st/modules/order"
  for m in "${initrd_modules[@]}"; do
    out="$st/modules/$(modname "$m").ko"
    # busybox insmod reads plain ELF only; the 6.12 kernel's modules are xz-compressed.
    case "$m" in
      *.ko.xz) xz -dc "$moddir/$m" >"$out" ;;
      *.ko.zst) zstd -qdc "$moddir/$m" >"$out" ;;
      *.ko.gz) gzip -dc "$moddir/$m" >"$out" ;;
      *) cp "$moddir/$m" "$out" ;;
    esac
    echo "${out##*/}" >>"$st/modules/order"
  done
  rm -f "$kdir"/initramfs-*.cpio
  (cd "$st" && find . -mindepth 1 | sed 's|^\./||' | "$busybox" cpio -o -H newc 2>/dev/null) >"$initrd.partial"
  mv "$initrd.partial" "$initrd"
  rm -rf "$st"
fi

# ---------------------------------------------------------------------------------------------
# The read-only share. QEMU 7.2's virtiofsd has no read-only mode, so it serves a read-only
# bind mount of the host's root, made in a mount namespace of its own: nothing on the host's
# mount table changes, and the namespace (with its mounts) goes away with virtiofsd. The bind is
# not recursive, so the host's /proc, /sys, /dev and other mounts stay out of the guest's view,
# except those that hold the caller's directory or the kernel cache, which are added.
# cache=always lets the guest keep file pages and lookups between opens (node starts 4x faster
# than with cache=auto, which rereads its binary at every exec); the price is that a host file
# changed while the guest runs may be seen in its old state until the run ends.

cgroup2=$(awk '$3 == "cgroup2" { print $2 }' /proc/mounts | sort | awk 'NR == 1 || $0 == "/sys/fs/cgroup" { p = $0 } END { print p }')
cgroup2=${cgroup2:-/sys/fs/cgroup}
mapfile -t extra_mounts < <(for p in "$cwd" "$cache"; do findmnt -n -o TARGET --target "$p"; done | grep -vx / | sort -u)

start_virtiofsd() {
  local sock=$1 share="$tmp/share"
  mkdir -p "$share"
  # shellcheck disable=SC2016 # expanded by the inner shell
  setpriv --pdeathsig KILL -- unshare --mount --propagation private -- bash -c '
    set -e
    share=$1 sock=$2 vfsd=$3; shift 3
    mount --bind / "$share"
    mount -o remount,bind,ro "$share"
    for m in "$@"; do
      mount --bind "$m" "$share$m"
      mount -o remount,bind,ro "$share$m"
    done
    exec "$vfsd" --socket-path="$sock" -o source="$share" -o cache=always -o log_level=warn
  ' _ "$share" "$sock" "$virtiofsd" "${extra_mounts[@]}" 2>>"$tmp/virtiofsd.log" &
  vfsd_pid=$!
  for _ in $(seq 100); do
    [ -S "$sock" ] && return 0
    kill -0 "$vfsd_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$tmp/virtiofsd.log" >&2
  die "virtiofsd did not start"
}

# ---------------------------------------------------------------------------------------------
# One boot: $1 accelerator, $2 timeout (s), $3 the job directory (vm.conf, command.sh).
# Returns the command's exit status, 124 on timeout, 125 when the guest never reported one, and
# says which in $outcome (exited, timeout, failed).

sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; } # quoted for any POSIX shell

boot() {
  local accel=$1 limit=$2 job=$3 cpu rc status
  local sock="$tmp/virtiofsd.sock"
  rm -f "$sock" "$tmp/console.log" "$tmp/qemu.log" "$tmp/virtiofsd.log"
  start_virtiofsd "$sock"

  # The per-run files travel as a second cpio archive after the cached one; the kernel unpacks
  # both into the same initramfs.
  (cd "$job" && find sockmesh | "$busybox" cpio -o -H newc 2>/dev/null) >"$tmp/job.cpio"
  cat "$initrd" "$tmp/job.cpio" >"$tmp/initrd"

  # Under TCG a plain qemu64 CPU: with "max", glibc and V8 pick AVX2/XSAVE-heavy code paths
  # that QEMU emulates slowly (exec-heavy work measured 2x slower, plain loops 1.5x).
  if [ "$accel" = kvm ]; then cpu=host; else cpu=qemu64; fi
  cpu=${SOCKMESH_VM_CPU:-$cpu}
  # mitigations=off: the guest runs only our tests, and page-table isolation makes every system
  # call flush the emulated TLB, which costs TCG dearly. panic=-1 with -no-reboot: a guest that
  # panics ends qemu at once instead of waiting for the timeout.
  local append="console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off rdinit=/init"
  setpriv --pdeathsig KILL -- timeout --kill-after=5 "$limit" \
    setpriv --pdeathsig KILL -- qemu-system-x86_64 \
    -nodefaults -nographic -no-reboot -nic none \
    -machine q35 -accel "$accel" -cpu "$cpu" -smp "$cpus" -m "${mem}M" \
    -object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -numa node,memdev=mem \
    -chardev "socket,id=vfs,path=$sock" -device vhost-user-fs-pci,chardev=vfs,tag=hostroot \
    -serial "file:$tmp/console.log" -monitor none \
    -chardev stdio,id=out,signal=off -device virtio-serial-pci -device virtconsole,chardev=out \
    -kernel "$vmlinuz" -initrd "$tmp/initrd" -append "$append" \
    </dev/null 2>"$tmp/qemu.log" &
  qemu_pid=$!
  rc=0
  # (2>/dev/null: bash's own "Aborted" notice; qemu's reason is in qemu.log)
  wait "$qemu_pid" 2>/dev/null || rc=$?
  qemu_pid=
  # virtiofsd ends when qemu closes the socket; make sure before the next boot.
  kill "$vfsd_pid" 2>/dev/null || true
  wait "$vfsd_pid" 2>/dev/null || true
  vfsd_pid=

  status=$(tr -d '\r' <"$tmp/console.log" 2>/dev/null | sed -n 's/^.*SOCKMESH_VM_EXIT=\([0-9]*\)$/\1/p' | tail -n 1)
  if [ -n "$status" ]; then outcome=exited; return "$status"; fi
  if [ "$rc" = 124 ]; then outcome=timeout; return 124; fi
  outcome=failed
  return 125
}

# What to show when a boot did not get as far as the command's exit status.
# (Without the firmware's terminal escapes, and without the lines QEMU 7.2's virtiofsd prints
# at every normal disconnect.)
show_failure() {
  say "--- last lines of the guest's console ---"
  tail -n 40 "$tmp/console.log" 2>/dev/null | tr -d '\r' | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' >&2 || true
  echo >&2
  if [ -s "$tmp/qemu.log" ]; then say "--- qemu ---"; tail -n 20 "$tmp/qemu.log" >&2; fi
  if grep -qv -e 'fv_remove_watch: TODO' -e 'Unexpected poll revents' "$tmp/virtiofsd.log" 2>/dev/null; then
    say "--- virtiofsd ---"
    grep -v -e 'fv_remove_watch: TODO' -e 'Unexpected poll revents' "$tmp/virtiofsd.log" | tail -n 20 >&2
  fi
}

# $1: job directory; the rest: the command. Writes what the guest's init reads.
make_job() {
  local job=$1 scale=$2 v
  shift 2
  mkdir -p "$job/sockmesh"
  {
    echo "SM_KVER=$(sq "$kver")"
    echo "SM_MODDIR=$(sq "$moddir")"
    echo "SM_CGROUP2=$(sq "$cgroup2")"
    echo "SM_CWD=$(sq "$cwd")"
    echo "SM_TTY=$caller_tty"
  } >"$job/sockmesh/vm.conf"
  # Only chosen variables cross: the rest of the caller's environment (TMPDIR, XDG_*, the
  # session's) describes the host, not the guest.
  local envs=()
  for v in PATH HOME CI TERM LANG LC_ALL TZ USER LOGNAME NODE_OPTIONS NO_COLOR FORCE_COLOR $(compgen -e | grep '^SOCKMESH_' || true); do
    [ -n "${!v+x}" ] && envs+=("$(sq "$v=${!v}")")
  done
  envs+=("$(sq "SOCKMESH_TIME_SCALE=${SOCKMESH_TIME_SCALE:-$scale}")" "$(sq "SOCKMESH_VM_KERNEL=$kver")")
  local argv=() a
  for a in "$@"; do argv+=("$(sq "$a")"); done
  {
    echo "cd $(sq "$cwd") || exit 125"
    echo "exec env -i ${envs[*]} ${argv[*]}"
  } >"$job/sockmesh/command.sh"
}

# ---------------------------------------------------------------------------------------------
# Accelerator. KVM when it boots this kernel, TCG otherwise; the verdict is cached per kernel
# because a KVM that cannot run it (e.g. a nested one) usually hangs rather than fails.

accel_file="$kdir/accel"
if [ -n "${SOCKMESH_VM_ACCEL:-}" ]; then
  case "$SOCKMESH_VM_ACCEL" in kvm | tcg) accel=$SOCKMESH_VM_ACCEL ;; *) die "SOCKMESH_VM_ACCEL must be kvm or tcg" ;; esac
elif [ -f "$accel_file" ] && { [ "$(cat "$accel_file")" = tcg ] || [ -w /dev/kvm ]; }; then
  accel=$(cat "$accel_file")
elif [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
  say "probing KVM with $kver (once; the verdict is kept in $accel_file)"
  make_job "$tmp/probe" 1 true
  if boot kvm 30 "$tmp/probe"; then
    accel=kvm
  else
    why="$outcome${outcome:+: }$(tail -n 1 "$tmp/qemu.log" 2>/dev/null)"
    # Only a KVM that fails where emulation boots is a verdict worth keeping; a guest that fails
    # either way is a broken run, reported as one and not cached.
    boot tcg 300 "$tmp/probe" || die "the guest does not boot under KVM ($why) nor under TCG ($outcome); nothing cached"
    accel=tcg
    say "KVM does not boot $kver ($why); using TCG"
  fi
  echo "$accel" >"$accel_file"
  rm -rf "$tmp/probe"
else
  accel=tcg
fi
flock -u 9 # the cache is complete: other runs may go on
exec 9>&-

if [ "$accel" = kvm ]; then scale=1; else scale=10; fi
say "kernel $kver, accelerator $accel, SOCKMESH_TIME_SCALE=${SOCKMESH_TIME_SCALE:-$scale}, ${mem} MiB, $cpus cpus"

make_job "$tmp/job" "$scale" "$@"
rc=0
outcome=
boot "$accel" "$timeout_s" "$tmp/job" || rc=$?
if [ -n "${SOCKMESH_VM_DEBUG:-}" ]; then
  say "--- the guest's console (SOCKMESH_VM_DEBUG) ---"
  tr -d '\r' <"$tmp/console.log" >&2 || true
fi
case "$outcome" in
  timeout) say "timed out after ${timeout_s}s; the VM was stopped"; show_failure ;;
  failed) say "the VM failed before reporting the command's exit status"; show_failure ;;
esac
exit "$rc"
