#!/usr/bin/env bash
# The paper profile at its own shapes on a CPU, no GPU needed: every row of the paper's Table 1
# (30-frame windows of 256 x 256, DenseNet-161 or ResNet-50 encoders, published widths) through
# the study's own steps on a few synthetic paper-profile videos: prepare, two optimizer steps per
# model, predictions, and notebook 06's tables. Prints seconds per step and peak memory per model
# and exits 1 on any error. Under 30 minutes on 2 cores, ~11 GB of memory at its peak.
#
#   bash scripts/paper_shape_check.sh [--out DIR] [--models KEY,...] [--smoke]
#
# --smoke: the same steps at toy shapes in about a minute (the test suite runs it).
# scripts/paper_shape_check.py says what departs from the profile (batch 1, random weights) and why.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure_env.sh
exec "$LUSV_PYTHON" scripts/paper_shape_check.py "$@"
