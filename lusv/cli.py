"""The ``lusv`` command: the same steps the notebooks run, from a shell.

    lusv prepare  --run-dir results/quick-synthetic --profile quick --data synthetic
    lusv train    --profile quick --labels ... --splits ... --fold 0 --model luvnet
    lusv evaluate results/quick-synthetic/oof/luvnet.csv
    lusv predict  clip.mp4 --checkpoint results/.../best.pt
    lusv export   --study results/pretrained-pocus --out exports/luvnet
    lusv predict  my_videos/ --model exports/luvnet --out predictions.csv
    lusv report   --run-dir results/quick-synthetic
    lusv plan     --profile paper                    (what a study would train and cost; trains nothing)
    lusv external --study results/pretrained-pocus --data folder --data-path other/labels.csv
    lusv claims   results/quick-synthetic results/pretrained-pocus
    lusv publish  results/quick-synthetic results/pretrained-pocus --readme README.md

``lusv train``'s flags are generated from ``lusv.config.RunParams``: one flag per field, with
the field's help text, so the command line and ``config.json`` never drift apart; the fields
``RunParams`` marks as paths (and a weights file) are made absolute against the current folder.
Deliberate errors (``LusvError``) end in a one-line message and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from pathlib import Path

from lusv.config import DEFAULT_PROFILE
from lusv.errors import IngestError, LusvError

log = logging.getLogger("lusv")


def _flag_type(annotation):
    """The argparse type of a RunParams field: the X of Optional[X], bool parsed from text."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args else annotation
    if base is bool:
        return _parse_bool
    return base


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _add_run_param_flags(parser: argparse.ArgumentParser) -> None:
    from lusv.config import DEFAULT_PROFILE, PROFILES, RunParams

    for field in dataclasses.fields(RunParams):
        if field.name == "profile":  # the subcommand's own --profile: the profile the flags start from
            continue
        is_bool = _flag_type(field.type) is _parse_bool
        values = {name: getattr(profile, field.name) for name, profile in PROFILES.items()}
        if len(set(map(repr, values.values()))) == 1:
            shown = f"default: {values[DEFAULT_PROFILE]!r}"
        else:
            shown = ", ".join(f"{name}: {value!r}" for name, value in values.items())
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=_flag_type(field.type),
            default=None,
            # A bare boolean flag means true: `--resume` as well as `--resume true`.
            **({"nargs": "?", "const": True} if is_bool else {}),
            metavar="BOOL" if is_bool else field.name.upper(),
            # argparse %-formats help texts: a literal "%" (e.g. "(f+1) % num_folds") must be doubled.
            help=f"{field.metadata['help']} ({shown})".replace("%", "%%"),
        )


def _announce_profile(profile: str) -> None:
    from lusv.config import DEFAULT_PROFILE

    why = " (the default; --profile paper for the published protocol)" if profile == DEFAULT_PROFILE else ""
    # On stderr with the other progress notes: stdout holds the command's answer (tables, the run folder).
    print(f"profile: {profile}{why}", file=sys.stderr, flush=True)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from lusv import study

    _announce_profile(args.profile)
    try:
        prepared = study.prepare(
            _from_here(args.run_dir),
            profile=args.profile,
            data=args.data,
            data_path=_from_here(args.data_path),
            num_folds=args.num_folds,
            seed=args.seed,
            cache_root=_from_here(args.cache_dir),
            dayfirst=args.dayfirst,
            temporal_split=args.temporal_split,
            held_out_fraction=args.held_out_fraction,
            clip_policy=args.clip_policy,
            window_overlap=args.window_overlap,
            target_fps=args.target_fps,
        )
    except IngestError as exc:
        # Nothing usable: show why clip by clip before the one-line error, so the user can fix the data.
        print(exc.report.summary().to_string(index=False))
        if exc.report_path is not None:
            print(f"ingest report (one row per clip): {exc.report_path}")
        raise
    print(study.ingest_summary(prepared).to_string(index=False))
    print(f"ingest report (one row per clip): {prepared.prepare_dir / 'ingest_report.csv'}")
    print(f"prepared {prepared.dataset}: {prepared.prepare_dir}")
    return 0


def _from_here(path: str | None) -> str | None:
    """A path typed on the command line, made absolute against the current directory.

    The notebooks resolve relative run folders against the repository root; a shell user means
    the folder they are in. Absolute paths also keep prepared.json and config.json valid when
    a later step runs from elsewhere.
    """
    return None if path is None else str(Path(path).expanduser().resolve())


