"""Files in and out: atomic writes, checked checkpoint loads, one process per run folder, tables
with string ids, and "reuse this file if the parameters recorded with it still match".

Atomic writes: every checkpoint, cache entry, split file and result goes through these helpers:
the content is written to a temporary file ``.<name>.<random>.tmp`` in the same directory,
flushed to disk and then renamed over the target (``os.replace`` is atomic on POSIX and
Windows), so a crash leaves either the old file or the new one, never half of one. The writer
holds an exclusive ``flock`` on its temporary file while it writes, so a temporary file nobody
holds is the leftover of a killed writer: the next write of the same target removes it, and
``remove_stale_temp_files`` clears a whole folder (training calls it at the start of a run). A
write that fails because the disk is full raises one-line ``DiskFullError`` and leaves the
previous file as it was.

``torch_load`` verifies the CRC-32 of every record of a checkpoint archive before unpickling
(one extra read of the file: about a second per GB) and refuses tensors holding NaN or
infinity. (A run folder's lock is ``lusv.infra.runlock``.)

Reuse: a derived file (a split, the generated synthetic dataset, a clip-cache entry, a run to
resume) is kept only while the parameters recorded with it equal the ones asked for now.
``write_record`` saves such parameters, ``recorded_mismatch`` compares them and lists the
differences (``Difference``: ``key: old -> new``) for the message that explains a rebuild.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

try:  # POSIX; where it is missing (Windows) locks and temp-file ownership are not checked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

from lusv.errors import CheckpointError, DiskFullError
from lusv.infra.diskfull import free_space, is_disk_full, release_frames


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
    remove_stale_temp_files(target.parent, target.name)
    fd, tmp = _held_temp_file(target)
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, target)
        except (OSError, RuntimeError) as exc:
            if not is_disk_full(exc):
                raise
            release_frames(exc)
            tmp.unlink(missing_ok=True)  # its space back before measuring what is free
            os.close(fd)
            fd = -1
            kept = f"the previous {target.name} is unchanged" if target.exists() else f"no {target.name} was written"
            raise DiskFullError(
                f"cannot write {target.name} in {target.parent}: no space left on the device "
                f"({free_space(target.parent)} free); {kept}: free some space and run again"
            ) from None
        _fsync_directory(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
        if fd >= 0:
            os.close(fd)


# mkstemp's names: prefix + 8 characters of [a-z0-9_] + suffix.
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")


def _held_temp_file(target: Path) -> tuple[int, Path]:
    """A new temporary file next to ``target`` and an open descriptor holding its flock.

    A cleaner could lock and remove the file between its creation and our flock; then our
    lock sits on an unlinked file (no links left) and we simply make another.
    """
    while True:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        if fcntl is None:
            return fd, Path(name)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return fd, Path(name)
        os.close(fd)


def remove_stale_temp_files(folder: str | os.PathLike, target_name: str | None = None) -> list[Path]:
    """Remove the temporary files of killed writers in ``folder`` (only ``target_name``'s if given).

    A temporary file is stale when no process holds its flock: its writer died before the
    rename. Returns the removed paths. Without flock (Windows) nothing is removed.
    """
    if fcntl is None:
        return []
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if not match or (target_name is not None and match["target"] != target_name):
            continue
        try:
            with open(entry.path, "rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer lives
                os.unlink(entry.path)
        except OSError:
            continue  # held by a live writer, or already gone
        removed.append(Path(entry.path))
    return removed


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
    empty, truncated or not a checkpoint, fails a record's checksum, holds a tensor with NaN
    or infinity, or carries pickled objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: check the path or train first")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the save was interrupted or the copy failed")
    _verify_checksums(path)
    loaded = _unpickle_weights(path, map_location)
    where = _first_non_finite(loaded)
    if where is not None:
        raise CheckpointError(
            f"checkpoint {path} holds non-finite values (NaN or infinity) in {where or 'its tensor'}: "
            "the file is damaged or training diverged; use another copy or retrain"
        )
    return loaded


def _verify_checksums(path: Path) -> None:
    """Check every record of torch's zip archive against its stored CRC-32 (bit rot, bad copies).

    Files in torch's legacy (non-zip) format have no checksums; ``torch.load`` judges them.
    """
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            failed = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"checkpoint {path} is damaged: {_first_line(exc)}; use another copy or retrain") from None
    if failed is not None:
        raise CheckpointError(
            f"checkpoint {path} is damaged: its record {failed} fails its checksum (bit rot or an "
            "incomplete copy); use another copy or retrain"
        )


def _first_non_finite(obj: Any, where: str = "") -> str | None:
    """The dotted position of the first floating tensor holding NaN or infinity, else None."""
    import torch

    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            return where
        return None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = _first_non_finite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def _unpickle_weights(path: Path, map_location: Any) -> Any:
    import pickle

    import torch

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
