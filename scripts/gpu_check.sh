#!/usr/bin/env bash
# GPU readiness in one command: CUDA tests, paper-size LUV-Net training clips/s (fp32 vs bf16 vs
# bf16 + channels_last, and torch.compile when time allows), peak GPU memory, inference ms/clip
# beside the paper's 65 ms, the GPU-side data path, and a paper-profile run killed and resumed.
# One summary at the end; exit status 0 when every check passed. At most ~8 minutes on one GPU.
#
#   bash scripts/gpu_check.sh [--cpu-smoke] [--time-limit SECONDS] [--json PATH]
#
#   --cpu-smoke       every section at a tiny size on the CPU (about a minute; what the tests run)
#   --time-limit S    time budget of the whole check (default 480 s); torch.compile gets what is left
#   --json PATH       also write the summary as JSON
#
# Uses the active virtualenv/conda environment when there is one, else ./.venv (made on first use).
# The logic lives in benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case "${1:-}" in -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
if [[ -n "${VIRTUAL_ENV:-}" ]]; then
    LUSV_PYTHON="$(command -v python)"
else
    source scripts/ensure_env.sh
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$LUSV_PYTHON" -m benchmarks.gpu_check "$@"
