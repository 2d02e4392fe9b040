"""How a run shows its progress: live bars on a terminal, one printed line per epoch elsewhere,
one line per run in the study notebooks.

tqdm text bars are readable in a terminal; logs and CI get one line per epoch instead
(``progress_is_live``). With ``LUSV_PROGRESS=summary`` (``lusv.infra.console``; the notebooks set it)
there are no bars and no epoch lines, only one summary line when the run's epochs end: the
per-epoch numbers stay in the run's log.csv (the learning-curve figure). Only the main process
of a torchrun launch shows anything.
"""

from __future__ import annotations

import math

from tqdm import tqdm  # text bars: readable in JupyterLab and in papermill-rendered notebooks alike

from lusv.infra.console import on_terminal, progress_mode


def progress_is_live() -> bool:
    """Live tqdm bars only on a terminal and outside summary mode."""
    return on_terminal() and progress_mode() != "summary"


def batch_bar(total: int, epoch: int, live: bool) -> tqdm:
    """The bar of one epoch's training batches (``epoch`` = finished epochs), gone when it ends."""
    return tqdm(total=total, desc=f"epoch {epoch + 1}", leave=False, disable=not live, unit="batch")


class EpochProgress:
    """The run's progress over epochs: a bar with the latest losses when live, else a printed
    line per epoch, or (summary mode) one line for the whole run at ``close``."""

    def __init__(self, name: str, epochs: int, done: int, live: bool, show: bool):
        self.name, self.epochs, self.live, self.show = name, epochs, live, show
        self.summary_only = progress_mode() == "summary"
        self.bar = tqdm(total=epochs, initial=done, desc=name, unit="epoch", disable=not live)
        self.first, self.last, self.seconds = done + 1, done, 0.0
        self.best: tuple[int, float, float] | None = None  # epoch, val_loss, val_auc of the best epoch seen

    def epoch_done(self, epoch: int, train_loss: float, val_loss: float, auc: float, seconds: float, improved: bool) -> None:
        summary = f"train_loss {train_loss:.4f}  val_loss {val_loss:.4f}  val_auc {auc:.3f}"
        self.last, self.seconds = epoch, self.seconds + seconds
        if improved:
            self.best = (epoch, val_loss, auc)
        if self.live:
            self.bar.set_postfix_str(summary + ("  *" if improved else ""))
            self.bar.update(1)
        elif self.show and not self.summary_only:
            print(f"{self.name} epoch {epoch}/{self.epochs}  {summary}  {seconds:.1f}s" + ("  * best" if improved else ""), flush=True)

    def close(self) -> None:
        self.bar.close()
        if self.summary_only and self.show and self.last >= self.first:
            print(self.summary_line(), flush=True)

    def summary_line(self) -> str:
        """'luvnet-fold0: epochs 1-12 in 3.4 s, best val_loss 0.6123 (val_auc 0.712) at epoch 9'."""
        line = f"{self.name}: epochs {self.first}-{self.last} of {self.epochs} in {self.seconds:.1f} s"
        if self.best is not None:
            epoch, loss, auc = self.best
            line += f", best val_loss {loss:.4f} (val_auc {auc:.3f}) at epoch {epoch}" if math.isfinite(auc) else \
                f", best val_loss {loss:.4f} at epoch {epoch}"
        return line
