#!/usr/bin/env bash
# Source this file: it leaves $LUSV_PYTHON pointing at a Python that has lusv and its locked
# dependencies. An active virtualenv/conda environment is used as it is; otherwise ./.venv is
# created on first use and reused afterwards. Every package comes from requirements-lock.txt
# (exact versions, checked against their hashes; refreshed by scripts/lock.sh), then lusv itself
# (editable, no dependencies of its own choosing). Installing runs again only when pyproject.toml
# or the lock changed since the last install, so a second run starts in seconds.

LUSV_MIN_FREE_GB="${LUSV_MIN_FREE_GB:-8}"
_lusv_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ -n "${VIRTUAL_ENV:-}" || -n "${CONDA_PREFIX:-}" ]]; then
    LUSV_PYTHON="$(command -v python)"
    echo "lusv: using the active environment ($(dirname "$(dirname "$LUSV_PYTHON")"))" >&2
else
    if [[ ! -x "$_lusv_root/.venv/bin/python" ]]; then
        echo "lusv: creating $_lusv_root/.venv (first run; installing takes a few minutes)" >&2
        python3 -m venv "$_lusv_root/.venv" || { echo "lusv: python3 -m venv failed: install python3-venv" >&2; return 1 2>/dev/null || exit 1; }
    fi
    LUSV_PYTHON="$_lusv_root/.venv/bin/python"
fi

_lusv_stamp="$("$LUSV_PYTHON" -c 'import sys; print(sys.prefix)')/.lusv-install-stamp"
_lusv_want="$(cat "$_lusv_root/pyproject.toml" "$_lusv_root/requirements-lock.txt" | sha256sum | cut -d' ' -f1) $_lusv_root"
if [[ "$(cat "$_lusv_stamp" 2>/dev/null)" != "$_lusv_want" ]]; then
    # torch's CUDA build alone is ~5.5 GB once installed; a disk that fills halfway through pip
    # leaves a broken environment and a long pip traceback, so say what is missing up front.
    _lusv_free_gb="$("$LUSV_PYTHON" -c 'import shutil, sys; print(shutil.disk_usage(sys.prefix).free // 2**30)')"
    if ! "$LUSV_PYTHON" -c 'import torch' 2>/dev/null && (( _lusv_free_gb < LUSV_MIN_FREE_GB )); then
        echo "lusv: installing torch needs about ${LUSV_MIN_FREE_GB} GB free beside $("$LUSV_PYTHON" -c 'import sys; print(sys.prefix)'); only ${_lusv_free_gb} GB are free (free some space, or activate an environment that has torch)" >&2
        return 1 2>/dev/null || exit 1
    fi
    # The lock is made for the Python the study is tested with (scripts/lock.sh, LOCK_PYTHON).
    if ! "$LUSV_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11, 5))'; then
        echo "lusv: requirements-lock.txt needs Python >= 3.11.5; $LUSV_PYTHON is $("$LUSV_PYTHON" -V 2>&1): install Python 3.11 and remove .venv, or use environment.yml" >&2
        return 1 2>/dev/null || exit 1
    fi
    echo "lusv: installing lusv and its locked dependencies (requirements-lock.txt) into $("$LUSV_PYTHON" -c 'import sys; print(sys.prefix)')" >&2
    "$LUSV_PYTHON" -m pip install --disable-pip-version-check -q --require-hashes -r "$_lusv_root/requirements-lock.txt" \
        && "$LUSV_PYTHON" -m pip install --disable-pip-version-check -q --no-deps -e "$_lusv_root" \
        || { echo "lusv: pip install failed (see above)" >&2; return 1 2>/dev/null || exit 1; }
    echo "$_lusv_want" > "$_lusv_stamp"
fi
export LUSV_PYTHON
export PATH="$(dirname "$LUSV_PYTHON"):$PATH"
