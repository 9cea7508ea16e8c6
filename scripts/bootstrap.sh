#!/usr/bin/env bash
# Installs what sockmesh needs and builds it. Idempotent: on a machine that has everything it only
# runs the (incremental) build. Called by `npm test`, `npm run demo` and the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "sockmesh: the datapath, its tests and the demo need root (BPF, network namespaces, cgroups)" >&2
  exit 1
fi

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v llvm-strip >/dev/null 2>&1 || need+=(llvm)
command -v bpftool >/dev/null 2>&1 || need+=(bpftool)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v make >/dev/null 2>&1 || need+=(make)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v python3 >/dev/null 2>&1 || need+=(python3)
for pkg in libbpf-dev libelf-dev zlib1g-dev linux-libc-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# The benchmarks (and the test that runs their --quick mode) compare against HAProxy sidecars and
# kube-proxy-style iptables rules, build a native client with gcc, drive HTTP load with wrk and
# check HTTP answers with curl.
# Installing the iptables package changes no firewall: the benchmarks only write rules inside
# their own network namespaces.
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v iptables-restore >/dev/null 2>&1 || need+=(iptables)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "sockmesh: installing Debian packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# npm packages: install when node_modules is missing or older than the lockfile.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "sockmesh: installing npm packages" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

exec bash scripts/build.sh
