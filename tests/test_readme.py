"""The README's code blocks run as written: each in a fresh process, in order, in one temporary directory.

A block is ```python (run by the venv's interpreter), ```sh (run by bash with the venv's ``bin`` first on
PATH) or ```text (not code); the directory has ``.venv`` linked to the running environment, as the project's root does. A block preceded by ``<!-- readme-test: skip (reason) -->`` is not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
SKIP = re.compile(r"<!-- readme-test: skip \((.+?)\) -->\s*$")


def _blocks() -> list[tuple[int, str, str, str | None]]:
    """``(line, language, code, skip reason)`` of each fenced block."""
    text = README.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()]
        skip = SKIP.search(before.rstrip("\n").rsplit("\n", 1)[-1])
        blocks.append(
            (
                before.count("\n") + 1,
                match.group(1),
                match.group(2),
                skip.group(1) if skip else None,
            )
        )
    return blocks


def test_every_block_names_its_language():
    untagged = [
        line for line, language, _, _ in _blocks() if language not in ("python", "sh", "text")
    ]
    assert not untagged, f"README blocks at lines {untagged} need a language: python, sh or text"


def test_readme_blocks_run_as_written(tmp_path):
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        MPLBACKEND="Agg",
    )
    (tmp_path / ".venv").symlink_to(
        sys.prefix
    )  # the blocks run where a user stands: the project's root
    ran = 0
    for line, language, code, skip in _blocks():
        if language == "text" or skip:
            continue
        command = (
            [sys.executable, "-c", code] if language == "python" else ["bash", "-e", "-c", code]
        )
        done = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, (
            f"README block at line {line} ({language}) failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
        assert "Traceback" not in done.stderr, (
            f"README block at line {line} printed a traceback:\n{done.stderr[-3000:]}"
        )
        ran += 1
    assert ran >= 6
