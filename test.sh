#!/usr/bin/env bash
# Command 2: set everything up (first run only) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
# test files are spread over LEC_TEST_WORKERS processes (default 2; 0 runs them in this one);
# most tests wait on blocks, brokers and subprocesses, so two workers pay even on two cores
exec .venv/bin/python -m pytest -n "${LEC_TEST_WORKERS:-2}" --dist loadfile "$@"
