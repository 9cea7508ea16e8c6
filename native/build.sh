#!/usr/bin/env bash
# Builds build/Release/sockmesh_bpf.node with the node-gyp bundled in npm, so
# no network access is needed (headers come from nodedir=/usr).
set -euo pipefail
cd "$(dirname "$0")"
gyp="$(npm prefix -g 2>/dev/null)/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"
[ -f "$gyp" ] || gyp="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")/node_modules/node-gyp/bin/node-gyp.js"
nodedir="${npm_config_nodedir:-/usr}"
exec node "$gyp" rebuild --nodedir="$nodedir" "$@"
