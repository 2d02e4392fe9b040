"""How a run shows its progress: live bars on a terminal, one printed line per epoch elsewhere.

tqdm text bars are readable in a terminal; logs, papermill-rendered notebooks and CI get one
line per epoch instead (``progress_is_live``). Only the main process of a torchrun launch shows
anything.
"""

from __future__ import annotations

import sys

from tqdm import tqdm  # text bars: readable in JupyterLab and in papermill-rendered notebooks alike


def progress_is_live() -> bool:
    """Live tqdm bars only on a terminal; logs, papermill and CI get one line per epoch."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def batch_bar(total: int, epoch: int, live: bool) -> tqdm:
    """The bar of one epoch's training batches (``epoch`` = finished epochs), gone when it ends."""
    return tqdm(total=total, desc=f"epoch {epoch + 1}", leave=False, disable=not live, unit="batch")


class EpochProgress:
    """The run's progress over epochs: a bar with the latest losses when live, else a printed line."""

    def __init__(self, name: str, epochs: int, done: int, live: bool, show: bool):
        self.name, self.epochs, self.live, self.show = name, epochs, live, show
        self.bar = tqdm(total=epochs, initial=done, desc=name, unit="epoch", disable=not live)

    def epoch_done(self, epoch: int, train_loss: float, val_loss: float, auc: float, seconds: float, improved: bool) -> None:
        summary = f"train_loss {train_loss:.4f}  val_loss {val_loss:.4f}  val_auc {auc:.3f}"
        if self.live:
            self.bar.set_postfix_str(summary + ("  *" if improved else ""))
            self.bar.update(1)
        elif self.show:
            print(f"{self.name} epoch {epoch}/{self.epochs}  {summary}  {seconds:.1f}s" + ("  * best" if improved else ""), flush=True)

    def close(self) -> None:
        self.bar.close()
