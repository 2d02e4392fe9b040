#!/usr/bin/env bash
# Run the whole study: notebooks 01-07 and 09 executed in order by papermill into results/<run>/.
#
#   bash run_all.sh [quick|paper|pretrained] [--data SOURCE] [--data-path PATH]
#                   [--dayfirst] [--no-temporal-split] [--run NAME] [--pocus PATH] [--from N]
#                   [--executor sequential|ray] [--ray-address ADDR]
#                   [--plan] [--models KEY,...] [--folds F,...]
#
#   quick   CPU, synthetic clips of 16 x 64 x 64, tiny encoder: minutes (the default)
#   paper   the published protocol: DenseNet-161, 30 x 256 x 256, lr 1e-6, 150 epochs (GPU)
#   pretrained  CPU, for real data (--data pocus): frozen ImageNet EfficientNet-Lite0 (from its
#           wheel), 16 x 224 x 224, 2-D heads on cached features; the 3-D CNNs (from scratch, 1/16
#           width) are opt-in: add them to a finished study with --models c3d,r2plus1d
#   --executor ray   train every (model, fold) of notebooks 02-04 as a Ray task (1 GPU or
#                    N CPUs each), side by side; needs pip install "lusv[ray]"
#   --ray-address    a Ray cluster to join (ray://head:10001 or auto); default: a local Ray
#   --plan           print the plan and train nothing: every (model, fold) run of notebooks 02-04,
#                    per model parameters, GMAC, s per step and peak memory (measured here, or
#                    estimated where a step cannot run here), device-hours and checkpoint disk
#   --models KEY,... train only these configurations (e.g. luvnet,usvn; luvnet_no_temporal,
#                    luvnet_k5 ... for notebook 04; c3d,r2plus1d add the pretrained profile's opt-in
#                    3-D CNNs); --folds F,... only these folds (e.g. 0). Later notebooks report what was trained
#
# Executed notebooks land in results/<run>/notebooks/ (and as .html beside them), everything they
# compute beside them; results/<run>/index.html links it all (headline table, conclusions, figures).
# Rerunning continues where a previous run stopped: finished folds are reused, interrupted
# ones resumed. --from N restarts at notebook N. Notebook 07 (real POCUS clips) runs when the
# POCUS folder exists (default ../shared/data/pocus) and is skipped with a message otherwise,
# or when the study itself is on POCUS (--data pocus).
# SOURCE is one of the data sources registered in lusv/sources (default synthetic).
set -euo pipefail
invoked="run_all.sh $*"  # named as the study folder's holder
caller_dir=$PWD  # --data-path and --pocus are relative to where the user typed the command
cd "$(dirname "${BASH_SOURCE[0]}")"

# The source registry is standard-library Python, so it answers before the environment exists.
sources() { PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "${LUSV_PYTHON:-python3}" -m lusv.data.sources "$@"; }
usage() {
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
    echo "SOURCE: $(sources | paste -sd '|')"
    exit "${1:-0}"
}

profile="" data=synthetic data_path="" dayfirst=False temporal_split=True run="" pocus="" from=1 executor=sequential ray_address=""
plan=false models="" folds=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        quick|paper|pretrained) profile=$1 ;;
        --data) data=$2; shift ;;
        --data-path) data_path=$2; shift ;;
        --dayfirst) dayfirst=True ;;
        --no-temporal-split) temporal_split=False ;;
        --run) run=$2; shift ;;
        --pocus) pocus=$2; shift ;;
        --from) from=$2; shift ;;
        --executor) executor=$2; shift ;;
        --ray-address) ray_address=$2; shift ;;
        --plan) plan=true ;;
        --models) models=$2; shift ;;
        --folds) folds=$2; shift ;;
        -h|--help) usage 0 ;;
        *) echo "run_all.sh: unknown argument '$1'" >&2; usage 2 ;;
    esac
    shift
