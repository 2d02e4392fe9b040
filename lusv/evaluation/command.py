"""``lusv claims`` and ``lusv publish`` on the command line (``lusv.cli`` adds them with
``add_claims_and_publish``).

    lusv claims  RUN [RUN ...] [--out DIR] [--detail]        # the verdict on each claim, one column per run
    lusv publish RUN [RUN ...] [--page PAGE] [--readme README.md]   # the docs' numbers, with their provenance

``from_here`` is the command line's way of making a typed path absolute (``lusv.cli._from_here``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

FromHere = Callable[[str | None], str | None]


def add_claims_and_publish(commands, from_here: FromHere) -> None:
    """The ``claims`` and ``publish`` subcommands of ``lusv``."""
    _add_claims_command(commands, from_here)
    _add_publish_command(commands, from_here)


def _cmd_claims(args: argparse.Namespace, from_here: FromHere) -> int:
    from lusv.evaluation.claims import claims_markdown, claims_tables, write_claims

    runs = [from_here(run) for run in args.runs]
    tables = claims_tables(runs, n_boot=args.n_boot)
    out = from_here(args.out) if args.out else (str(Path(runs[0]) / "tables") if len(runs) == 1 else str(Path.cwd()))
    written = write_claims(tables, out)
    print(claims_markdown(tables, detail=args.detail), end="")  # stdout: the Markdown alone, ready to paste
    print(f"claims: {', '.join(str(path) for path in written)}", file=sys.stderr)
    return 0


def _add_claims_command(commands, from_here: FromHere) -> None:
    claims = commands.add_parser(
        "claims", help="the verdict on every claim of the paper, one column per run (printed as Markdown, saved as CSV + .md)")
    claims.add_argument("runs", nargs="+", help="run folders: studies (results/quick-synthetic) or external validations "
                                                 "(<study>/external/<dataset>)")
    claims.add_argument("--out", default=None, help="folder for claims.csv, claims_detail.csv and claims.md (default: "
                                                    "<run>/tables for one run, the current folder for several)")
    claims.add_argument("--n-boot", type=int, default=1000, help="paired patient-bootstrap replicates")
    claims.add_argument("--detail", action="store_true", help="also print each comparison's numbers (claims.md "
                                                               "always has them)")
    claims.set_defaults(handler=lambda args: _cmd_claims(args, from_here))


def _cmd_publish(args: argparse.Namespace, from_here: FromHere) -> int:
    from lusv.evaluation.published import publish

    written = publish([from_here(run) for run in args.runs], from_here(args.page),
                      from_here(args.readme) if args.readme else None, n_boot=args.n_boot,
                      command=" ".join(["lusv publish", *args.runs] + (["--readme", args.readme] if args.readme else [])))
    print(f"publish: {', '.join(str(path) for path in written)}", file=sys.stderr)
    return 0


def _add_publish_command(commands, from_here: FromHere) -> None:
    publish = commands.add_parser(
        "publish", help="write the runs' numbers for the docs (AUC tables, claims, with each run's command and date) "
                        "and fill the README's generated block")
    publish.add_argument("runs", nargs="+", help="finished study folders, e.g. results/quick-synthetic")
    publish.add_argument("--page", default="docs/results-generated.md", help="the Markdown page to write")
    publish.add_argument("--readme", default=None, help="a README with the lusv publish markers to fill (e.g. README.md)")
    publish.add_argument("--n-boot", type=int, default=1000, help="paired patient-bootstrap replicates of the claims")
    publish.set_defaults(handler=lambda args: _cmd_publish(args, from_here))
