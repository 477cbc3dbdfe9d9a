#!/usr/bin/env bash
# Set up and run every check on a fresh machine: the README's test command.
# Installs the package with its dev extras, then runs ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v ip >/dev/null || ! command -v prlimit >/dev/null || ! command -v cc >/dev/null; then
  apt-get update -qq && apt-get install -y -qq iproute2 util-linux gcc >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "Running pip as the 'root'" || true
ruff check .
mypy
python3 -m pytest -q "$@"
