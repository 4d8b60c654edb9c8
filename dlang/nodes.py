"""The abstract syntax tree: frozen dataclasses, each carrying its source span."""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Span


@dataclass(frozen=True)
class Node:
    span: Span = field(compare=False, repr=False, kw_only=True)


# ---- expressions -------------------------------------------------------------------------

@dataclass(frozen=True)
class Num(Node):
    value: int | float
    is_int: bool


@dataclass(frozen=True)
class Bool(Node):
    value: bool


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "neg" or "not"
    operand: "Expr"


@dataclass(frozen=True)
class Binary(Node):
    op: str  # add sub mul div matmul pow and or lt le gt ge eq ne
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True)
class Call(Node):
    func: str
    args: tuple["Expr", ...]
    func_span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Index(Node):
    base: "Expr"
    indices: tuple["Expr", ...]


Expr = Num | Bool | Name | Unary | Binary | Call | Index


# ---- statements --------------------------------------------------------------------------

@dataclass(frozen=True)
class Target(Node):
    name: str
    indices: tuple[Expr, ...]


@dataclass(frozen=True)
class Assign(Node):
    target: Target
    op: str | None  # None for "=", else add sub mul div for "+=" ...
    value: Expr


@dataclass(frozen=True)
class For(Node):
    var: str
    var_span: Span = field(compare=False, repr=False)
    lo: Expr = None  # type: ignore[assignment]
    hi: Expr = None  # type: ignore[assignment]
    body: tuple["Item", ...] = ()


@dataclass(frozen=True)
class While(Node):
    cond: Expr
    body: tuple["Item", ...]


@dataclass(frozen=True)
class If(Node):
    cond: Expr
    then: tuple["Item", ...]
    orelse: tuple["Item", ...]


@dataclass(frozen=True)
class Loss(Node):
    value: Expr


@dataclass(frozen=True)
class Output(Node):
    name: str
    value: Expr


@dataclass(frozen=True)
class Return(Node):
    value: Expr


# ---- declarations ------------------------------------------------------------------------

@dataclass(frozen=True)
class ConstDecl(Node):
    name: str
    value: Expr


@dataclass(frozen=True)
class DataItem(Node):
    name: str
    shape: tuple[Expr, ...]
    whole: bool = False  # `data x[]`: the whole column, an array of every row's value


@dataclass(frozen=True)
class DataDecl(Node):
    items: tuple[DataItem, ...]


@dataclass(frozen=True)
class RandomInit(Node):
    dist: str
    args: tuple[Expr, ...]
    dist_span: Span = field(compare=False, repr=False)


@dataclass(frozen=True)
class Bounds(Node):
    """`in (lo, hi)` after a param's start: the open interval its values stay in."""
    lo: Expr
    hi: Expr


@dataclass(frozen=True)
class ParamDecl(Node):
    name: str
    shape: tuple[Expr, ...]
    init: Expr | RandomInit
    bounds: Bounds | None = None


@dataclass(frozen=True)
class FnDef(Node):
    name: str
    params: tuple[str, ...]
    param_spans: tuple[Span, ...] = field(compare=False, repr=False)
    body: tuple["Item", ...] = ()


Stmt = Assign | For | While | If | Loss | Output | Return
Decl = ConstDecl | DataDecl | ParamDecl | FnDef
Item = Stmt | Decl


@dataclass(frozen=True)
class Program(Node):
    items: tuple[Item, ...]


# ---- printing: the AST as an indented S-expression (dlang emit --stage ast) --------------------

_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@", "pow": "^",
           "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=",
           "and": "and", "or": "or", "neg": "-", "not": "not"}


