"""What every study notebook does first and last, so that its executed copy reads as a document.

``notebook_logging`` (first code cell): lusv's INFO log goes to ``<run_dir>/logs/<notebook>.log``
and only warnings and errors into the notebook; progress bars are off and training prints one
line per run (``LUSV_PROGRESS=summary``, ``lusv.infra.console``). ``conclusion`` (last cell): the
findings ``lusv.report.conclusions`` made from the notebook's tables, shown as Markdown and saved to
``<run_dir>/conclusions/<notebook>.md`` for the HTML index (``lusv.report.html``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from lusv.infra.console import PROGRESS_ENV
from lusv.infra.io import atomic_path
from lusv.paths import in_repository

NOTEBOOK_FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _FirstOfEachWarning(logging.Filter):
    """Lets through the first record of each message template (logger + format string): a
    warning repeated per fold and pattern shows once in the notebook, every time in the file."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class _NotebookFormatter(logging.Formatter):
    def __init__(self, log_path: Path):
        super().__init__(NOTEBOOK_FORMAT)
        self.note = f" [shown once; every occurrence in {log_path.name}]"

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record) + self.note


def notebook_logging(run_dir: str | os.PathLike, name: str, show_level: int = logging.WARNING) -> Path:
    """Set up logging and progress for study notebook ``name``; returns the log file's path.

    The root logger's handlers are replaced (a rerun of the cell does not add duplicates):
    INFO and above are appended to ``<run_dir>/logs/<name>.log``, ``show_level`` and above
    shown in the notebook, each message template once (a warning repeated per fold and
    pattern would bury the results). Python warnings go through logging (once into each). Pandas shows
    three decimals.
    """
    import pandas as pd

    log_path = in_repository(run_dir) / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    shown = logging.StreamHandler(sys.stderr)
    shown.setLevel(show_level)
    shown.setFormatter(_NotebookFormatter(log_path))
    shown.addFilter(_FirstOfEachWarning())
    kept = logging.FileHandler(log_path, encoding="utf-8")
    kept.setLevel(logging.INFO)
    kept.setFormatter(logging.Formatter(FILE_FORMAT))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.addHandler(shown)
    root.addHandler(kept)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    os.environ[PROGRESS_ENV] = "summary"
    pd.set_option("display.precision", 3)
    logging.getLogger("lusv.report.notebook").info("notebook %s, run folder %s", name, in_repository(run_dir))
    return log_path


def conclusion(text: str, run_dir: str | os.PathLike, name: str):
    """Show a generated conclusion as Markdown and save it as ``conclusions/<name>.md``."""
    from IPython.display import Markdown

    path = in_repository(run_dir) / "conclusions" / f"{name}.md"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")
    return Markdown("**What this run shows** (generated from the tables above):\n\n" + text)
