"""``lusv predict`` and ``lusv export`` on the command line (``lusv.cli`` adds them with ``add_predict_and_export``).

    lusv export  --study results/pretrained-pocus [--key luvnet] [--out DIR]
    lusv predict INPUT... --model EXPORT [--out predictions.csv] [--per-window] [--plots DIR]
    lusv predict clip.mp4 --checkpoint best.pt [--plot PATH]        # the one-clip form of earlier versions

``from_here`` is the command line's way of making a typed path absolute (``lusv.cli._from_here``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from lusv.errors import LusvError

FromHere = Callable[[str | None], str | None]


def add_predict_and_export(commands, from_here: FromHere) -> None:
    """The ``predict`` and ``export`` subcommands of ``lusv``."""
    predict = commands.add_parser(
        "predict", help="pattern probabilities of videos, folders or a labels CSV with an exported model (or a best.pt)")
    predict.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="video files (mp4, avi, mov, mpeg, gif, DICOM, ...), folders (searched recursively) or a "
                              "labels CSV with a path column")
    predict.add_argument("--model", default=None, help="an export folder (lusv export) or a run's best.pt / run folder")
    predict.add_argument("--checkpoint", default=None,
                         help="a run's best.pt (or its folder): with one video file, prints its probabilities and "
                              "writes its attention plot (the one-clip form)")
    predict.add_argument("--out", default=None, help="predictions CSV, one row per video (default: ./predictions.csv); "
                                                     "running the same command again continues it")
    predict.add_argument("--per-window", action="store_true", help="also write every clip/window's row to <out>.windows.csv")
    predict.add_argument("--plots", default=None, help="folder for each video's attention figure")
    predict.add_argument("--plot", default=None, help="one-clip form: attention plot path (default: "
                                                      "./<clip file name>.attention.png in the current folder)")
    predict.add_argument("--batch-size", type=int, default=16, help="clips scored together (default: 16)")
    predict.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 or auto")
    predict.set_defaults(handler=lambda args: predict_command(args, from_here))

    export = commands.add_parser("export", help="one model of a finished study as a self-contained folder "
                                                "(safetensors weights, config, thresholds, model card, manifest)")
    export.add_argument("--study", required=True, help="a finished study folder (prepare/, runs/, oof/)")
    export.add_argument("--key", default="luvnet", help="the model configuration to export (default: luvnet)")
    export.add_argument("--out", default=None, help="export folder (default: <study>/export/<key>)")
    export.set_defaults(handler=lambda args: export_command(args, from_here))


def predict_command(args: argparse.Namespace, from_here: FromHere) -> int:
    if args.model is None and args.checkpoint is None:
        raise LusvError("give the model: --model EXPORT_FOLDER (lusv export) or a run's best.pt")
    single = (args.model is None and len(args.inputs) == 1 and args.out is None and not args.per_window
              and args.plots is None and not Path(args.inputs[0]).is_dir()
              and Path(args.inputs[0]).suffix.lower() != ".csv")
    if single:  # the one-clip form: probabilities printed, the attention plot written
        return _predict_one_clip(args)
    return _predict_batch(args, from_here)


def export_command(args: argparse.Namespace, from_here: FromHere) -> int:
    from lusv.predict.export import export_study

    out = export_study(from_here(args.study), key=args.key, out=from_here(args.out))
    print(f"exported {args.key}: {out}")
    return 0


def _predict_one_clip(args: argparse.Namespace) -> int:
    from lusv.predict.video import predict_clip

    result = predict_clip(args.inputs[0], args.checkpoint, plot_path=args.plot)
    for pattern, probability in result.probabilities.items():
        print(f"{pattern:18s} {probability:.3f}")
    if result.window_probabilities is not None:
        print(f"(the mean over the video's {len(result.window_probabilities)} windows; "
              f"the plot shows window {result.plotted_window})")
    if result.plot_error:
        print(f"lusv predict: error: {result.plot_error}", file=sys.stderr)
        return 1
    print(f"attention plot: {result.plot_path}" if result.plot_path is not None else result.plot_note)
    return 0


def _predict_batch(args: argparse.Namespace, from_here: FromHere) -> int:
    from lusv.infra.devices import resolve_device
    from lusv.predict.batch import predict_videos
    from lusv.predict.exported import load_model

    device = resolve_device(args.device)
    model = load_model(from_here(args.model or args.checkpoint), device)
    result = predict_videos(args.inputs, model, Path(from_here(args.out or "predictions.csv")), per_window=args.per_window,
                            plots=from_here(args.plots), batch_size=args.batch_size, device=device)
    counts = result.counts
    print(f"{counts['predicted']} video(s) predicted, {counts['reused']} kept from an earlier run, "
          f"{counts['failed']} could not be read, {counts['skipped']} not videos: {result.out}")
    for row in result.table[result.table["status"] != "ok"].itertuples(index=False):
        print(f"  {row.status}: {row.clip_id}: {row.reason}")
    if model.thresholds is None:
        print("no decision thresholds (a single run's checkpoint): the call_<pattern> columns are empty")
    if result.windows_out is not None:
        print(f"window rows: {result.windows_out}")
    if result.plots:
        print(f"{len(result.plots)} attention figure(s) in {Path(result.plots[0]).parent}")
    return 0
