"""Parsing: dlang source text to the AST of dlang.nodes, with syntax errors in plain words."""
from __future__ import annotations

import re
from pathlib import Path

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from . import nodes as n
from .errors import Diagnostic, ProgramError, Span

GRAMMAR_PATH = Path(__file__).resolve().parent.parent / "grammars" / "dlang.lark"
if not GRAMMAR_PATH.exists():  # installed as a wheel: the grammar travels inside the package
    GRAMMAR_PATH = Path(__file__).resolve().parent / "grammars" / "dlang.lark"

_OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB"}


class _Separators:
    """Post-lexer: newlines and ';' become one _SEP token between items.

    Newlines inside ( ) or [ ] are dropped (a long call may wrap), as are separators at the
    start of a block or file, repeated ones, and one standing before '}' or 'else' (so
    `else` may start a new line).
    """

    always_accept = ("_NL", "_SEMI")

    def process(self, stream):
        depth = 0
        pending = None
        at_start = True
        for tok in stream:
            if tok.type in ("_NL", "_SEMI"):
                if tok.type == "_NL" and depth > 0:
                    continue
                if not at_start and pending is None:
                    pending = Token.new_borrow_pos("_SEP", tok.value, tok)
                continue
            if tok.type in _OPENERS:
                depth += 1
            elif tok.type in ("RPAR", "RSQB") and depth > 0:
                depth -= 1
            if pending is not None and tok.type not in ("RBRACE", "ELSE"):
                yield pending
            pending = None
            at_start = tok.type == "LBRACE"
            yield tok


_parser: Lark | None = None


def _get_parser() -> Lark:
    global _parser
    if _parser is None:
        _parser = Lark(
            GRAMMAR_PATH.read_text(),
            parser="lalr",
            lexer="basic",  # the post-lexer looks one token ahead, which the contextual lexer cannot
            postlex=_Separators(),
            propagate_positions=True,
            maybe_placeholders=False,
            cache=True,
        )
    return _parser


def _span(x) -> Span:
    if isinstance(x, Token):
        return Span(x.line, x.column, x.end_line, x.end_column)
    if isinstance(x, n.Node):
        return x.span
    return Span(x.line, x.column, x.end_line, x.end_column)  # lark Meta


_CMP = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}
_AUG = {"+=": "add", "-=": "sub", "*=": "mul", "/=": "div"}


