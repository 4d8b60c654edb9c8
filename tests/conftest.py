"""Shared test helpers: run the CLI in-process and capture what a user would see."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dlang.cli import main

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True, scope="session")
def _kernel_cache(tmp_path_factory):
    """Compiled kernels go to a per-session temporary directory, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLANG_CACHE_DIR", str(tmp_path_factory.mktemp("dlang-cache")))
        yield


def user_error(r, *needles: str) -> None:
    """A user error: exit 1, no traceback or internal error, every needle in stderr."""
    assert r.code == 1, (r.code, r.out, r.err)
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err
    for needle in needles:
        assert needle in r.err, f"{needle!r} not in {r.err!r}"


@pytest.fixture
def run_cli(capsys):
    """run_cli(*args) -> CliResult(code, out, err), running `dlang ARGS` in this process."""

    def run(*args: str) -> CliResult:
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as ex:
            code = ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def write_program(tmp_path):
    """write_program(text, name="p.dl") -> path of a new program file holding `text`."""

    def write(text: str, name: str = "p.dl") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def load_program(path, consts=None):
    """dlang.frontend.load_program; a program that reads whole columns (`data x[]`) is checked
    for as many rows as its gallery data set (programs/data/NAME.csv) has."""
    from dlang.frontend import compile_source
    from dlang.frontend import load_program as load

    prog = load(str(path), consts)
    csv = PROGRAMS / "data" / f"{Path(path).stem}.csv"
    if prog.whole_columns and csv.exists():
        rows = len(csv.read_text().strip().splitlines()) - 1
        prog = compile_source(Path(path).read_text(), str(path), consts, column_rows=rows)
    return prog
