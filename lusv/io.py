"""Atomic file writes: a crash leaves either the old file or the new one, never half of one.

Every checkpoint, cache entry, split file and result goes through these helpers:
the content is written to a temporary file in the same directory, flushed to disk
and then renamed over the target (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _read_umask() -> int:
    # The only portable way to read the umask is to set it; done once at import, when no
    # other thread of ours can be creating files under the temporary 0 mask.
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; results must get the mode a plain open() would give them
# (0666 minus the umask) so that colleagues and other tools can read them.
_FILE_MODE = 0o666 & ~_read_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    The temporary file is fsynced and given the permissions of a normally created file
    before the rename; on any exception it is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
        _fsync_directory(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the data itself is already synced
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: str | os.PathLike, frame, **to_csv_kwargs) -> Path:
    """Write a pandas DataFrame atomically (``index=False`` unless told otherwise)."""
    to_csv_kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv_kwargs)
    return Path(path)


def save_npy(path: str | os.PathLike, array) -> Path:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    return Path(path)


def torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint without ever unpickling code (``weights_only=True``).

    Raises ``CheckpointError`` with a one-line message naming the file when it is missing,
    empty, truncated or not a checkpoint, or carries pickled objects other than tensors and
    plain containers.
    """
    import pickle

    import torch

    from lusv.errors import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: check the path or train first")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the save was interrupted or the copy failed")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _weights_only_refusal(str(exc))
        if refused is None:
            raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint: {_first_line(exc)}") from None
        raise CheckpointError(
            f"refusing to load {path}: it carries pickled code or objects that are not plain "
            f"tensors/containers, or is damaged (loaded with weights_only=True: {refused}). "
            "Re-save it as a state dict from a trusted source"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail anywhere inside the unpickler
        raise CheckpointError(
            f"checkpoint {path} is corrupt, truncated or not a checkpoint: {type(exc).__name__}: {_first_line(exc)}"
        ) from None


def _weights_only_refusal(message: str) -> str | None:
    """The reason torch's weights-only unpickler gave for refusing content, or None if it did not.

    torch's message runs over many lines and advises ``weights_only=False``, which is exactly
    what must not be done with an untrusted file; only its one-line reason is kept.
    """
    if not message.startswith("Weights only load failed"):
        return None  # plain unpickling failure: a damaged file, not a refusal
    marker = "WeightsUnpickler error:"
    body = message.split(marker, 1)[1] if marker in message else message.split("\n", 1)[-1]
    boilerplate = ("Weights only load failed", "Check the documentation", "(1)", "(2)", "Please file")
    reasons = [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith(boilerplate)]
    return reasons[0].split(". ")[0].rstrip(".")[:300] if reasons else "content refused"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else "no detail"
