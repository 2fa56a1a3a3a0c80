"""Where the project's data folders (``target/``, ``schedules/``) are."""

from __future__ import annotations

import sys
from pathlib import Path


def data_dir(name: str) -> Path:
    """A data folder: next to the package in a source or editable install, under
    ``sys.prefix/share/tvm-sparse`` when installed from a wheel."""
    source = Path(__file__).resolve().parents[1] / name
    return source if source.is_dir() else Path(sys.prefix) / "share" / "tvm-sparse" / name
