"""The worked examples of docs/python.md run as written (doctest), from the repository's root."""
from __future__ import annotations

import doctest
import os

from conftest import ROOT


def test_the_python_api_page_runs_as_written(monkeypatch):
    monkeypatch.chdir(ROOT)
    failures, tried = doctest.testfile(str(ROOT / "docs" / "python.md"), module_relative=False,
                                       optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert tried >= 20
    assert failures == 0
    assert os.path.getsize("/tmp/sir_fit.png") > 10_000
