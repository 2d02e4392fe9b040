"""Files in and out: atomic writes, safe checkpoint loading, tables with string ids, and
"reuse this file if the parameters recorded with it still match".

Atomic writes: a crash leaves either the old file or the new one, never half of one. Every
checkpoint, cache entry, split file and result goes through these helpers: the content is
written to a temporary file in the same directory, flushed to disk and then renamed over the
target (``os.replace`` is atomic on POSIX and Windows).

Reuse: a derived file (a split, the generated synthetic dataset, a clip-cache entry, a run to
resume) is kept only while the parameters recorded with it equal the ones asked for now.
``write_record`` saves such parameters, ``recorded_mismatch`` compares them and lists the
differences (``Difference``: ``key: old -> new``) for the message that explains a rebuild.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple


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


ID_COLUMNS = ("clip_id", "patient_id")


def read_table(path: str | os.PathLike, dtype: Mapping[str, Any] | None = None, **read_csv_kwargs):
    """Read a CSV with pandas, keeping ``clip_id`` and ``patient_id`` as strings ("007" stays "007").

    ``dtype`` adds or overrides column types; the id columns need not exist in the file.
    """
    import pandas as pd

    return pd.read_csv(path, dtype={**{column: str for column in ID_COLUMNS}, **dict(dtype or {})}, **read_csv_kwargs)


class Difference(NamedTuple):
    """One parameter whose recorded value differs from the expected one (None: not recorded)."""

    key: str
    recorded: Any
    expected: Any

    def __str__(self) -> str:
        return f"{self.key}: {self.recorded!r} -> {self.expected!r}"


def read_record(path: str | os.PathLike) -> dict:
    """The parameters recorded in the JSON file ``path``; OSError/ValueError when it cannot be read."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds {type(record).__name__}, not a JSON object of parameters")
    return record


def write_record(path: str | os.PathLike, params: Mapping[str, Any]) -> Path:
    """Record ``params`` as JSON at ``path`` (atomically), for a later ``recorded_mismatch``."""
    return write_json(path, dict(params))


def recorded_mismatch(
    record: str | os.PathLike | Mapping[str, Any] | None,
    expected: Mapping[str, Any],
    ignore: Iterable[str] = (),
) -> list[Difference] | None:
    """Compare recorded parameters with the ones expected now.

    ``record`` is a JSON file written by ``write_record`` or an already loaded mapping (e.g. the
    parameters saved in a checkpoint). Returns None when there is no readable record, ``[]`` when
    every key of ``expected`` (except those in ``ignore``) has the recorded value, else the
    differences sorted by key; ``", ".join(map(str, ...))`` words them for a message. A key
    missing from the record counts as recorded None; keys only in the record are not compared.
    """
    if record is None:
        return None
    if not isinstance(record, Mapping):
        try:
            record = read_record(record)
        except (OSError, ValueError):
            return None
    skipped = set(ignore)
    return [
        Difference(key, record.get(key), expected[key])
        for key in sorted(expected)
        if key not in skipped and record.get(key) != expected[key]
    ]


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
