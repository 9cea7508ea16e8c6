#!/usr/bin/env bash
# `npm run test:kernels`: the datapath-critical test files on the kernels people run, each booted
# under qemu by scripts/kernel-test.sh (Debian's own 6.1 and 6.12 cloud kernels, never installed
# as the host's). The files are the ones whose behaviour depends on the kernel: the libbpf addon,
# the L4 datapath, L4 policy, the L7 steering end-to-end, atomic backend replacement, the address
# rule in the kernel and the feature probes, plus the leftovers check.
#   usage: bash scripts/test-kernels.sh [KERNEL ...]     (default: 6.1 6.12)
# Env: SOCKMESH_KERNEL_TESTS overrides the test file list (space-separated names for test/run.ts).
set -euo pipefail
cd "$(dirname "$0")/.."

kernels=("$@")
[ ${#kernels[@]} -gt 0 ] || kernels=(6.1 6.12)
read -r -a files <<<"${SOCKMESH_KERNEL_TESTS:-native datapath policy proxy-e2e l7-fail-closed dest-authz identities tfo isolation atomic-swap ip-forms features zz-leftovers}"

summary=()
status=0
for k in "${kernels[@]}"; do
  echo "=== kernel $k: node dist/test/run.js --kernel-only ${files[*]}"
  start=$(date +%s)
  rc=0
  bash scripts/kernel-test.sh "$k" --timeout 2400 -- node dist/test/run.js --kernel-only "${files[@]}" || rc=$?
  took=$(( $(date +%s) - start ))
  summary+=("kernel $k: exit $rc in ${took} s")
  [ "$rc" = 0 ] || status=1
done
echo
echo "=== kernel test summary"
printf '%s\n' "${summary[@]}"
exit "$status"
