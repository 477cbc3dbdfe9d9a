#!/usr/bin/env bash
# Set up and run the main job on a fresh machine: install, then predict and prove
# the connection ceiling on the embedded loopback sink. Extra arguments go to probe.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e . 2>&1 | grep -v "Running pip as the 'root'" || true
tcpceiling analyze --role client --connect 127.0.0.1:9 --processes 8
if tcpceiling probe --help >/dev/null 2>&1; then
  exec tcpceiling probe "$@"
fi
