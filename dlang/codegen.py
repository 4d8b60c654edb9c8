"""Code generation: kernel IR to Python source for Numba. It only renders.

What runs once per call (the prelude), how a gradient is added up over the rows, where a
division became a multiplication and which arrays have buffers were decided by the passes of
dlang.passes; the functions' names, arguments and results follow dlang.abi. An elementwise op
is its registry record's scalar template (in a loop over the elements, on arrays); another
array op is its record's render function. A statement nested deeper than MAX_DEPTH in one
function becomes a helper function (Python and Numba limit how deep code may nest).

The source is meant to be read (`dlang emit --stage kernel`): values keep their source names,
adjoints are named `b_<name>`, and each group of adjoint statements carries a `# grad of: ...`
comment showing the primal statement it differentiates. No user text reaches it other than
identifiers, which are mangled so they cannot collide with Python keywords, builtins or the
names the kernels use themselves (all of which start with `dl_`).
"""
from __future__ import annotations

import builtins
import keyword
import math
import re

from . import abi
from .ir import (BOOL, DEFAULT_MAX_ITERATIONS, F64, I64, Atom, Block, Eqn, ForLoop, IfElse, Lit, Program,
                 Stmt, Type, Var, WhileLoop, defined_anywhere, size, tape_ops, vars_read, walk)
from .passes import use_counts
from .prims import REGISTRY

__all__ = ["generate", "literal", "DEFAULT_MAX_ITERATIONS", "MAX_DEPTH"]

_RESERVED = set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))
_JIT = '@dl_njit(cache=True, error_model="numpy")'
_JIT_PARALLEL = '@dl_njit(cache=True, error_model="numpy", parallel=True)'
MAX_DEPTH = 6  # loops and ifs nested in one generated function; deeper ones go into a helper


class Namer:
    """Python names for IR values: the source name, mangled, made unique in one function."""

    def __init__(self):
        self.names: dict[int, str] = {}
        self.used: set[str] = set()
        self.next: dict[str, int] = {}  # base name -> the next suffix to try

    def unique(self, base: str) -> str:
        name, k = base, self.next.get(base, 0)
        if k:
            name = f"{base}_{k}"
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.next[base] = k + 1
        self.used.add(name)
        return name

    def define(self, v: Var) -> str:
        base = v.hint or "t"
        if base in _RESERVED or base.startswith("dl_"):
            base = "v_" + base
        self.names[v.id] = self.unique(base)
        return self.names[v.id]

    def __getitem__(self, v: Var) -> str:
        return self.names[v.id]


def literal(value, t: Type) -> str:
    """A number formatted by us: the only way a value from a program reaches the source."""
    if t == BOOL:
        return "True" if value else "False"
    if t == I64:
        return str(int(value))
    x = float(value)
    if math.isnan(x):
        return "dl_math.nan"
    if math.isinf(x):
        return "dl_math.inf" if x > 0 else "(-dl_math.inf)"
    text = repr(x)
    assert re.fullmatch(r"-?[0-9.e+\-]+", text), text
    return f"({text})" if x < 0 else text


def _flat(t: Type) -> str:
    return "[dl_i]" if len(t.shape) == 1 else ".flat[dl_i]"


def _shape(t: Type) -> str:
    return "(" + ", ".join(map(str, t.shape)) + ",)"


def _zero(t: Type) -> str:
    if t.shape:
        return f"dl_np.empty({_shape(t)})"
    return {"f64": "0.0", "i64": "0", "bool": "False"}[t.kind]


def tapes_of(program: Program) -> list[int]:
    """The tape numbers a program pushes to, in order."""
    return sorted({dict(e.params)["tape"] for e in tape_ops(program.body)})


def tape_floor(program: Program, tape: int) -> tuple[int, int]:
    """Float and int words a tape always holds: all of a program's pushes to it at once (so at
    least its largest push group, which is written before the overflow is acted on)."""
    floats = ints = 0
    for e in tape_ops(program.body):
        if e.op == "push" and dict(e.params)["tape"] == tape:
            t = e.ins[0].type
            if t.kind == "f64":
                floats += size(t)
            else:
                ints += 1
    return max(floats, 16), max(ints, 16)


