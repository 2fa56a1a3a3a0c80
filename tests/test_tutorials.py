"""Every tutorial runs end to end (in fast mode)."""

import runpy
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted(p for p in (Path(__file__).parent.parent / "tutorials").glob("[0-9]*.py"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, monkeypatch, capsys):
    monkeypatch.setenv("TVM_SPARSE_TUTORIAL_FAST", "1")
    monkeypatch.syspath_prepend(str(path.parent))
    monkeypatch.setattr(sys, "argv", [str(path)])
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out.strip()