def dump_expr(e: Expr) -> str:
    if isinstance(e, Num):
        return repr(e.value)
    if isinstance(e, Bool):
        return "true" if e.value else "false"
    if isinstance(e, Name):
        return e.id
    if isinstance(e, Unary):
        return f"({_SYMBOL[e.op]} {dump_expr(e.operand)})"
    if isinstance(e, Binary):  # a left-deep chain (a + b - c ...) in a loop, not one call per term
        chain = []
        while isinstance(e, Binary):
            chain.append(e)
            e = e.left
        opens = [f"({_SYMBOL[b.op]} " for b in chain]
        closes = [f" {dump_expr(b.right)})" for b in reversed(chain)]
        return "".join(opens) + dump_expr(e) + "".join(closes)
    if isinstance(e, Call):
        return "(" + " ".join([e.func, *map(dump_expr, e.args)]) + ")"
    if isinstance(e, Index):
        return "(index " + " ".join([dump_expr(e.base), *map(dump_expr, e.indices)]) + ")"
    raise TypeError(f"not an expression: {e!r}")


def _dump_items(items, indent: str, out: list[str]) -> None:
    for item in items:
        _dump_item(item, indent, out)


def _shape(dims) -> str:
    return "[" + " ".join(map(dump_expr, dims)) + "]"


def _dump_item(s, indent: str, out: list[str]) -> None:
    inner = indent + "  "
    at = f"\0{s.span.line}:{s.span.col}"
    if isinstance(s, ConstDecl):
        out.append(f"{indent}(const {s.name} {dump_expr(s.value)}){at}")
    elif isinstance(s, DataDecl):
        names = [d.name + ("[]" if d.whole else _shape(d.shape) if d.shape else "") for d in s.items]
        out.append(f"{indent}(data {' '.join(names)}){at}")
    elif isinstance(s, ParamDecl):
        shape = f" {_shape(s.shape)}" if s.shape else ""
        if isinstance(s.init, RandomInit):
            init = "(" + " ".join([s.init.dist, *map(dump_expr, s.init.args)]) + ")"
        else:
            init = dump_expr(s.init)
        out.append(f"{indent}(param {s.name}{shape} {init}){at}")
    elif isinstance(s, FnDef):
        out.append(f"{indent}(fn {s.name} ({' '.join(s.params)}){at}")
        _dump_items(s.body, inner, out)
        _close(out)
    elif isinstance(s, Assign):
        op = "=" if s.op is None else _SYMBOL[s.op] + "="
        target = s.target.name
        if s.target.indices:
            target = "(index " + " ".join([target, *map(dump_expr, s.target.indices)]) + ")"
        out.append(f"{indent}({op} {target} {dump_expr(s.value)}){at}")
    elif isinstance(s, For):
        out.append(f"{indent}(for {s.var} {dump_expr(s.lo)} {dump_expr(s.hi)}{at}")
        _dump_items(s.body, inner, out)
        _close(out)
    elif isinstance(s, While):
        out.append(f"{indent}(while {dump_expr(s.cond)}{at}")
        _dump_items(s.body, inner, out)
        _close(out)
    elif isinstance(s, If):
        out.append(f"{indent}(if {dump_expr(s.cond)}{at}")
        out.append(f"{inner}(then")
        _dump_items(s.then, inner + "  ", out)
        _close(out)
        if s.orelse:
            out.append(f"{inner}(else")
            _dump_items(s.orelse, inner + "  ", out)
            _close(out)
        _close(out)
    elif isinstance(s, Loss):
        out.append(f"{indent}(loss {dump_expr(s.value)}){at}")
    elif isinstance(s, Output):
        out.append(f"{indent}(output {s.name} {dump_expr(s.value)}){at}")
    elif isinstance(s, Return):
        out.append(f"{indent}(return {dump_expr(s.value)}){at}")


def dump(program: Program) -> str:
    """The AST as an S-expression per item, with line:col comments."""
    out = ["(program"]
    _dump_items(program.items, "  ", out)
    _close(out)
    lines = []
    for line in out:  # the location rides after a NUL until here, so ")" can go before it
        code, _, where = line.partition("\0")
        lines.append(f"{code}  ; {where}" if where else code)
    return "\n".join(lines) + "\n"


def _close(out: list[str]) -> None:
    code, nul, where = out[-1].partition("\0")
    out[-1] = code + ")" + nul + where