def tape_limit_words() -> int:
    """The most tape words (8 bytes each) a row may use (see limits.max_tape_bytes)."""
    return abi.max_tape_bytes() // 8


class _Module:
    """What the generated module holds besides the kernels: helper functions, and the primal
    statements rendered so far (for the `# grad of:` comments)."""

    def __init__(self, max_iterations: int):
        self.max_iterations = max_iterations
        self.helpers: list[list[str]] = []
        self.rendered: dict[tuple, list[str]] = {}

    def helper_name(self) -> str:
        return f"dl_h{len(self.helpers) + 1}"


class _Writer:
    """Renders statements into the lines of one generated function."""

    def __init__(self, module: _Module, namer: Namer, tapes: list[int], fault_return, comments: bool = True):
        self.m = module
        self.n = namer
        self.tapes = tapes
        self.fault_return = fault_return  # code text -> the return statement for a fault
        self.lines: list[str] = []
        self.depth = 0
        self.in_reverse = False
        self.comments = comments
        self.last_comment_loc = None
        self.skipped: set[int] = set()  # equations rendered elsewhere (fused into a gradient sum)
        self.words = False  # whether the sweep measures the tape words

    def atom(self, a: Atom) -> str:
        return self.n[a] if isinstance(a, Var) else literal(a.value, a.type)

    def line(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def fault(self, indent: int, code: str) -> None:
        self.line(indent, self.fault_return(code))

    # ---- blocks and statements ----

    def block(self, b: Block, indent: int) -> None:
        pushes: list[Eqn] = []
        for s in b.eqns:
            if isinstance(s, Eqn) and s.op == "push":
                pushes.append(s)
                continue
            self.push_group(pushes, indent)
            pushes = []
            self.stmt(s, indent)
        self.push_group(pushes, indent)

    def stmt(self, s: Stmt, indent: int) -> None:
        if isinstance(s, Eqn):
            self.comment_for(s.loc, indent)
            self.eqn(s, indent)
            return
        if self.depth >= MAX_DEPTH:
            self.outline(s, indent)
            return
        self.depth += 1
        if isinstance(s, ForLoop):
            self.for_loop(s, indent)
        elif isinstance(s, WhileLoop):
            self.while_loop(s, indent)
        else:
            self.if_else(s, indent)
        self.depth -= 1

    def assign(self, indent: int, targets: list[str], values: list[str]) -> None:
        if targets:
            self.line(indent, f"{', '.join(targets)} = {', '.join(values)}")

    def for_loop(self, s: ForLoop, indent: int) -> None:
        index, *params = s.body.params
        self.assign(indent, [self.n.define(p) for p in params], [self.atom(a) for a in s.inits])
        lo, hi = self.atom(s.lo), self.atom(s.hi)
        self.line(indent, f"for {self.n.define(index)} in range({lo}, {hi}):  # line {s.loc[0] if s.loc else '?'}")
        start = len(self.lines)
        self.block(s.body, indent + 1)
        self.assign(indent + 1, [self.n[p] for p in params], [self.atom(a) for a in s.body.results])
        if len(self.lines) == start:
            self.line(indent + 1, "pass")
        self.assign(indent, [self.n.define(o) for o in s.outs], [self.n[p] for p in params])

    def while_loop(self, s: WhileLoop, indent: int) -> None:
        cparams = [self.n.define(p) for p in s.cond.params]
        self.assign(indent, cparams, [self.atom(a) for a in s.inits])
        count = self.n.unique("dl_trips")
        line, col = s.loc if s.loc else (0, 0)
        self.line(indent, f"{count} = 0")
        self.line(indent, f"while True:  # line {line}")
        self.block(s.cond, indent + 1)
        self.line(indent + 1, f"if not {self.atom(s.cond.results[0])}:")
        self.line(indent + 2, "break")
        self.line(indent + 1, f"{count} += 1")
        self.line(indent + 1, f"if {count} > {self.m.max_iterations}:")
        self.fault(indent + 2, str(abi.fault_code("while", line, col)))
        self.assign(indent + 1, [self.n.define(p) for p in s.body.params], cparams)
        self.block(s.body, indent + 1)
        self.assign(indent + 1, cparams, [self.atom(a) for a in s.body.results])
        self.assign(indent, [self.n.define(o) for o in s.outs], cparams)

    def if_else(self, s: IfElse, indent: int) -> None:
        outs = [self.n.define(o) for o in s.outs]
        for head, branch in ((f"if {self.atom(s.cond)}:", s.then), ("else:", s.orelse)):
            self.line(indent, head)
            start = len(self.lines)
            self.block(branch, indent + 1)
            self.assign(indent + 1, outs, [self.atom(a) for a in branch.results])
            if len(self.lines) == start:
                self.line(indent + 1, "pass")

    # ---- a statement too deep for one function: a helper ----

    def tape_state(self) -> list[str]:
        return [f"dl_{k}{t}" for t in self.tapes for k in ("ft", "it", "fp", "ip", "over")]

    def tape_pointers(self) -> list[str]:
        return [f"dl_{k}{t}" for t in self.tapes for k in ("fp", "ip", "over")]

    def outline(self, s: Stmt, indent: int) -> None:
        """Render s as a call to a new helper function that takes the values s reads and gives
        back (fault code, the tape pointers if s uses the tape, the values s defines)."""
        whole = Block((), (s,), ())
        inside = defined_anywhere(whole)
        free = [v for v in vars_read(whole) if v.id not in inside]
        taped = any(True for _ in tape_ops(whole))
        name = self.m.helper_name()
        self.m.helpers.append([])  # reserve the name; filled below
        namer = Namer()
        namer.used |= set(self.tape_state())
        args = [namer.define(v) for v in free]
        state = self.tape_state() if taped else []
        pointers = self.tape_pointers() if taped else []
        dummies = [_zero(o.type) for o in s.outs]

        def fault_return(code: str) -> str:
            return "return " + ", ".join([code, *pointers, *dummies])

        inner = _Writer(self.m, namer, self.tapes, fault_return, self.comments)
        inner.in_reverse, inner.last_comment_loc, inner.skipped = self.in_reverse, None, self.skipped
        inner.stmt(s, 1)
        outs = [namer[o] for o in s.outs]
        inner.line(1, "return " + ", ".join(["0", *pointers, *outs]))
        self.m.helpers[int(name[4:]) - 1] = [_JIT, f"def {name}({', '.join(args + state)}):"] + inner.lines
        targets = ["dl_f", *pointers, *[self.n.define(o) for o in s.outs]]
        call_args = [self.n[v] for v in free] + state
        self.line(indent, f"{', '.join(targets)} = {name}({', '.join(call_args)})  # line {s.loc[0] if s.loc else '?'}")
        self.line(indent, "if dl_f != 0:")
        self.fault(indent + 1, "dl_f")

    # ---- the tape ----

    def push_group(self, pushes: list[Eqn], indent: int) -> None:
        """Tape pushes: one capacity check per tape for the group, then plain stores.

        A full tape is never grown here: reassigning the tape array inside a loop costs
        reference counting at every step (4x slower on the projectile). Instead the row notes
        the overflow and goes on writing from the start of the tape (what it writes is thrown
        away), and is run again with a larger tape when it reaches the tape's seal, before any
        pop (see seal). The stores are unconditional, which keeps the loop tight; every tape
        holds at least its largest group (see tape_floor)."""
        by_tape: dict[int, list[Eqn]] = {}
        for e in pushes:
            by_tape.setdefault(dict(e.params)["tape"], []).append(e)
        for t, group in by_tape.items():
            floats = sum(size(e.ins[0].type) for e in group if e.ins[0].type.kind == "f64")
            ints = sum(1 for e in group if e.ins[0].type.kind != "f64")
            checks = [f"{top} + {need} > {tape}.shape[0]" for tape, top, need in
                      ((f"dl_ft{t}", f"dl_fp{t}", floats), (f"dl_it{t}", f"dl_ip{t}", ints)) if need]
            self.line(indent, f"if {' or '.join(checks)}:")
            self.line(indent + 1, f"dl_over{t} = True")
            self.line(indent + 1, f"dl_fp{t} = 0")
            self.line(indent + 1, f"dl_ip{t} = 0")
            foff = ioff = 0
            for e in group:
                a = e.ins[0]
                name = self.atom(a)
                if a.type.shape:
                    self.line(indent, f"dl_rt.tape_put(dl_ft{t}, dl_fp{t} + {foff}, {name})")
                    foff += size(a.type)
                elif a.type == F64:
                    self.line(indent, f"dl_ft{t}[dl_fp{t} + {foff}] = {name}")
                    foff += 1
                else:
                    self.line(indent, f"dl_it{t}[dl_ip{t} + {ioff}] = {name}")
                    ioff += 1
            if foff:
                self.line(indent, f"dl_fp{t} += {foff}")
            if ioff:
                self.line(indent, f"dl_ip{t} += {ioff}")

    def pop(self, e: Eqn, indent: int) -> None:
        v, t = e.outs[0], dict(e.params)["tape"]
        name = self.n.define(v)
        if v.type.shape:
            self.line(indent, f"dl_fp{t} -= {size(v.type)}")
            self.line(indent, f"{name} = dl_rt.tape_take(dl_np.empty({_shape(v.type)}), dl_ft{t}, dl_fp{t})")
        elif v.type == F64:
            self.line(indent, f"dl_fp{t} -= 1")
            self.line(indent, f"{name} = dl_ft{t}[dl_fp{t}]")
        else:
            self.line(indent, f"dl_ip{t} -= 1")
            value = f"dl_it{t}[dl_ip{t}] != 0" if v.type == BOOL else f"dl_it{t}[dl_ip{t}]"
            self.line(indent, f"{name} = {value}")

    def seal(self, e: Eqn, indent: int) -> None:
        """A tape's pushes are done: if any tape overflowed, grow it and run the row again."""
        if self.tapes:
            overflowed = " or ".join(f"dl_over{t}" for t in self.tapes)
            words = " + ".join(f"dl_ft{t}.shape[0] + dl_it{t}.shape[0]" for t in self.tapes)
            self.line(indent, f"if {overflowed}:  # a tape was too small for this row: grow it and run the row again")
            self.line(indent + 1, f"if 2 * ({words}) > {tape_limit_words()}:  # the most a row may use")
            self.fault(indent + 2, str(abi.fault_code("tape", 0, 0)))
            for t in self.tapes:
                self.line(indent + 1, f"if dl_over{t}:")
                self.line(indent + 2, f"dl_ft{t} = dl_rt.grown(dl_ft{t}, 2 * dl_ft{t}.shape[0])")
                self.line(indent + 2, f"dl_it{t} = dl_rt.grown(dl_it{t}, 2 * dl_it{t}.shape[0])")
            self.line(indent + 1, "continue")
        if e.op == "sweep":
            if self.tapes and self.words:
                used = " + ".join(f"dl_fp{t} + dl_ip{t}" for t in self.tapes)
                self.line(indent, f"dl_words += {used}  # the tape is fullest here: measured by dlang bench")
            self.line(indent, "# ---- reverse sweep: adjoints b_x = d loss / d x ----")
            self.in_reverse = True
            self.last_comment_loc = None

    # ---- equations ----

    def comment_for(self, loc, indent: int) -> None:
        if not (self.in_reverse and self.comments) or loc is None or loc == self.last_comment_loc:
            return
        self.last_comment_loc = loc
        primal = self.m.rendered.get(loc)
        if primal:  # a line inlined many times (a fn body) shows its first few forms
            more = f"; ... {len(primal) - 3} more" if len(primal) > 4 else ""
            shown = primal if len(primal) <= 4 else primal[:3]
            self.line(indent, f"# grad of: {'; '.join(shown)}{more}  (line {loc[0]})")

    def check_index(self, e: Eqn, indent: int) -> None:
        prim = REGISTRY[e.op]
        line, col = e.loc if e.loc else (0, 0)
        for i, n in zip(e.ins[prim.checks_index:], e.ins[0].type.shape):
            if isinstance(i, Lit):
                continue  # checked when the program was checked
            name = self.atom(i)
            self.line(indent, f"if {name} < 0 or {name} >= {n}:")
            self.fault(indent + 1, str(abi.fault_code("index", line, col)))

    def eqn(self, e: Eqn, indent: int) -> None:
        if e.op == "pop":
            self.pop(e, indent)
            return
        if e.op in ("seal", "sweep"):
            self.seal(e, indent)
            return
        out = e.outs[0]
        if out.id in self.skipped:
            return
        prim = REGISTRY[e.op]
        args = [self.atom(a) for a in e.ins]
        if prim.checks_index is not None:
            self.check_index(e, indent)
        if prim.guard is not None and prim.checked_at_run_time(e.ins):
            line, col = e.loc if e.loc else (0, 0)
            self.line(indent, f"if {prim.guard.format(*args)}:")
            self.fault(indent + 1, str(abi.fault_code("value", line, col)))
        buffered = "buffer" in dict(e.params)
        target = self.n[out] if buffered else self.n.define(out)
        if out.type.shape and not buffered:
            self.line(indent, f"{target} = dl_np.empty({_shape(out.type)})")
        if prim.elementwise and out.type.shape:
            at = _flat(out.type)
            values = [x + at if a.type.shape else x for x, a in zip(args, e.ins)]
            self.line(indent, f"for dl_i in range({size(out.type)}):")
            self.line(indent + 1, f"{target}{at} = {prim.scalar.format(*values)}")
            text = f"{target} = {e.op}({', '.join(args)})"
        elif prim.scalar is not None:
            text = f"{target} = {prim.scalar.format(*args)}"
            self.line(indent, text)
        else:
            for line in prim.render(target, args, [a.type for a in e.ins], out.type):
                self.line(indent, line)
            text = f"{target} = {e.op}({', '.join(args)})"
        if not self.in_reverse and e.loc is not None:
            self.m.rendered.setdefault(e.loc, []).append(text)


# ---- the kernels ------------------------------------------------------------------------------------

def _param_names(program: Program, namer: Namer) -> list[str]:
    return [namer.define(v) for v in program.param_vars]


def _head(w: _Writer, program: Program, indent: int = 1) -> None:
    """The prelude (once per call) and the buffers of the row body's top-level arrays."""
    if program.prelude:
        w.line(indent, "# the same for every row (params and constants only): computed once per call")
        saved, w.comments = w.comments, False
        for e in program.prelude:
            w.eqn(e, indent)
        w.comments = saved
    for e in program.body.eqns:
        if isinstance(e, Eqn) and "buffer" in dict(e.params) and e.outs[0].id not in w.skipped:
            w.line(indent, f"{w.n.define(e.outs[0])} = dl_np.empty({_shape(e.outs[0].type)})  # a buffer every row reuses")


def _tapes_start(w: _Writer, program: Program, sizes: str | None) -> None:
    for j, t in enumerate(w.tapes):
        floats, ints = tape_floor(program, t)
        start_f = f"max({sizes}[{2 * j}], {floats})" if sizes else str(floats)
        start_i = f"max({sizes}[{2 * j + 1}], {ints})" if sizes else str(ints)
        w.line(1, f"dl_ft{t} = dl_np.empty({start_f})")
        w.line(1, f"dl_it{t} = dl_np.empty({start_i}, dl_np.int64)")


def _row(w: _Writer, program: Program) -> None:
    """The row loop's head and the row body (inside the tape's retry loop, if it has a tape)."""
    w.line(1, "for dl_r in range(dl_lo, dl_hi):")
    for (col, width), v in zip(abi.data_layout(program), program.data_vars):
        cell = f"dl_data[dl_r, {col}:{col + width}]" if v.type.shape else f"dl_data[dl_r, {col}]"
        w.line(2, f"{w.n.define(v)} = {cell}")
    if w.tapes:
        w.line(2, "while True:  # once, or again with larger tapes if this row's did not fit")
        for t in w.tapes:
            w.line(3, f"dl_fp{t} = 0")
            w.line(3, f"dl_ip{t} = 0")
            w.line(3, f"dl_over{t} = False")
        w.block(program.body, 3)
        w.line(3, "break")
    else:
        w.block(program.body, 2)


def _kernel(m: _Module, program: Program, fault_return) -> tuple[_Writer, list[str]]:
    """A kernel function's writer (a fault returns fault_return(code)) and its params' names."""
    w = _Writer(m, Namer(), tapes_of(program), fault_return)
    return w, _param_names(program, w.n)


def _forward(m: _Module, program: Program) -> list[str]:
    w, params = _kernel(m, program, lambda code: f"return {code}, dl_r")
    _head(w, program)
    _tapes_start(w, program, None)
    _row(w, program)
    results = [w.atom(r) for r in program.body.results[:1 + len(program.outputs)]]
    w.line(2, f"dl_losses[dl_r] = {results[0]}")
    col = 0
    for r, text in zip(program.body.results[1:1 + len(program.outputs)], results[1:]):
        if r.type.shape:
            w.line(2, f"dl_rt.put_row(dl_outs, dl_r, {col}, {text})")
            col += size(r.type)
        else:
            w.line(2, f"dl_outs[dl_r, {col}] = {text}")
            col += 1
    w.line(1, "return 0, 0")
    args = ["dl_data", "dl_lo", "dl_hi", *params, "dl_losses", "dl_outs"]
    return [_JIT, f"def {abi.FORWARD}({', '.join(args)}):"] + w.lines


def _loss(m: _Module, program: Program) -> list[str]:
    w, params = _kernel(m, program, lambda code: f"return 0.0, {code}, dl_r")
    _head(w, program)
    _tapes_start(w, program, None)
    w.line(1, "dl_loss = 0.0")
    _row(w, program)
    w.line(2, f"dl_loss += {w.atom(program.body.results[0])}")
    w.line(1, "return dl_loss, 0, 0")
    args = ["dl_data", "dl_lo", "dl_hi", *params]
    return [_JIT, f"def {abi.LOSS}({', '.join(args)}):"] + w.lines


def _fused(program: Program) -> dict[int, Eqn]:
    """Row terms of a gradient that are array products, or arrays packed from scalars, used
    nowhere else: added up in place (g += b * x, g[i] += e_i), with no array in between."""
    terms = [a for rows, _ in program.grad_terms() for a in rows]
    uses = use_counts(program)
    after_sweep, seen = {}, False
    for e in program.body.eqns:
        seen |= isinstance(e, Eqn) and e.op == "sweep"
        if seen and isinstance(e, Eqn) and e.op in ("mul", "outer", "pack") and e.outs and e.outs[0].type.shape:
            after_sweep[e.outs[0].id] = e
    return {a.id: after_sweep[a.id] for a in terms
            if isinstance(a, Var) and a.id in after_sweep and uses.get(a.id) == 1}


def _accumulate(w: _Writer, indent: int, g: str, term: Atom, fused: dict[int, Eqn]) -> None:
    """g += one row term of a gradient."""
    e = fused.get(term.id) if isinstance(term, Var) else None
    if e is not None and e.op == "pack":
        at = "[{}]" if len(e.outs[0].type.shape) == 1 else ".flat[{}]"
        for k, a in enumerate(e.ins):
            if a != Lit(0.0, F64):
                w.line(indent, f"{g}{at.format(k)} += {w.atom(a)}")
    elif e is not None and e.op == "outer":
        x, y = (w.atom(a) for a in e.ins)
        w.line(indent, f"for dl_i in range({e.ins[0].type.shape[0]}):")
        w.line(indent + 1, f"for dl_j in range({e.ins[1].type.shape[0]}):")
        w.line(indent + 2, f"{g}[dl_i, dl_j] += {x}[dl_i] * {y}[dl_j]")
    elif e is not None:
        at = _flat(e.outs[0].type)
        x, y = (w.atom(a) + (at if a.type.shape else "") for a in e.ins)
        w.line(indent, f"for dl_i in range({size(e.outs[0].type)}):")
        w.line(indent + 1, f"{g}{at} += {x} * {y}")
    elif term.type.shape:
        at = _flat(term.type)
        w.line(indent, f"for dl_i in range({size(term.type)}):")
        w.line(indent + 1, f"{g}{at} += {w.atom(term)}{at}")
    else:
        w.line(indent, f"{g} += {w.atom(term)}")


def _grad(m: _Module, program: Program) -> list[str]:
    w, params = _kernel(m, program, lambda code: f"return {code}, dl_r")
    w.words = True
    slots = program.grad_types()  # one per gradient: a param's (or, derived programs, another's)
    grads = [w.n.unique("dl_g") for _ in slots]
    fused = _fused(program)
    w.skipped = set(fused)
    _head(w, program)
    _tapes_start(w, program, "dl_sizes")
    w.line(1, "dl_loss = 0.0")
    w.line(1, "dl_words = 0")
    for g, t in zip(grads, slots):
        w.line(1, f"{g} = " + (f"dl_np.zeros({_shape(t)})" if t.shape else "0.0"))
    _row(w, program)
    w.line(2, f"dl_loss += {w.atom(program.body.results[0])}")
    terms = program.grad_terms()
    for g, (rows, _) in zip(grads, terms):
        for r in rows:
            _accumulate(w, 2, g, r, fused)
    if any(fixed for _, fixed in terms):
        w.line(1, "# the terms the same for every row, once for all the rows")
        w.line(1, "dl_rows = float(dl_hi - dl_lo)")
        for g, (_, fixed) in zip(grads, terms):
            for a in fixed:
                if a.type.shape:
                    w.line(1, f"for dl_i in range({size(a.type)}):")
                    w.line(2, f"{g}{_flat(a.type)} += dl_rows * {w.atom(a)}{_flat(a.type)}")
                else:
                    w.line(1, f"{g} += dl_rows * {w.atom(a)}")
    w.line(1, "dl_out[0] = dl_loss")
    offset = 1
    for g, t in zip(grads, slots):
        if t.shape:
            w.line(1, f"for dl_i in range({size(t)}):")
            w.line(2, f"dl_out[{offset} + dl_i] = {g}{_flat(t)}")
        else:
            w.line(1, f"dl_out[{offset}] = {g}")
        offset += size(t)
    w.line(1, f"dl_out[{offset}] = float(dl_words)")
    for j, t in enumerate(w.tapes):
        w.line(1, f"dl_sizes[{2 * j}] = dl_ft{t}.shape[0]")
        w.line(1, f"dl_sizes[{2 * j + 1}] = dl_it{t}.shape[0]")
    w.line(1, "return 0, 0")
    args = ["dl_data", "dl_lo", "dl_hi", *params, "dl_sizes", "dl_out"]
    return [_JIT, f"def {abi.GRAD}({', '.join(args)}):"] + w.lines


def _drivers(program: Program, adjoint: Program) -> list[str]:
    """The chunked kernels: each chunk of rows is one call of the serial kernel; the chunks'
    results are added up in chunk order by the runtime (not in the parallel function, where
    Numba would make every array operation a parallel loop of its own)."""
    p = [f"dl_p{k}" for k in range(len(program.params))]
    lo_hi = "dl_c * dl_n // dl_nchunks, (dl_c + 1) * dl_n // dl_nchunks"
    out = []
    for name, jit, loop in ((abi.FORWARD_CHUNKS, _JIT_PARALLEL, "dl_prange"),):
        out += ["", jit, f"def {name}({', '.join(['dl_data', 'dl_nchunks', *p, 'dl_losses', 'dl_outs'])}):",
                "    dl_n = dl_data.shape[0]",
                "    dl_faults = dl_rt.chunk_faults(dl_nchunks)",
                f"    for dl_c in {loop}(dl_nchunks):",
                f"        dl_f, dl_fr = {abi.FORWARD}({', '.join(['dl_data', lo_hi, *p, 'dl_losses', 'dl_outs'])})",
                "        dl_faults[dl_c, 0] = dl_f",
                "        dl_faults[dl_c, 1] = dl_fr",
                "    return dl_rt.first_fault(dl_faults)"]
    for name, jit, loop in ((abi.LOSS_CHUNKS, _JIT_PARALLEL, "dl_prange"), (abi.LOSS_CHUNKS_SERIAL, _JIT, "range")):
        out += ["", jit, f"def {name}({', '.join(['dl_data', 'dl_nchunks', *p])}):",
                "    dl_n = dl_data.shape[0]",
                "    dl_out = dl_rt.chunk_sums(dl_nchunks, 1)",
                "    dl_faults = dl_rt.chunk_faults(dl_nchunks)",
                f"    for dl_c in {loop}(dl_nchunks):",
                f"        dl_s, dl_f, dl_fr = {abi.LOSS}({', '.join(['dl_data', lo_hi, *p])})",
                "        dl_out[dl_c, 0] = dl_s",
                "        dl_faults[dl_c, 0] = dl_f",
                "        dl_faults[dl_c, 1] = dl_fr",
                "    dl_f, dl_fr = dl_rt.first_fault(dl_faults)",
                "    return dl_rt.add_rows(dl_out)[0], dl_f, dl_fr"]
    width = abi.grad_width([size(t) for t in adjoint.grad_types()])
    for name, jit, loop in ((abi.GRAD_CHUNKS, _JIT_PARALLEL, "dl_prange"), (abi.GRAD_CHUNKS_SERIAL, _JIT, "range")):
        out += ["", jit, f"def {name}({', '.join(['dl_data', 'dl_nchunks', *p, 'dl_tape_hint'])}):",
                "    dl_n = dl_data.shape[0]",
                f"    dl_out = dl_rt.chunk_sums(dl_nchunks, {width})",
                "    dl_sizes = dl_rt.chunk_tapes(dl_nchunks, dl_tape_hint)",
                "    dl_faults = dl_rt.chunk_faults(dl_nchunks)",
                f"    for dl_c in {loop}(dl_nchunks):",
                f"        dl_f, dl_fr = {abi.GRAD}({', '.join(['dl_data', lo_hi, *p, 'dl_sizes[dl_c]', 'dl_out[dl_c]'])})",
                "        dl_faults[dl_c, 0] = dl_f",
                "        dl_faults[dl_c, 1] = dl_fr",
                "    dl_f, dl_fr = dl_rt.first_fault(dl_faults)",
                "    return dl_rt.add_rows(dl_out), dl_rt.max_rows(dl_sizes), dl_f, dl_fr"]
    return out


def generate(forward: Program, adjoint: Program, loss: Program,
             max_iterations: int = DEFAULT_MAX_ITERATIONS) -> str:
    """The Python source of a module with the kernels of a program: `forward`, `adjoint` and
    `loss` are the program, its adjoint and the program without outputs after the kernel passes.
    (Numba compiles each function the first time it is called: a command pays only for those
    it uses.)"""
    m = _Module(max_iterations)
    fwd = _forward(m, forward)
    loss_kernel = _loss(m, loss)
    grad = _grad(m, adjoint)
    out: list[str] = [
        f"# Generated by dlang: the forward and adjoint kernels of {len(forward.params)} param(s).",
        "# Do not edit: the file's name is a hash of its content.",
        "import math as dl_math",
        "import numpy as dl_np",
        "from numba import njit as dl_njit, prange as dl_prange",
        "from dlang import runtime as dl_rt",
    ]
    if m.helpers:
        out += ["", "", f"# ---- helpers: statements nested more than {MAX_DEPTH} deep ----"]
        for lines in m.helpers:
            out += [""] + lines
    out += ["", "", "# ---- forward: each row's loss and outputs ----"] + fwd
    out += ["", "", "# ---- the loss summed over the rows (the program without its outputs) ----"] + loss_kernel
    out += ["", "", "# ---- adjoint: the sums over the rows of the loss and of d loss / d param ----"] + grad
    out += ["", "", "# ---- the same, chunk by chunk: parallel over chunks, or in order on one thread ----"]
    out += _drivers(forward, adjoint)
    return "\n".join(out) + "\n"