done
from_caller() { [[ -z "$1" || "$1" == /* ]] && echo "$1" || echo "$caller_dir/$1"; }
data_path=$(from_caller "$data_path")
pocus=$(from_caller "$pocus")
[[ -n "$pocus" ]] || pocus=$(sources --default-location pocus)  # beside the repository
mapfile -t names < <(sources)
if [[ " ${names[*]} " != *" $data "* ]]; then
    listed=$(printf '%s, ' "${names[@]:0:${#names[@]}-1}")
    echo "run_all.sh: --data must be ${listed%, } or ${names[-1]}" >&2; exit 2
fi
if [[ -z "$data_path" ]] && ! sources --default-location "$data" >/dev/null 2>&1; then
    echo "run_all.sh: $(sources --default-location "$data" 2>&1)" >&2; exit 2
fi
case "$executor" in sequential|ray) ;; *) echo "run_all.sh: --executor must be sequential or ray" >&2; exit 2 ;; esac

source scripts/ensure_env.sh
# The study remembers its profile (prepare/prepared.json): a rerun of an existing study uses it, and a
# profile typed that disagrees with it is refused in one line before anything runs.
run_dir="results/${run:-${profile:-quick}-$data}"
recorded=$("$LUSV_PYTHON" -c 'import sys; from lusv.data.prepared import Prepared
p = Prepared.recorded(sys.argv[1]); print(p.profile or "" if p else "")' "$run_dir")
if [[ -n "$recorded" && -n "$profile" && "$recorded" != "$profile" ]]; then
    echo "run_all.sh: $run_dir holds a study prepared with profile '$recorded', not '$profile': leave the profile out, or pass --run NAME for a new study" >&2
    exit 2
fi
profile=${profile:-${recorded:-quick}}
# The plan (lusv.train.plan): what notebooks 02-04 would train, and at what cost; --plan stops there.
plan_args=(--profile "$profile" --data "$data" --run-dir "$run_dir")
[[ -n "$data_path" ]] && plan_args+=(--data-path "$data_path")
[[ -n "$models" ]] && plan_args+=(--models "$models")
[[ -n "$folds" ]] && plan_args+=(--folds "$folds")
if $plan; then
    exec "$LUSV_PYTHON" -m lusv.cli plan "${plan_args[@]}"
fi
if [[ -n "$models$folds" ]]; then  # a subset: refused in one line before anything runs when it names no run
    "$LUSV_PYTHON" -m lusv.cli plan --check "${plan_args[@]}" || exit 2
fi
# One study per study folder: hold results/<run>/.study.lock for the whole run (a flock on this
# shell's descriptor 9, lusv.infra.runlock); a second run_all.sh into the same folder stops here
# with one line naming the first. Notebook 01's prepare sees LUSV_STUDY_LOCK and goes ahead.
mkdir -p "$run_dir"
exec 9>>"$run_dir/.study.lock"
"$LUSV_PYTHON" -m lusv.infra.runlock "$run_dir" --fd 9 --pid $$ --command "$invoked" || exit 3
LUSV_STUDY_LOCK="$(cd "$run_dir" && pwd -P)/.study.lock"
export LUSV_STUDY_LOCK
mkdir -p "$run_dir/notebooks"
export PYTHONUNBUFFERED=1
unset MPLBACKEND  # the kernels must use the inline backend, or plt.show() puts no figure in the notebook

execute() {  # execute NOTEBOOK [papermill -p NAME VALUE ...]
    local name=$1; shift
    local number=${name%%_*}
    if (( 10#$number < from )); then echo "== $name: skipped (--from $from)"; return; fi
    echo "== $name  ($(date +%H:%M:%S))"
    "$LUSV_PYTHON" -m papermill "notebooks/$name.ipynb" "$run_dir/notebooks/$name.ipynb" \
        -k python3 --log-output --no-progress-bar -p run_dir "$run_dir" "$@"
}

start=$(date +%s)
data_params=(-p data "$data" -p dayfirst "$dayfirst" -p temporal_split "$temporal_split")
[[ -n "$data_path" ]] && data_params+=(-p data_path "$data_path")
execute 01_preprocess -p profile "$profile" "${data_params[@]}"
grid_params=(-p executor "$executor")
[[ -n "$ray_address" ]] && grid_params+=(-p ray_address "$ray_address")
subset_params=()  # as raw text: the notebooks read "luvnet,usvn" and "0,1" (lusv.models.roster.as_list)
[[ -n "$models" ]] && subset_params+=(-r models "$models")
[[ -n "$folds" ]] && subset_params+=(-r folds "$folds")
execute 02_train_folds "${grid_params[@]}" "${subset_params[@]}"
execute 03_baselines "${grid_params[@]}" "${subset_params[@]}"
execute 04_ablation_temporal "${grid_params[@]}" "${subset_params[@]}"
execute 05_attention
execute 06_results
if [[ "$data" == pocus ]]; then
    echo "== 07_external_pocus: skipped — this study is itself on the POCUS clips (notebooks 01-06)"
elif [[ -d "$pocus" ]]; then
    external_subset=()
    [[ -n "$models" ]] && external_subset+=(-r subset "$models")
    [[ -n "$folds" ]] && external_subset+=(-r folds "$folds")
    execute 07_external_pocus -p study_dir "$run_dir" -p data_path "$pocus" -p run_dir "$run_dir/external_pocus" \
        "${external_subset[@]}"
else
    echo "== 07_external_pocus: skipped — no POCUS folder at $pocus (pass --pocus PATH; see data/README.md)"
fi
# The study's LUV-Net taken out as one folder (lusv export) and used on the videos no fold model trained on.
if "$LUSV_PYTHON" -c 'import sys; from lusv.predict.use import set_apart_videos; sys.exit(0 if set_apart_videos(sys.argv[1]) else 1)' "$run_dir"; then
    execute 09_use_the_model
else
    echo "== 09_use_the_model: skipped — the study has no temporally separated or held-out test videos to predict"
fi
# Every executed notebook as standalone HTML and an index page: the study readable in any browser.
"$LUSV_PYTHON" -m lusv.report.html "$run_dir"
# What made these numbers (command, date, duration, machine): lusv publish quotes it beside them.
"$LUSV_PYTHON" -m lusv.report.run_record "$run_dir" --command "bash $invoked" --seconds $(( $(date +%s) - start ))
echo "study finished in $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s: $run_dir"
echo "results: $run_dir/index.html (open in a browser)  tables: $run_dir/tables  figures: $run_dir/figures  logs: $run_dir/logs"
