#!/usr/bin/env bash
# Builds the BPF objects (bpf/ -> build/bpf), the libbpf addon (native/), the test tools (build/tools)
# and the TypeScript (dist/).
set -euo pipefail
cd "$(dirname "$0")/.."

make -s -C bpf

addon=native/build/Release/sockmesh_bpf.node
if [ ! -f "$addon" ] || [ -n "$(find native/src native/binding.gyp -newer "$addon" -print -quit)" ]; then
  bash native/build.sh --silent
fi

# Test tools that need what Node cannot do (raw, SCTP and UDP-Lite sockets).
mkdir -p build/tools
for tool in rawsyn mksock tfo; do
  if [ ! -f "build/tools/$tool" ] || [ "sandbox/tools/$tool.c" -nt "build/tools/$tool" ]; then
    gcc -O2 -Wall -Werror -o "build/tools/$tool" "sandbox/tools/$tool.c"
  fi
done

node_modules/.bin/tsc -p tsconfig.json
