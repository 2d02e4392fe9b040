#!/usr/bin/env bash
# Refresh requirements-lock.txt, the exact version and hashes of every package the README commands
# install (scripts/ensure_env.sh installs from it), from pyproject.toml's dependencies and its
# `test` extra. One command after editing pyproject.toml:
#
#   bash scripts/lock.sh                           # add / drop what pyproject.toml added / dropped; other pins stay
#   bash scripts/lock.sh --upgrade-package numpy   # move one package to its newest allowed version
#   bash scripts/lock.sh --upgrade                 # move everything (then rerun the study: numbers may change)
#
# The lock is made by uv (`uv pip compile`), installed on first use into .cache/lock-tools (git-ignored),
# never into the study's environment. It is universal (Linux, macOS, Windows markers) for
# Python >= LOCK_PYTHON; existing pins are kept unless asked to move. tests/test_lock.py fails while
# pyproject.toml and the lock disagree.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV_VERSION=0.13.9
LOCK_PYTHON=3.11.5  # the Python the study is run and tested with (the lock's lowest Python)
tools=.cache/lock-tools
if [[ "$("$tools/bin/uv" --version 2>/dev/null)" != "uv $UV_VERSION"* ]]; then
    echo "lock.sh: installing uv $UV_VERSION into $tools" >&2
    rm -rf "$tools"
    python3 -m pip install -q --disable-pip-version-check --target "$tools" "uv==$UV_VERSION"
fi
"$tools/bin/uv" pip compile pyproject.toml --extra test --universal --python-version "$LOCK_PYTHON" \
    --generate-hashes --custom-compile-command "bash scripts/lock.sh" --quiet -o requirements-lock.txt "$@"
echo "lock.sh: requirements-lock.txt has $(grep -c '^[A-Za-z0-9]' requirements-lock.txt) packages; commit it with pyproject.toml" >&2
