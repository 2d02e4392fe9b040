"""How lusv shows its progress while it works: live bars on a terminal, quiet in notebooks.

``LUSV_PROGRESS=summary`` (what ``lusv.report.notebook.notebook_logging`` sets for the study notebooks)
turns every progress bar off and makes training print one line per run instead of one per
epoch, so executed notebooks stay readable. An environment variable rather than a flag, so
that runs in worker processes (the Ray executor, loader workers) follow the notebook's choice.
Unset (the command line): live bars on a terminal, one line per epoch elsewhere.
"""

from __future__ import annotations

import os
import sys

PROGRESS_ENV = "LUSV_PROGRESS"
MODES = ("auto", "summary")


def progress_mode() -> str:
    """``summary`` when LUSV_PROGRESS says so, else ``auto``."""
    return "summary" if os.environ.get(PROGRESS_ENV, "").strip().lower() == "summary" else "auto"


def on_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bars_enabled(progress: bool = True) -> bool:
    """Whether a tqdm bar asked for (``progress``) is drawn: never in summary mode."""
    return bool(progress) and progress_mode() != "summary"
