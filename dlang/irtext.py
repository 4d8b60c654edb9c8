"""The IR as text: `print_program` writes it, `parse_program` reads it back to an equal Program."""
from __future__ import annotations

import re

from .errors import Diagnostic, ProgramError, Span
from .ir import (BOOL, F64, I64, Atom, Block, DataInput, Eqn, ForLoop, GradSum, IfElse, Lit, ParamInput,
                 Program, Stmt, Type, Var, WhileLoop)

# ---- printing -------------------------------------------------------------------------------


class _Names:
    """Readable names handed out at print time: the source name, then name.1, name.2 ..."""

    def __init__(self):
        self.names: dict[int, str] = {}
        self.used: dict[str, int] = {}
        self.temps = 0

    def define(self, v: Var) -> str:
        if v.hint:
            k = self.used.get(v.hint, -1) + 1
            self.used[v.hint] = k
            name = v.hint if k == 0 else f"{v.hint}.{k}"
        else:
            self.temps += 1
            name = str(self.temps)
        self.names[v.id] = "%" + name
        return self.names[v.id]

    def __getitem__(self, v: Var) -> str:
        return self.names[v.id]


def format_literal(value, type_: Type) -> str:
    if type_ == BOOL:
        return "true" if value else "false"
    if type_ == I64:
        return str(int(value))
    return repr(float(value))


def _format_param(value) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(_format_param(v) for v in value) + ")"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def print_program(program: Program) -> str:
    names = _Names()
    out: list[str] = []
    for name, value in program.consts:
        out.append(f"const {name} = {format_literal(value, I64 if isinstance(value, int) else F64)}")
    for d in program.data:
        out.append(f"data {d.name}: {d.type}" + (" column" if d.whole else ""))
    for p in program.params:
        kind, *args = p.init
        init = f"= {args[0]!r}" if kind == "value" else f"~ {kind}({args[0]!r}, {args[1]!r})"
        bounds = f" in ({p.bounds[0]!r}, {p.bounds[1]!r})" if p.bounds is not None else ""
        out.append(f"param {p.name}: {p.type} {init}{bounds}")
    for o in program.outputs:
        out.append(f"output {o}")
    for g in program.grads:
        out.append(f"grad {g}")
    if not program.has_loss:
        out.append("loss none")
    params = ", ".join(f"{names.define(v)}: {v.type}" for v in program.body.params)
    out.append(f"body({params}) {{")
    if program.prelude:  # run once per kernel call, before the rows
        out.append("  once {")
        for e in program.prelude:
            _print_stmt(e, names, out, "    ")
        out.append("  }")
    for s in program.body.eqns:
        _print_stmt(s, names, out, "  ")
    for name, g in zip(program.grads, program.sums):
        fixed = "".join(" " + _atom(a, names) for a in g.fixed)
        out.append(f"  sum {name} rows {g.rows} fixed{fixed}")
    out.append("  return " + ", ".join(_atom(r, names) for r in program.body.results))
    out.append("}")
    return "\n".join(out) + "\n"


def _atom(a: Atom, names: _Names) -> str:
    return names[a] if isinstance(a, Var) else format_literal(a.value, a.type)


def _defs(vs, names: _Names) -> str:
    return ", ".join(f"{names.define(v)}: {v.type}" for v in vs)


def _loc(loc) -> str:
    return f"  @{loc[0]}:{loc[1]}" if loc else ""


def _print_block_body(block: Block, names: _Names, out: list[str], indent: str, end: str) -> None:
    for s in block.eqns:
        _print_stmt(s, names, out, indent)
    out.append(f"{indent}{end} " + ", ".join(_atom(r, names) for r in block.results)
               if block.results else f"{indent}{end}")


def _print_stmt(s: Stmt, names: _Names, out: list[str], indent: str) -> None:
    if isinstance(s, Eqn):
        params = ""
        if s.params:
            params = "[" + ", ".join(f"{k}={_format_param(v)}" for k, v in s.params) + "]"
        ins = "".join(" " + _atom(a, names) for a in s.ins)
        lhs = f"{_defs(s.outs, names)} = " if s.outs else ""
        out.append(f"{indent}{lhs}{s.op}{params}{ins}{_loc(s.loc)}")
        return
    lhs = _defs(s.outs, names) + " = " if s.outs else ""
    inner = indent + "  "
    if isinstance(s, ForLoop):
        inits = ", ".join(_atom(a, names) for a in s.inits)
        head = f"{indent}{lhs}for {_atom(s.lo, names)} {_atom(s.hi, names)} ({inits})"
        out.append(f"{head} ({_defs(s.body.params, names)}) {{{_loc(s.loc)}")
        _print_block_body(s.body, names, out, inner, "yield")
        out.append(f"{indent}}}")
    elif isinstance(s, WhileLoop):
        inits = ", ".join(_atom(a, names) for a in s.inits)
        out.append(f"{indent}{lhs}while ({inits}) cond ({_defs(s.cond.params, names)}) {{{_loc(s.loc)}")
        _print_block_body(s.cond, names, out, inner, "yield")
        out.append(f"{indent}}} do ({_defs(s.body.params, names)}) {{")
        _print_block_body(s.body, names, out, inner, "yield")
        out.append(f"{indent}}}")
    else:
        out.append(f"{indent}{lhs}if {_atom(s.cond, names)} {{{_loc(s.loc)}")
        _print_block_body(s.then, names, out, inner, "yield")
        out.append(f"{indent}}} else {{")
        _print_block_body(s.orelse, names, out, inner, "yield")
        out.append(f"{indent}}}")


