#!/usr/bin/env bash
# Command 1: set everything up (first run only) and run the community node on embedded defaults.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
exec .venv/bin/lec up "$@"
