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