# ---- parsing --------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r]+|\#[^\n]*)
  | (?P<nl>\n)
  | (?P<loc>@\d+:\d+)
  | (?P<var>%[A-Za-z0-9_.]+)
  | (?P<num>-?(?:(?:inf|nan)(?![A-Za-z0-9_])|\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+))
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[()\[\]{},:=~])
""", re.VERBOSE)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks: list[tuple[str, str, int, int]] = []
        line, line_start = 1, 0
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                self.fail(f"unexpected character {text[pos]!r}", line, pos - line_start + 1)
            kind = m.lastgroup
            if kind == "nl":
                line, line_start = line + 1, m.end()
            elif kind != "ws":
                self.toks.append((kind, m.group(), line, pos - line_start + 1))
            pos = m.end()
        self.toks.append(("eof", "", line, 1))
        self.k = 0
        self.vars: dict[str, Var] = {}

    def fail(self, message: str, line: int | None = None, col: int | None = None):
        if line is None:
            _, _, line, col = self.toks[self.k]
        raise ProgramError(Diagnostic(message, Span(line, col, line, col + 1), "<ir>"), self.text)

    def peek(self, value: str | None = None, kind: str | None = None) -> bool:
        k, v, _, _ = self.toks[self.k]
        return (value is None or v == value) and (kind is None or k == kind)

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        if not self.peek(value, kind):
            self.fail(f"expected {value or kind}, found {self.toks[self.k][1]!r}")
        self.k += 1
        return self.toks[self.k - 1][1]

    def type(self) -> Type:
        kind = self.take(kind="name")
        if kind not in ("f64", "i64", "bool"):
            self.fail(f"unknown type {kind}")
        shape: list[int] = []
        if self.peek("["):
            self.take("[")
            shape.append(int(self.take(kind="num")))
            while self.peek(","):
                self.take(",")
                shape.append(int(self.take(kind="num")))
            self.take("]")
        return Type(kind, tuple(shape))

    def define(self) -> Var:
        name = self.take(kind="var")
        self.take(":")
        type_ = self.type()
        if name in self.vars:
            self.fail(f"{name} is defined twice")
        base = name[1:].split(".")[0]
        hint = "" if base.isdigit() else base
        var = Var(len(self.vars) + 1, type_, hint)
        self.vars[name] = var
        return var

    def defs(self, end: str) -> tuple[Var, ...]:
        out = []
        while not self.peek(end):
            out.append(self.define())
            if not self.peek(end):
                self.take(",")
        return tuple(out)

    def atom(self) -> Atom:
        if self.peek(kind="var"):
            name = self.take()
            if name not in self.vars:
                self.k -= 1
                self.fail(f"{name} is used before it is defined")
            return self.vars[name]
        if self.peek("true") or self.peek("false"):
            return Lit(self.take() == "true", BOOL)
        text = self.take(kind="num")
        if re.fullmatch(r"-?\d+", text):
            return Lit(int(text), I64)
        return Lit(float(text), F64)

    def atoms_until(self, end: str) -> tuple[Atom, ...]:
        out = []
        while not self.peek(end):
            out.append(self.atom())
            if not self.peek(end):
                self.take(",")
        return tuple(out)

    def loc(self):
        if self.peek(kind="loc"):
            line, col = self.take()[1:].split(":")
            return (int(line), int(col))
        return None

    def param_value(self):
        if self.peek("("):
            self.take("(")
            items = []
            while not self.peek(")"):
                items.append(self.param_value())
                if not self.peek(")"):
                    self.take(",")
            self.take(")")
            return tuple(items)
        if self.peek("true") or self.peek("false"):
            return self.take() == "true"
        text = self.take(kind="num")
        return int(text) if re.fullmatch(r"-?\d+", text) else float(text)

    def number(self) -> float:
        return float(self.take(kind="num"))

    def program(self) -> Program:
        consts, data, params, outputs, grads = [], [], [], [], []
        has_loss = True
        while not self.peek("body"):
            word = self.take(kind="name")
            if word == "const":
                name = self.take(kind="name")
                self.take("=")
                text = self.take(kind="num")
                consts.append((name, int(text) if re.fullmatch(r"-?\d+", text) else float(text)))
            elif word == "data":
                name = self.take(kind="name")
                self.take(":")
                type_ = self.type()
                whole = self.peek("column")
                if whole:
                    self.take("column")
                data.append(DataInput(name, type_, whole))
            elif word == "param":
                name = self.take(kind="name")
                self.take(":")
                type_ = self.type()
                if self.peek("="):
                    self.take("=")
                    init: tuple = ("value", self.number())
                else:
                    self.take("~")
                    dist = self.take(kind="name")
                    self.take("(")
                    a = self.number()
                    self.take(",")
                    b = self.number()
                    self.take(")")
                    init = (dist, a, b)
                bounds = None
                if self.peek("in"):
                    self.take("in")
                    self.take("(")
                    lo = self.number()
                    self.take(",")
                    hi = self.number()
                    self.take(")")
                    bounds = (lo, hi)
                params.append(ParamInput(name, type_, init, bounds))
            elif word == "output":
                outputs.append(self.take(kind="name"))
            elif word == "grad":
                grads.append(self.take(kind="name"))
            elif word == "loss":
                self.take("none")
                has_loss = False
            else:
                self.k -= 1
                self.fail(f"unexpected {word!r} before the body")
        self.take("body")
        self.take("(")
        body_params = self.defs(")")
        self.take(")")
        self.take("{")
        prelude: list[Stmt] = []
        if self.peek("once"):
            self.take("once")
            self.take("{")
            while not self.peek("}"):
                prelude.append(self.stmt())
            self.take("}")
        body, sums = self.block_rest(body_params, "return", sums=True)
        self.take(kind="eof")
        return Program(tuple(consts), tuple(data), tuple(params), tuple(outputs), body, has_loss,
                       grads=tuple(grads), prelude=tuple(prelude), sums=tuple(sums))

    def block_rest(self, params: tuple[Var, ...], end: str, sums: bool = False):
        """Statements up to `end results }` (the opening brace already taken); with sums, the
        body's `sum NAME rows K fixed ...` lines too."""
        eqns: list[Stmt] = []
        grad_sums: list[GradSum] = []
        while not self.peek(end):
            if sums and self.peek("sum") and self.toks[self.k + 1][0] == "name" and self.toks[self.k + 2][1] == "rows":
                line = self.toks[self.k][2]
                self.k += 3
                rows = int(self.take(kind="num"))
                self.take("fixed")
                fixed = []
                while self.toks[self.k][2] == line and (self.peek(kind="var") or self.peek(kind="num")):
                    fixed.append(self.atom())
                grad_sums.append(GradSum(rows, tuple(fixed)))
                continue
            eqns.append(self.stmt())
        self.take(end)
        results = self.atoms_until("}")
        self.take("}")
        block = Block(params, tuple(eqns), results)
        return (block, grad_sums) if sums else block

    def stmt(self) -> Stmt:
        line = self.toks[self.k][2]
        outs: tuple[Var, ...] = ()
        if self.peek(kind="var"):  # only push has no outputs
            outs = self.defs("=")
            self.take("=")
        head = self.take(kind="name")
        if head == "for":
            lo, hi = self.atom(), self.atom()
            self.take("(")
            inits = self.atoms_until(")")
            self.take(")")
            self.take("(")
            bparams = self.defs(")")
            self.take(")")
            self.take("{")
            loc = self.loc()
            return ForLoop(outs, lo, hi, inits, self.block_rest(bparams, "yield"), loc)
        if head == "while":
            self.take("(")
            inits = self.atoms_until(")")
            self.take(")")
            self.take("cond")
            self.take("(")
            cparams = self.defs(")")
            self.take(")")
            self.take("{")
            loc = self.loc()
            cond = self.block_rest(cparams, "yield")
            self.take("do")
            self.take("(")
            bparams = self.defs(")")
            self.take(")")
            self.take("{")
            return WhileLoop(outs, inits, cond, self.block_rest(bparams, "yield"), loc)
        if head == "if":
            cond = self.atom()
            self.take("{")
            loc = self.loc()
            then = self.block_rest((), "yield")
            self.take("else")
            self.take("{")
            return IfElse(outs, cond, then, self.block_rest((), "yield"), loc)
        params: list[tuple[str, object]] = []
        if self.peek("["):
            self.take("[")
            while not self.peek("]"):
                key = self.take(kind="name")
                self.take("=")
                params.append((key, self.param_value()))
                if not self.peek("]"):
                    self.take(",")
            self.take("]")
        ins = []
        while self.toks[self.k][2] == line and (self.peek(kind="var") or self.peek(kind="num")
                                                 or self.peek("true") or self.peek("false")):
            ins.append(self.atom())
        return Eqn(outs, head, tuple(params), tuple(ins), self.loc())


def parse_program(text: str) -> Program:
    """Read IR text written by print_program."""
    return _Parser(text).program()
