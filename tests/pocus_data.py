"""The real POCUS development portion: where it sits and the one condition under which tests use it.

Both the POCUS source tests and the external-POCUS notebook test skip on ``requires_pocus``, so a
partial copy (a folder without its metadata table or its videos) skips them all alike instead of
failing one of them.
"""

from pathlib import Path

import pytest

POCUS_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "pocus"


def pocus_available(root: Path = POCUS_ROOT) -> bool:
    return (root / "dataset_metadata.csv").is_file() and (root / "pocus_videos").is_dir()


requires_pocus = pytest.mark.skipif(
    not pocus_available(), reason=f"POCUS development portion (dataset_metadata.csv and pocus_videos/) not at {POCUS_ROOT}"
)
