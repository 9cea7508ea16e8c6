#!/usr/bin/env bash
# Builds the BPF objects (bpf/ -> build/bpf), the libbpf addon (native/) and the TypeScript (dist/).
set -euo pipefail
cd "$(dirname "$0")/.."

make -s -C bpf

addon=native/build/Release/sockmesh_bpf.node
if [ ! -f "$addon" ] || [ -n "$(find native/src native/binding.gyp -newer "$addon" -print -quit)" ]; then
  bash native/build.sh --silent
fi

node_modules/.bin/tsc -p tsconfig.json
