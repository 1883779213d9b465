#!/usr/bin/env bash
# Build the Python plugin into OUT (default: this folder) with componentize-py.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$here}"
if ! command -v componentize-py >/dev/null; then
  echo "componentize-py is missing: pip install -r $here/requirements.txt" >&2
  exit 1
fi
mkdir -p "$out/src"
cp "$here/plugin.toml" "$out/plugin.toml"
# Build from a copy, so the source folder stays free of build by-products.
cp "$here/app.py" "$out/src/app.py"
componentize-py -d "$root/wit" -w itsm:plugin/plugin componentize -p "$out/src" app -o "$out/python-greeter.wasm"