def _cmd_train(args: argparse.Namespace) -> int:
    from lusv.config import field_names, params_for, path_fields
    from lusv.data.prepared import Prepared
    from lusv.models.encoders import WEIGHT_NAMES
    from lusv.train import run

    overrides = {name: getattr(args, name) for name in field_names() if getattr(args, name) is not None}
    overrides.pop("profile", None)
    if args.study:  # the study's data and settings; the flags given change the rest
        prepared = Prepared.load(_from_here(args.study))
        profile = prepared.resolve_profile(args.profile)
        fold = overrides.get("fold", 0)
        overrides = {"out_dir": str(prepared.run_dir / "runs"), "run_name": f"{overrides.get('model', 'luvnet')}-fold{fold}",
                     **prepared.training_inputs(), **overrides}
    else:
        profile = args.profile or DEFAULT_PROFILE
    _announce_profile(profile)
    params = params_for(profile, **overrides)
    paths = {name: _from_here(getattr(params, name)) for name in path_fields() if getattr(params, name)}
    if params.weights not in WEIGHT_NAMES:  # a weights file, not one of the words imagenet/random
        paths["weights"] = _from_here(params.weights)
    run_dir = run(dataclasses.replace(params, **paths))
    print(run_dir)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from lusv.stats.metrics import summarize_predictions
    from lusv.report.tables import read_predictions

    for path in args.predictions:
        print(f"== {path}")
        summary = summarize_predictions(read_predictions(path), ci=args.ci, n_boot=args.n_boot)
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from lusv import study

    written = study.write_report(args.run_dir, reference=args.reference, n_boot=args.n_boot)
    for path in written:
        print(path)
    return 0


def _cmd_external(args: argparse.Namespace) -> int:
    from lusv.evaluation.external import external_validation

    results = external_validation(
        _from_here(args.study), data=args.data, data_path=_from_here(args.data_path), keys=args.models,
        out_dir=_from_here(args.out), cache_root=_from_here(args.cache_dir), dayfirst=args.dayfirst,
    )  # fmt: skip
    print(results.ingest_summary.to_string(index=False))
    print(results.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"external validation: {results.out_dir}")
    return 0



def _cmd_plan(args: argparse.Namespace) -> int:
    from lusv import study
    from lusv.data.prepared import Prepared
    from lusv.models import roster

    run_dir = _from_here(args.run_dir)
    prepared = Prepared.recorded(run_dir) if run_dir else None
    profile = prepared.resolve_profile(args.profile) if prepared is not None else args.profile or DEFAULT_PROFILE
    models = roster.check_models(profile, args.models)
    if models is not None and roster.REFERENCE not in models and not (run_dir and study.trained_runs(run_dir, roster.REFERENCE)):
        raise LusvError(f"--models leaves out {roster.REFERENCE}, which every table compares against, and "
                        f"{run_dir or 'the study'} has no finished run of it: add {roster.REFERENCE}")
    if args.check:  # what run_all.sh asks before training a subset: the subset is valid (errors above)
        num_folds = prepared.num_folds if prepared is not None else 5
        runs = sum(len(c) for c in roster.study_configurations(profile, models).values())
        folds = len(roster.check_folds(args.folds, num_folds) or range(num_folds))
        print(f"plan: {runs * folds} training runs ({runs} configurations x {folds} folds); "
              f"lusv plan --profile {profile} shows their cost")
        return 0
    from lusv.train import study_plan

    plan = study_plan(profile, data=args.data, data_path=_from_here(args.data_path), run_dir=run_dir, models=models,
                      folds=args.folds, device=args.device, measure=not args.estimate_only)
    print(plan.text())
    return 0


def _add_plan_command(commands) -> None:
    from lusv.config import PROFILES
    from lusv.data.sources import source_names

    plan = commands.add_parser("plan", help="every training run a study would make, notebook by notebook, with its "
                                            "cost (parameters, GMAC, s per step, memory, device-hours, disk); trains nothing")
    plan.add_argument("--profile", default=None, choices=sorted(PROFILES),
                      help=f"default: the study's (--run-dir), else {DEFAULT_PROFILE}")
    plan.add_argument("--data", default="synthetic", choices=source_names(), help="data source (lusv.data.sources)")
    plan.add_argument("--data-path", default=None, help="POCUS folder or your labels CSV")
    plan.add_argument("--run-dir", default=None, help="the study folder: its clip counts once notebook 01 has prepared it")
    plan.add_argument("--models", default=None, help="a subset of configuration keys, comma-separated (run_all.sh --models)")
    plan.add_argument("--folds", default=None, help="a subset of folds, comma-separated, e.g. 0 (run_all.sh --folds)")
    plan.add_argument("--device", default="auto", help="where to measure a few steps: auto (the GPU if any), cpu, cuda")
    plan.add_argument("--estimate-only", action="store_true", help="measure nothing: estimate every figure")
    plan.add_argument("--check", action="store_true", help="only check --models and --folds and count the runs")
    plan.set_defaults(handler=_cmd_plan)


def _add_test_set_arguments(prepare: argparse.ArgumentParser) -> None:
    prepare.add_argument("--no-temporal-split", dest="temporal_split", action="store_false",
                         help="no temporally separated test set even when the clips have dates: every clip goes into the folds")
    prepare.add_argument("--held-out-fraction", type=float, default=None,
                         help="share of the patients set apart as the held-out test set before the folds (the paper: "
                              "0.1; 0 = none; default: the profile's, lusv.config.HELD_OUT_BY_PROFILE)")


