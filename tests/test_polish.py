"""Polish (issue 15, items 5 and 6): `dlang --version`, and the Pygments lexer for .dl files."""
from __future__ import annotations

import subprocess
import sys

import pytest
from pygments.token import Comment, Error, Keyword, Name, Number

from dlang import __version__
from dlang.lexer import DlangLexer

from conftest import PROGRAMS, ROOT


def test_version(run_cli):
    r = run_cli("--version")
    assert r.code == 0 and r.out.strip() == f"dlang {__version__}"


@pytest.mark.parametrize("path", sorted(PROGRAMS.glob("*.dl")), ids=lambda p: p.stem)
def test_every_gallery_program_lexes_without_error_tokens(path):
    tokens = list(DlangLexer().get_tokens(path.read_text()))
    assert not [t for t in tokens if t[0] is Error]
    assert "".join(v for _, v in tokens) == path.read_text() + ("" if path.read_text().endswith("\n") else "\n")


def test_the_lexer_tells_keywords_builtins_numbers_and_comments_apart():
    kinds = {v: t for t, v in DlangLexer().get_tokens("param k = 0.5 in (0, inf)  # a rate\nloss sin(k) ^ 2\n")
             if v.strip()}
    assert kinds["param"] is Keyword and kinds["loss"] is Keyword and kinds["in"] is Keyword
    assert kinds["sin"] is Name.Builtin and kinds["k"] is Name and kinds["0.5"] is Number.Float
    assert kinds["# a rate"] is Comment.Single


def test_pygments_finds_the_lexer_by_name():
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    try:
        lexer = get_lexer_by_name("dlang")
    except Exception:  # noqa: BLE001 - the entry point is registered when the package is installed
        pytest.skip("dlang is not installed in this environment (its entry point registers the lexer)")
    assert isinstance(lexer, DlangLexer)
    assert isinstance(get_lexer_for_filename("x.dl"), DlangLexer)
    out = subprocess.run([sys.executable, "-m", "pygments", "-l", "dlang", "-f", "html",
                          str(PROGRAMS / "projectile.dl")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and '<span class="k">param</span>' in out.stdout


# ---- examples in every --help ----------------------------------------------------------------

def _commands():
    import typer.main

    from dlang.cli import app

    return typer.main.get_command(app).commands


@pytest.mark.parametrize("name", ["check", "emit", "grad", "hessian", "train", "run", "plot", "bench"])
def test_every_command_help_has_examples_that_use_real_options_and_files(run_cli, name):
    import shlex

    from dlang.cli import EXAMPLES

    r = run_cli(name, "--help")
    assert r.code == 0
    assert "Examples:" in r.out
    command = _commands()[name]
    options = {opt for p in command.params for opt in p.opts}
    assert EXAMPLES[name]
    for line in EXAMPLES[name]:
        assert line in r.out  # shown as written, not rewrapped
        words = shlex.split(line.split("  #")[0])
        assert words[:2] == ["dlang", name]
        assert (ROOT / words[2]).exists(), words[2]
        for k, word in enumerate(words):
            if word.startswith("--"):
                assert word in options, f"{name}: {word}"
            if k and words[k - 1] == "--data":
                assert (ROOT / word).exists(), word
    assert set(EXAMPLES) == set(_commands())


def test_the_top_level_help_has_examples(run_cli):
    r = run_cli("--help")
    assert r.code == 0 and "Examples:" in r.out and "dlang COMMAND --help" in r.out


# ---- the progress line -----------------------------------------------------------------------

def _progress_line(width: int, eta: bool) -> str:
    import io

    from rich.console import Console

    from dlang.render import TrainProgress
    from dlang.train import Epoch

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=width, color_system=None)
    with TrainProgress(False, eta=eta, console=console) as progress:
        for k in range(1, 31):
            progress.update(Epoch(k, 500, 1234.5678 / k, 1234.5678 / k, 0.0123, 100, 0.01))
    last = buf.getvalue().replace("\x1b[2K", "").replace("\x1b[?25h", "").replace("\x1b[?25l", "")
    return [line for line in last.replace("\r", "\n").split("\n") if line.strip()][-1]


def test_on_an_80_column_terminal_the_progress_line_keeps_count_bar_clock_and_loss():
    line = _progress_line(80, eta=True)
    assert len(line) <= 80
    assert "epoch   30/500" in line
    assert "╸" in line or "━" in line  # the bar (30 of 500 epochs: a sliver)
    assert "loss 41.1523" in line and "best 41.1523" in line
    assert "…" not in line


def test_the_time_left_is_shown_only_when_the_epoch_count_is_the_plan():
    import re

    planned, capped = _progress_line(80, eta=True), _progress_line(80, eta=False)
    clock = re.compile(r"\d+:\d\d:\d\d|-:--:--")
    assert clock.search(planned) and clock.search(capped)  # time left (adam, sgd); time so far (lbfgs, lm)
    wide = _progress_line(140, eta=False)
    assert "|grad| 0.0123" in wide and "rows/s" in wide


def test_train_passes_whether_the_epoch_count_is_a_cap(monkeypatch, run_cli, tmp_path):
    from dlang import render

    seen = []
    real = render.TrainProgress

    def spy(json_lines, eta=True, console=None):
        seen.append(eta)
        return real(json_lines, eta, console)

    monkeypatch.setattr(render, "TrainProgress", spy)
    prog = PROGRAMS / "scaling.dl"
    data = PROGRAMS / "data" / "scaling.csv"
    for optimizer in ("lbfgs", "adam"):
        r = run_cli("train", prog, "--data", data, "--optimizer", optimizer, "--epochs", "3",
                    "--out", tmp_path / "p.json")
        assert r.code == 0, r.err
    assert seen == [False, True]


# ---- emit highlights the program with the lexer ---------------------------------------------

def test_emit_source_highlights_the_program_with_the_dlang_lexer(monkeypatch, run_cli):
    import io

    from rich.console import Console

    from dlang import render

    buf = io.StringIO()
    monkeypatch.setattr(render, "_console", lambda stderr=False: Console(file=buf, force_terminal=True,
                                                                          width=120, color_system="truecolor"))
    path = PROGRAMS / "sir.dl"
    r = run_cli("emit", path, "--stage", "source")
    assert r.code == 0
    shown = buf.getvalue()
    assert "\x1b[" in shown  # coloured
    import re

    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    assert [line.rstrip() for line in plain.splitlines()] == [line.rstrip() for line in path.read_text().splitlines()]


def test_emit_source_piped_is_the_program_as_is(run_cli):
    path = PROGRAMS / "sir.dl"
    r = run_cli("emit", path, "--stage", "source")
    assert r.code == 0 and r.out == path.read_text()
