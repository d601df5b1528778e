#!/usr/bin/env bash
# Command 2: set everything up (first run only) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