def _binary(op):
    def build(self, meta, children):
        left, right = children
        return n.Binary(op, left, right, span=_span(meta))

    return build


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    """Lark tree to dataclass AST, without recursion (deeply nested programs are valid)."""

    def start(self, meta, items):
        span = _span(meta) if not meta.empty else Span(1, 1, 1, 1)
        return n.Program(tuple(items), span=span)

    def const_decl(self, meta, c):
        return n.ConstDecl(str(c[0]), c[1], span=_span(meta))

    def data_decl(self, meta, items):
        return n.DataDecl(tuple(items), span=_span(meta))

    def data_item(self, meta, c):
        shape = c[1] if len(c) > 1 else ()
        return n.DataItem(str(c[0]), shape, span=_span(meta))

    def data_column(self, meta, c):
        return n.DataItem(str(c[0]), (), whole=True, span=_span(meta))

    def shape(self, meta, dims):
        return tuple(dims)

    def bounds(self, meta, c):
        return n.Bounds(c[0], c[1], span=_span(meta))

    def param_decl(self, meta, c):
        bounds = c.pop() if isinstance(c[-1], n.Bounds) else None
        shape = c[1] if len(c) == 3 else ()
        return n.ParamDecl(str(c[0]), shape, c[-1], bounds, span=_span(meta))

    def param_random(self, meta, c):
        bounds = c.pop() if isinstance(c[-1], n.Bounds) else None
        shape = c[1] if len(c) == 4 else ()
        dist, args = c[-2], c[-1]
        init = n.RandomInit(str(dist), args, _span(dist), span=_span(dist).to(_span(meta)))
        return n.ParamDecl(str(c[0]), shape, init, bounds, span=_span(meta))

    def fn_def(self, meta, c):
        name, (params, spans), body = c
        return n.FnDef(str(name), params, spans, body, span=_span(meta))

    def fn_params(self, meta, names):
        return tuple(str(x) for x in names), tuple(_span(x) for x in names)

    def block(self, meta, items):
        return tuple(items)

    def assign(self, meta, c):
        return n.Assign(c[0], None, c[1], span=_span(meta))

    def aug_assign(self, meta, c):
        return n.Assign(c[0], _AUG[str(c[1])], c[2], span=_span(meta))

    def target(self, meta, c):
        return n.Target(str(c[0]), tuple(c[1:]), span=_span(meta))

    def for_stmt(self, meta, c):
        var, lo, hi, body = c
        return n.For(str(var), _span(var), lo, hi, body, span=_span(meta))

    def while_stmt(self, meta, c):
        return n.While(c[0], c[1], span=_span(meta))

    def if_stmt(self, meta, c):
        orelse = ()
        if len(c) == 3:
            orelse = c[2] if isinstance(c[2], tuple) else (c[2],)
        return n.If(c[0], c[1], orelse, span=_span(meta))

    def loss_stmt(self, meta, c):
        return n.Loss(c[0], span=_span(meta))

    def output_stmt(self, meta, c):
        return n.Output(str(c[0]), c[1], span=_span(meta))

    def return_stmt(self, meta, c):
        return n.Return(c[0], span=_span(meta))

    or_op = _binary("or")
    and_op = _binary("and")
    add = _binary("add")
    sub = _binary("sub")
    mul = _binary("mul")
    div = _binary("div")
    matmul = _binary("matmul")
    power = _binary("pow")

    def compare(self, meta, c):
        return n.Binary(_CMP[str(c[1])], c[0], c[2], span=_span(meta))

    def not_op(self, meta, c):
        return n.Unary("not", c[0], span=_span(meta))

    def neg(self, meta, c):
        return n.Unary("neg", c[0], span=_span(meta))

    def index(self, meta, c):
        return n.Index(c[0], tuple(c[1:]), span=_span(meta))

    def int_lit(self, meta, c):
        text = str(c[0])
        value = int(text) if len(text) <= 40 else 10**40  # past any int64: the checker refuses it
        return n.Num(value, True, span=_span(c[0]))

    def float_lit(self, meta, c):
        return n.Num(float(c[0]), False, span=_span(c[0]))

    def true_lit(self, meta, c):
        return n.Bool(True, span=_span(meta))

    def false_lit(self, meta, c):
        return n.Bool(False, span=_span(meta))

    def name(self, meta, c):
        return n.Name(str(c[0]), span=_span(c[0]))

    def call(self, meta, c):
        return n.Call(str(c[0]), c[1], _span(c[0]), span=_span(meta))

    def args(self, meta, c):
        return tuple(c)


# ---- syntax errors in words --------------------------------------------------------------

_WORDS = {
    "NAME": "a name",
    "INT": "a number",
    "FLOAT": "a number",
    "_SEP": "a new line",
    "$END": "the end of the file",
    "AUG_OP": "an update such as '+='",
    "CMP_OP": "a comparison",
}
_EXPR_START = {"NAME", "INT", "FLOAT", "LPAR", "MINUS", "NOT", "TRUE", "FALSE"}
_STMT_START = {"CONST", "DATA", "PARAM", "FN", "FOR", "WHILE", "IF", "LOSS", "OUTPUT", "RETURN"}
_BINARY_OPS = {"PLUS", "MINUS", "STAR", "SLASH", "AT", "CIRCUMFLEX", "CMP_OP", "AND", "OR", "LSQB"}


def _describe_terminal(name: str) -> str:
    if name in _WORDS:
        return _WORDS[name]
    try:
        pattern = _get_parser().get_terminal(name).pattern
    except KeyError:
        return name.lower()
    if pattern.type == "str":
        return f"'{pattern.value}'"
    return name.lower()


