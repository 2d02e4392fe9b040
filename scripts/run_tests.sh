#!/usr/bin/env bash
# The README's test command: sets up (or reuses) the environment, then runs the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/run_tests.sh -k cache`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure_env.sh
exec "$LUSV_PYTHON" -m pytest -q "$@"
