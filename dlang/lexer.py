"""A Pygments lexer for dlang programs (.dl): `pygmentize -l dlang prog.dl`, and what an editor
or a documentation tool that uses Pygments highlights .dl files with. Registered as the
`dlang` lexer by the package's entry point (pyproject.toml)."""
from __future__ import annotations

from pygments.lexer import RegexLexer, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, Text, Whitespace

from .prims import BUILTINS

KEYWORDS = ("const", "data", "param", "fn", "return", "if", "else", "for", "while", "in", "loss", "output")
WORD_OPERATORS = ("and", "or", "not")


class DlangLexer(RegexLexer):
    name = "dlang"
    aliases = ["dlang", "dl"]
    filenames = ["*.dl"]
    mimetypes = ["text/x-dlang"]

    tokens = {
        "root": [
            (r"\s+", Whitespace),
            (r"#.*?$", Comment.Single),
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (words(("true", "false", "inf"), suffix=r"\b"), Keyword.Constant),
            (words(WORD_OPERATORS, suffix=r"\b"), Operator.Word),
            (words(tuple(sorted(BUILTINS)) + ("len",), suffix=r"\b"), Name.Builtin),
            (r"(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?", Number.Float),
            (r"\.\.|[-+*/^@=<>!]=?|~", Operator),
            (r"[()\[\]{},;:]", Punctuation),
            (r"[A-Za-z_][A-Za-z0-9_]*", Name),
            (r".", Text),
        ],
    }