def _add_clip_policy_arguments(prepare: argparse.ArgumentParser) -> None:
    from lusv.config import CLIP_POLICIES

    prepare.add_argument("--clip-policy", default=None, choices=CLIP_POLICIES,
                         help="windows (the paper: every video cut into windows of T frames) or whole (one clip of T "
                         "frames per video); default: the profile's")
    prepare.add_argument("--window-overlap", type=int, default=None, help="frames shared by consecutive windows "
                         "(default: the profile's; paper 6)")
    prepare.add_argument("--target-fps", type=float, default=None,
                         help="windows: resample every video to this frame rate first (default: its own frames)")


def _add_train_command(commands) -> None:
    from lusv.config import PROFILES

    train = commands.add_parser("train", help="train one model on one fold (flags = lusv.config.RunParams)")
    train.add_argument("--study", default=None,
                       help="a prepared study folder: its data and settings (profile, frames, size, clip policy, "
                            "folds), the run written to <study>/runs/<model>-fold<f>")
    train.add_argument("--profile", default=None, choices=sorted(PROFILES),
                       help=f"defaults to start from (default: the study's, else {DEFAULT_PROFILE}; paper = the "
                            "published protocol, for a GPU)")
    _add_run_param_flags(train)
    train.set_defaults(handler=_cmd_train)








def build_parser() -> argparse.ArgumentParser:
    from lusv.config import DEFAULT_PROFILE, PROFILES
    from lusv.data.sources import source_names

    parser = argparse.ArgumentParser(prog="lusv", description="LUV-Net lung ultrasound video study")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="read a dataset, fill the clip cache, make the splits")
    prepare.add_argument("--run-dir", required=True, help="study folder, e.g. results/quick-synthetic")
    prepare.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES))
    prepare.add_argument("--data", default="synthetic", choices=source_names(), help="data source (lusv.data.sources)")
    prepare.add_argument("--data-path", default=None, help="POCUS folder or your labels CSV")
    prepare.add_argument("--num-folds", type=int, default=5)
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--cache-dir", default=None, help="clip cache root (default: data/cache/<dataset>)")
    prepare.add_argument("--dayfirst", action="store_true",
                         help="acquired_on holds day-first dates (20.04.2020) instead of YYYY-MM-DD")
    _add_test_set_arguments(prepare)
    _add_clip_policy_arguments(prepare)
    prepare.set_defaults(handler=_cmd_prepare)

    _add_train_command(commands)

    evaluate = commands.add_parser("evaluate", help="per-pattern AUCs with 95%% CIs of predictions CSVs")
    evaluate.add_argument("predictions", nargs="+", help="predictions CSV(s) (p_<pattern> and label columns)")
    evaluate.add_argument("--ci", default="delong", choices=["delong", "bootstrap"])
    evaluate.add_argument("--n-boot", type=int, default=1000)
    evaluate.set_defaults(handler=_cmd_evaluate)

    from lusv.predict.command import add_predict_and_export

    add_predict_and_export(commands, _from_here)

    report = commands.add_parser("report", help="results tables and ROC figure of a study run")
    report.add_argument("--run-dir", required=True)
    report.add_argument("--reference", default="luvnet", help="model the DeLong tests compare against")
    report.add_argument("--n-boot", type=int, default=1000)
    report.set_defaults(handler=_cmd_report)

    _add_plan_command(commands)

    external = commands.add_parser(
        "external", help="predict another labelled dataset with a study's fold models (AUCs with CIs, carried-over thresholds)")
    external.add_argument("--study", required=True, help="a finished study folder (prepare/, runs/, oof/)")
    external.add_argument("--data", default="folder", choices=source_names(), help="data source of the other dataset")
    external.add_argument("--data-path", default=None, help="its labels CSV (folder) or folder (pocus)")
    external.add_argument("--models", nargs="+", default=None, help="model keys (default: every model with all its folds)")
    external.add_argument("--out", default=None, help="output folder (default: <study>/external/<dataset>)")
    external.add_argument("--cache-dir", default=None, help="clip cache root (default: data/cache/<dataset>)")
    external.add_argument("--dayfirst", action="store_true", help="acquired_on holds day-first dates")
    external.set_defaults(handler=_cmd_external)
    from lusv.evaluation.command import add_claims_and_publish

    add_claims_and_publish(commands, _from_here)
    return parser


# One-shot commands whose output is their answer: progress notes (model built, weights used)
# would only bury it, so they log warnings and errors unless -v is given.
QUIET_COMMANDS = frozenset({"predict", "evaluate", "export", "claims", "plan", "publish"})


def _log_level(args: argparse.Namespace) -> int:
    if args.verbose:
        return logging.DEBUG
    return logging.WARNING if args.command in QUIET_COMMANDS else logging.INFO


def main(argv: list[str] | None = None) -> int:
    """Run the ``lusv`` command; returns the exit status (0 ok, 1 file system error, 2 lusv error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=_log_level(args), format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except LusvError as exc:
        print(f"lusv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A missing input or an unwritable output is the user's to fix, not a bug: no traceback.
        print(f"lusv {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lusv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