def _describe_found(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the file"
    if tok.type == "_SEP":
        return "the end of the line" if tok.value != ";" else "';'"
    if tok.type == "NAME":
        return f"the name '{tok.value}'"
    if tok.type in ("INT", "FLOAT"):
        return f"the number {tok.value}"
    if tok.type in {t for t in _STMT_START} | {"IN", "ELSE", "AND", "OR", "NOT", "TRUE", "FALSE"}:
        return f"the keyword '{tok.value}'"
    return f"'{tok.value}'"


def _describe_expected(expected: set[str]) -> str:
    expected = set(expected)
    parts: list[str] = []
    if len(expected & _EXPR_START) >= 4:
        parts.append("an expression")
        expected -= _EXPR_START
    if len(expected & _STMT_START) >= 4:
        parts.append("a statement")
        expected -= _STMT_START | _EXPR_START
    if len(expected & _BINARY_OPS) >= 4:
        parts.append("an operator")
        expected -= _BINARY_OPS
    words = sorted({_describe_terminal(t) for t in expected if not t.startswith("__")})
    parts += words
    if len(parts) > 5:
        parts = parts[:5] + ["something else"]
    if not parts:
        return "something else"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


KEYWORDS = {"const", "data", "param", "fn", "return", "for", "in", "while", "if", "else", "loss",
            "output", "and", "or", "not", "true", "false"}


def _end_of_content(source: str, tok: Token, line: int) -> tuple[int, int]:
    """Where a missing piece belongs: just after the last thing written before `tok`."""
    lines = source.split("\n")
    if tok.type == "$END":
        line = len(lines)
    # step back over blank and comment-only lines
    while line > 1 and not re.sub(r"#.*", "", lines[line - 1]).strip():
        line -= 1
    text = re.sub(r"#.*", "", lines[line - 1]).rstrip()
    return line, len(text) + 1


def source_line_prefix(err: UnexpectedInput, line: int, col: int) -> str:
    lines = (getattr(err, "_dlang_source", "") or "").splitlines()
    return lines[line - 1][: col - 1] if 0 < line <= len(lines) else ""


def _syntax_diagnostic(err: UnexpectedInput, path: str | None) -> Diagnostic:
    if isinstance(err, UnexpectedCharacters):
        span = Span(err.line, err.column, err.line, err.column + 1)
        return Diagnostic(f"unexpected character {err.char!r}", span, path)
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    line = tok.line if tok.line is not None else getattr(err, "line", 1)
    col = tok.column if tok.column is not None else getattr(err, "column", 1)
    width = len(str(tok.value)) if tok.type not in ("$END", "_SEP") else 1
    if tok.type == "$END" or (tok.type == "_SEP" and tok.value != ";"):
        line, col = _end_of_content(getattr(err, "_dlang_source", ""), tok, line)
    span = Span(line, col, line, col + max(1, width))
    found = _describe_found(tok)
    expected = set(err.expected)
    try:  # the LALR tables over-approximate; ask the parser what it really accepts here
        expected = set(err.interactive_parser.accepts()) or expected
    except Exception:  # noqa: BLE001 - the coarse set is still a fine answer
        pass
    if tok.type == "CMP_OP" and "CMP_OP" not in expected and "PLUS" in expected:
        return Diagnostic(
            f"comparisons cannot be chained: found {found} after a comparison",
            span, path, note="write `a < b and b < c`",
        )
    if tok.type == "EQUAL" and "LBRACE" in expected:
        return Diagnostic(
            f"expected {_describe_expected(expected)}, but found '=' in a condition",
            span, path, note="use '==' to compare",
        )
    note = None
    before = source_line_prefix(err, line, col)
    word = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", before)
    if "NAME" in expected and str(tok.value) in KEYWORDS:
        note = f"'{tok.value}' is a reserved word; it cannot be used as a name"
    elif "NAME" in expected and word and word.group(1) in KEYWORDS:
        note = f"'{word.group(1)}' is a reserved word; it cannot be used as a name"
    if tok.type == "__ANON_0":
        note = "'..' only appears in a for loop: for i in A..B { ... }"
    return Diagnostic(f"expected {_describe_expected(expected)}, but found {found}", span, path, note)


def normalise_newlines(source: str) -> str:
    """CRLF and lone CR line ends become LF, so lines and columns count the same everywhere."""
    return source.replace("\r\n", "\n").replace("\r", "\n")


def parse(source: str, path: str | None = None) -> n.Program:
    """Parse dlang source into an AST; a syntax error raises ProgramError with one diagnostic.

    The source should have "\n" line ends (see normalise_newlines)."""
    try:
        tree = _get_parser().parse(source)
    except UnexpectedInput as err:
        err._dlang_source = source
        raise ProgramError(_syntax_diagnostic(err, path), source) from None
    return _ToAst().transform(tree)
