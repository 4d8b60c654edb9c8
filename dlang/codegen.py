"""Code generation: IR to Python source for Numba, table-driven, one format string per op.

The source is meant to be read (`dlang emit --stage kernel`): values keep their source names,
adjoints are named `b_<name>`, and each group of adjoint statements carries a
`# grad of: ...` comment showing the primal statement it differentiates. No user text reaches
it other than identifiers, which are mangled so they cannot collide with Python keywords,
builtins or the names the kernels use themselves (all of which start with `dl_`).
"""
from __future__ import annotations

import builtins
import keyword
import math
import re

from .ir import (BOOL, F64, I64, Atom, Block, Eqn, ForLoop, IfElse, Lit, Program, Type, Var, WhileLoop,
                 blocks_of, walk)

DEFAULT_MAX_ITERATIONS = 100_000_000

_RESERVED = set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))

# scalar forms; an elementwise op on arrays is a loop applying the scalar form (Writer.loops)
_UNARY = {
    "neg": "-{0}",
    "sin": "dl_math.sin({0})",
    "cos": "dl_math.cos({0})",
    "tan": "dl_math.tan({0})",
    "asin": "dl_rt._asin({0})",
    "acos": "dl_rt._acos({0})",
    "atan": "dl_math.atan({0})",
    "exp": "dl_math.exp({0})",
    "log": "dl_rt._log({0})",
    "log1p": "dl_rt._log1p({0})",
    "sqrt": "dl_rt._sqrt({0})",
    "tanh": "dl_math.tanh({0})",
    "sinh": "dl_math.sinh({0})",
    "cosh": "dl_math.cosh({0})",
    "sigmoid": "dl_rt.sigmoid({0})",
    "relu": "dl_rt.relu({0})",
    "softplus": "dl_rt.softplus({0})",
    "abs": "abs({0})",
    "sign": "dl_rt.sign({0})",
    "floor": "dl_np.floor({0})",
    "ceil": "dl_np.ceil({0})",
    "round": "dl_rt.fround({0})",
    "not": "not {0}",
    "to_float": "float({0})",
    "transpose": "dl_np.ascontiguousarray({0}.T)",
}
_BINARY = {
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "pow": "{0} ** {1}",
    "lt": "{0} < {1}", "le": "{0} <= {1}", "gt": "{0} > {1}", "ge": "{0} >= {1}", "eq": "{0} == {1}",
    "ne": "{0} != {1}",
    "atan2": "dl_math.atan2({0}, {1})", "min": "dl_rt.fmin({0}, {1})", "max": "dl_rt.fmax({0}, {1})",
    "mask_ge": "dl_rt.mask_ge({0}, {1})", "mask_gt": "dl_rt.mask_gt({0}, {1})",
}

# Elementwise ops on arrays are written as loops, never as NumPy array expressions: those
# allocate per op and make a kernel many times slower to compile.
_ELEMENTWISE_UNARY = {"neg", "sin", "cos", "tan", "asin", "acos", "atan", "exp", "log", "log1p", "sqrt",
                      "tanh", "sinh", "cosh", "sigmoid", "relu", "softplus", "abs", "sign", "floor", "ceil",
                      "round"}
_ELEMENTWISE_BINARY = {"add", "sub", "mul", "div", "pow", "atan2", "min", "max", "mask_ge", "mask_gt"}


class Namer:
    """Python names for IR values: the source name, mangled, made unique."""

    def __init__(self):
        self.names: dict[int, str] = {}
        self.used: set[str] = set()

    def unique(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
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


class _Writer:
    def __init__(self, namer: Namer, max_iterations: int, reverse_from: int | None = None,
                 comments: bool = True):
        self.n = namer
        self.lines: list[str] = []
        self.max_iterations = max_iterations
        self.reverse_from = reverse_from
        self.rendered: dict[tuple, list[str]] = {}
        self.last_comment_loc = None
        self.comments = comments
        self.in_reverse = False
        self.buffers: dict[int, str] = {}  # array values written into a buffer allocated once
        # In a prange body a `raise` makes Numba run the loop serially: there, a fault sets
        # dl_fault (kind * 10**12 + line * 10**6 + column) and the code goes on safely instead.
        self.flag_faults = False
        self.taped = True  # whether the program pushes anything (else no tape retry loop)
        self.recips: dict[int, str] = {}  # var id -> the name of its reciprocal, computed once

    def atom(self, a: Atom) -> str:
        return self.n[a] if isinstance(a, Var) else literal(a.value, a.type)

    def line(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def block(self, b: Block, indent: int, top: bool = False) -> None:
        pushes: list[Eqn] = []
        for k, s in enumerate(b.eqns):
            if isinstance(s, Eqn) and s.op == "push":
                pushes.append(s)
                continue
            self.push_group(pushes, indent)
            pushes = []
            if top and self.reverse_from is not None and k == self.reverse_from:
                self.start_reverse(indent)
            self.stmt(s, indent)
        self.push_group(pushes, indent)
        if top and self.reverse_from is not None and not self.in_reverse:
            self.start_reverse(indent)

    def start_reverse(self, indent: int) -> None:
        if not self.taped:  # nothing on a tape: no retry, nothing to measure
            self.line(indent, "# ---- reverse sweep: adjoints b_x = d loss / d x ----")
            self.in_reverse = True
            self.last_comment_loc = None
            return
        self.line(indent, "if dl_over:  # the tape was too small for this row: grow it and run the row again")
        limit = tape_limit_words()
        self.line(indent + 1, f"if 2 * (dl_ftape.shape[0] + dl_itape.shape[0]) > {limit}:  # the most a row may use")
        if self.flag_faults:
            self.line(indent + 2, f"dl_fault = {fault_code('tape', 0, 0)}")
            self.line(indent + 2, "break")
        else:
            self.line(indent + 2, "raise RuntimeError('dl_fault:tape:0:0')")
        self.line(indent + 1, "dl_ftape = dl_rt.grown(dl_ftape, 2 * dl_ftape.shape[0])")
        self.line(indent + 1, "dl_itape = dl_rt.grown(dl_itape, 2 * dl_itape.shape[0])")
        self.line(indent + 1, "continue")
        self.line(indent, "dl_tape_words += dl_fp + dl_ip  # the tape is fullest here: measured by dlang bench")
        self.line(indent, "# ---- reverse sweep: adjoints b_x = d loss / d x ----")
        self.in_reverse = True
        self.last_comment_loc = None

    def push_group(self, pushes: list[Eqn], indent: int) -> None:
        """Tape pushes: one capacity check for the group, then plain stores.

        A full tape is never grown here: reassigning the tape array inside a loop costs
        reference counting at every step (4x slower on the projectile). Instead the row notes
        the overflow and goes on writing from the start of the tape (what it writes is thrown
        away), and is run again with a larger tape before its reverse sweep starts (see
        start_reverse). The stores are unconditional, which keeps the loop tight; every tape
        holds at least the largest group (see tape_floor)."""
        if not pushes:
            return
        floats, ints = _push_words(pushes)
        checks = [f"{top} + {need} > {tape}.shape[0]" for tape, top, need in
                  (("dl_ftape", "dl_fp", floats), ("dl_itape", "dl_ip", ints)) if need]
        self.line(indent, f"if {' or '.join(checks)}:")
        self.line(indent + 1, "dl_over = True")
        self.line(indent + 1, "dl_fp = 0")
        self.line(indent + 1, "dl_ip = 0")
        foff = ioff = 0
        for e in pushes:
            a = e.ins[0]
            name = self.atom(a)
            if a.type.shape:
                self.line(indent, f"dl_rt.tape_put(dl_ftape, dl_fp + {foff}, {name})")
                foff += _size(a.type)
            elif a.type == F64:
                self.line(indent, f"dl_ftape[dl_fp + {foff}] = {name}" if foff else f"dl_ftape[dl_fp] = {name}")
                foff += 1
            else:
                self.line(indent, f"dl_itape[dl_ip + {ioff}] = {name}" if ioff else f"dl_itape[dl_ip] = {name}")
                ioff += 1
        if foff:
            self.line(indent, f"dl_fp += {foff}")
        if ioff:
            self.line(indent, f"dl_ip += {ioff}")

    def comment_for(self, loc, indent: int) -> None:
        if not (self.in_reverse and self.comments) or loc is None or loc == self.last_comment_loc:
            return
        self.last_comment_loc = loc
        primal = self.rendered.get(loc)
        if primal:  # a line inlined many times (a fn body) shows its first few forms
            more = f"; ... {len(primal) - 3} more" if len(primal) > 4 else ""
            shown = primal if len(primal) <= 4 else primal[:3]
            self.line(indent, f"# grad of: {'; '.join(shown)}{more}  (line {loc[0]})")

    def stmt(self, s, indent: int) -> None:
        if isinstance(s, Eqn):
            self.comment_for(s.loc, indent)
            self.eqn(s, indent)
        elif isinstance(s, ForLoop):
            self.for_loop(s, indent)
        elif isinstance(s, WhileLoop):
            self.while_loop(s, indent)
        else:
            self.if_else(s, indent)

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
        self.line(indent + 1, f"if {count} > {self.max_iterations}:")
        if self.flag_faults:
            self.line(indent + 2, f"dl_fault = {fault_code('while', line, col)}")
            self.line(indent + 2, "break")
        else:
            self.line(indent + 2, f"raise RuntimeError('dl_fault:while:{line}:{col}')")
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

    def check_index(self, e: Eqn, array: Atom, idx, indent: int) -> None:
        for i, size in zip(idx, array.type.shape):
            if isinstance(i, Lit):
                continue  # checked at compile time
            name = self.atom(i)
            line, col = e.loc if e.loc else (0, 0)
            self.line(indent, f"if {name} < 0 or {name} >= {size}:")
            if self.flag_faults:
                self.line(indent + 1, f"dl_fault = {fault_code('index', line, col)}")
            else:
                self.line(indent + 1, f"raise IndexError('dl_fault:index:{line}:{col}')")

    def subscript(self, idx: list[Atom], shape) -> str:
        """Index text; with flagged faults an index out of range is clamped (the row is void)."""
        parts = []
        for i, size in zip(idx, shape):
            text = self.atom(i)
            if self.flag_faults and not isinstance(i, Lit):
                text = f"min(max({text}, 0), {size - 1})"
            parts.append(text)
        return ", ".join(parts)

    def eqn(self, e: Eqn, indent: int) -> None:
        ins = [self.atom(a) for a in e.ins]
        if e.op == "push":
            self.push_group([e], indent)
            return
        out = e.outs[0]
        if e.op == "pop":
            self.pop(out, indent)
            return
        target = self.n.define(out)
        if self.loops(e, ins, target, indent):
            return
        expr = self.expression(e, ins, target, indent)
        if expr is not None:
            text = f"{target} = {expr}"
            self.line(indent, text)
            if not self.in_reverse and e.loc is not None:
                self.rendered.setdefault(e.loc, []).append(text)

    def loops(self, e: Eqn, ins: list[str], target: str, indent: int) -> bool:
        """Array arithmetic of a known size written as plain loops in the kernel: LLVM keeps
        them tight (a call to a helper per op costs several times more per row). The result
        goes into the kernel's buffer for the value, or a new array. False if e is not such."""
        op, out = e.op, e.outs[0]
        shapes = [a.type.shape for a in e.ins]
        if op in _ELEMENTWISE_UNARY or op in _ELEMENTWISE_BINARY or op == "clamp":
            if not out.type.shape:
                return False
            scalar = _UNARY.get(op) or _BINARY.get(op) or "dl_rt.clamp({0}, {1}, {2})"
            at = "[dl_i]" if len(out.type.shape) == 1 else ".flat[dl_i]"
            args = [x + at if shp else x for x, shp in zip(ins, shapes)]
            dest = self.array_for(out, target, indent)
            self.line(indent, f"for dl_i in range({_size(out.type)}):")
            self.line(indent + 1, f"{dest}{at} = {scalar.format(*args)}")
        elif op in ("zeros", "broadcast") and out.id in self.buffers:
            at = "[dl_i]" if len(out.type.shape) == 1 else ".flat[dl_i]"
            dest = self.array_for(out, target, indent)
            self.line(indent, f"for dl_i in range({_size(out.type)}):")
            self.line(indent + 1, f"{dest}{at} = {ins[0] if op == 'broadcast' else '0.0'}")
        elif op in ("dot", "sum", "mean") or (op == "matmul" and len(shapes[0]) == len(shapes[1]) == 1):
            if op in ("sum", "mean"):
                term = f"{ins[0]}[dl_i]" if len(shapes[0]) == 1 else f"{ins[0]}.flat[dl_i]"
            else:
                term = f"{ins[0]}[dl_i] * {ins[1]}[dl_i]"
            self.line(indent, f"{target} = 0.0")
            self.line(indent, f"for dl_i in range({_size(e.ins[0].type)}):")
            self.line(indent + 1, f"{target} += {term}")
            if op == "mean":
                self.line(indent, f"{target} /= {float(_size(e.ins[0].type))!r}")
        elif op == "outer":
            dest = self.array_for(out, target, indent)
            self.line(indent, f"for dl_i in range({shapes[0][0]}):")
            self.line(indent + 1, f"for dl_j in range({shapes[1][0]}):")
            self.line(indent + 2, f"{dest}[dl_i, dl_j] = {ins[0]}[dl_i] * {ins[1]}[dl_j]")
        elif op == "matmul":
            dest = self.array_for(out, target, indent)
            a, b = ins
            if len(shapes[0]) == 2 and len(shapes[1]) == 1:  # matrix @ vector
                (n, m), term, put = shapes[0], f"{a}[dl_i, dl_k] * {b}[dl_k]", f"{dest}[dl_i]"
            elif len(shapes[0]) == 1:  # vector @ matrix
                (m, n), term, put = shapes[1], f"{a}[dl_k] * {b}[dl_k, dl_i]", f"{dest}[dl_i]"
            else:  # matrix @ matrix
                (n, m), term, put = shapes[0], f"{a}[dl_i, dl_k] * {b}[dl_k, dl_j]", f"{dest}[dl_i, dl_j]"
            self.line(indent, f"for dl_i in range({n}):")
            if len(shapes[0]) == len(shapes[1]) == 2:
                indent += 1
                self.line(indent, f"for dl_j in range({shapes[1][1]}):")
            self.line(indent + 1, "dl_s = 0.0")
            self.line(indent + 1, f"for dl_k in range({m}):")
            self.line(indent + 2, f"dl_s += {term}")
            self.line(indent + 1, f"{put} = dl_s")
        else:
            return False
        if not self.in_reverse and e.loc is not None:
            self.rendered.setdefault(e.loc, []).append(f"{target} = {op}({', '.join(ins)})")
        return True

    def array_for(self, out: Var, target: str, indent: int) -> str:
        """The array a computed value is written into: its buffer, or a new one."""
        buffer = self.buffers.get(out.id)
        if buffer is not None:
            self.line(indent, f"{target} = {buffer}")
            return buffer
        self.line(indent, f"{target} = dl_np.empty({out.type.shape})")
        return target

    def expression(self, e: Eqn, ins: list[str], target: str, indent: int) -> str | None:
        op, out = e.op, e.outs[0]
        if op in _UNARY and len(ins) == 1:
            return _UNARY[op].format(*ins)
        if op == "div" and self.in_reverse and self.recips.get(getattr(e.ins[1], "id", None)):
            return f"{ins[0]} * {self.recips[e.ins[1].id]}"  # an adjoint divided by a param: see _row_loop
        if op in _BINARY:
            return _BINARY[op].format(*ins)
        if op == "clamp":
            return f"dl_rt.clamp({ins[0]}, {ins[1]}, {ins[2]})"
        if op in ("zeros", "broadcast"):
            shape = "(" + ", ".join(str(n) for n in out.type.shape) + ",)"
            return f"dl_np.zeros({shape})" if op == "zeros" else f"dl_np.full({shape}, {ins[0]})"
        if op == "index":
            self.check_index(e, e.ins[0], e.ins[1:], indent)
            sub = self.subscript(list(e.ins[1:]), e.ins[0].type.shape)
            return f"{ins[0]}[{sub}].copy()" if out.type.shape else f"{ins[0]}[{sub}]"
        if op in ("setindex", "addindex"):
            self.check_index(e, e.ins[0], e.ins[2:], indent)
            sub = self.subscript(list(e.ins[2:]), e.ins[0].type.shape)
            self.line(indent, f"{target} = {ins[0]}.copy()")
            self.line(indent, f"{target}[{sub}] {'=' if op == 'setindex' else '+='} {ins[1]}")
            return None
        raise NotImplementedError(f"no code generation for op {op}")

    def accumulate(self, indent: int, g: str, e: Eqn) -> None:
        """g += e's value, an array product, written as a loop in the kernel (LLVM keeps a
        loop over a kernel-local array tight; through a helper call it does not)."""
        x, y = (self.atom(a) for a in e.ins)
        if e.op == "outer":
            n, m = e.ins[0].type.shape[0], e.ins[1].type.shape[0]
            self.line(indent, f"for dl_i in range({n}):")
            self.line(indent + 1, f"for dl_j in range({m}):")
            self.line(indent + 2, f"{g}[dl_i, dl_j] += {x}[dl_i] * {y}[dl_j]")
            return
        flat = len(e.outs[0].type.shape) > 1
        at = ".flat[dl_i]" if flat else "[dl_i]"
        xs = x + at if e.ins[0].type.shape else x
        ys = y + at if e.ins[1].type.shape else y
        self.line(indent, f"for dl_i in range({_size(e.outs[0].type)}):")
        self.line(indent + 1, f"{g}{at} += {xs} * {ys}")

    def pop(self, v: Var, indent: int) -> None:
        name = self.n.define(v)
        t = v.type
        if t.shape:
            size = _size(t)
            shape = "(" + ", ".join(map(str, t.shape)) + ",)"
            self.line(indent, f"dl_fp -= {size}")
            self.line(indent, f"{name} = dl_rt.tape_take(dl_np.empty({shape}), dl_ftape, dl_fp)")
        elif t == F64:
            self.line(indent, "dl_fp -= 1")
            self.line(indent, f"{name} = dl_ftape[dl_fp]")
        else:
            self.line(indent, "dl_ip -= 1")
            value = "dl_itape[dl_ip] != 0" if t == BOOL else "dl_itape[dl_ip]"
            self.line(indent, f"{name} = {value}")


def _buffered(e) -> bool:
    """Array equations that can write into a preallocated buffer."""
    if not isinstance(e, Eqn) or not e.outs or not e.outs[0].type.shape:
        return False
    return (e.op in _ELEMENTWISE_UNARY or e.op in _ELEMENTWISE_BINARY
            or e.op in ("outer", "zeros", "broadcast", "matmul", "clamp"))


_NOT_HOISTED = {"push", "pop", "index", "setindex", "addindex"}  # tape ops; ops that check an index


def _split_row_invariant(body: Block, param_vars, reverse_from: int | None):
    """Top-level equations that read only params, constants and each other are the same for
    every row: they move before the row loop. Gives (hoisted, the rest, reverse_from in it)."""
    invariant = {v.id for v in param_vars}
    hoisted, rest = [], []
    start = None
    for k, s in enumerate(body.eqns):
        if reverse_from is not None and k == reverse_from:
            start = len(rest)
        if (isinstance(s, Eqn) and s.outs and s.op not in _NOT_HOISTED
                and all(isinstance(a, Lit) or a.id in invariant for a in s.ins)):
            hoisted.append(s)
            invariant.add(s.outs[0].id)
        else:
            rest.append(s)
    if reverse_from is not None and start is None:
        start = len(rest)
    return hoisted, Block(body.params, tuple(rest), body.results), start, invariant


_FUSED_SUMS = {"mul", "outer"}  # row terms of an array gradient added up in place (accumulate)


def _split_grad_sums(body: Block, grad_results, invariant: set[int], start: int):
    """A param's gradient per row is often a sum of a term that varies by row and one that does
    not (the adjoint of a penalty on params: a ridge term). The row loop adds up only the
    varying terms; each invariant term is added once after it, times the number of rows.
    Gives (the body without the additions this makes dead, per grad: the row terms and the
    invariant terms)."""
    uses: dict[int, int] = {}

    def use(a) -> None:
        if isinstance(a, Var):
            uses[a.id] = uses.get(a.id, 0) + 1

    for s in walk(body):
        if isinstance(s, Eqn):
            for a in s.ins:
                use(a)
        elif isinstance(s, IfElse):
            use(s.cond)
        elif isinstance(s, ForLoop):
            use(s.lo)
            use(s.hi)
        if not isinstance(s, Eqn):
            for a in getattr(s, "inits", ()):
                use(a)
            for b in blocks_of(s):
                for a in b.results:
                    use(a)
    for a in body.results:
        use(a)
    defined = {e.outs[0].id: (k, e) for k, e in enumerate(body.eqns)
               if k >= start and isinstance(e, Eqn) and len(e.outs) == 1}
    dead: set[int] = set()

    def terms(a, rows: list, fixed: list) -> None:
        k, e = defined.get(a.id, (None, None)) if isinstance(a, Var) and uses.get(a.id) == 1 else (None, None)
        if isinstance(a, Lit) or a.id in invariant:
            fixed.append(a)
        elif e is not None and e.op == "add" and all(x.type == a.type for x in e.ins):
            dead.add(k)
            for x in e.ins:
                terms(x, rows, fixed)
        elif e is not None and a.type.shape and e.op in _FUSED_SUMS:
            dead.add(k)  # e.g. g += b * x: added up without an array in between
            rows.append(e)
        else:
            rows.append(a)

    split = []
    for r in grad_results:
        rows: list = []
        fixed: list = []
        terms(r, rows, fixed)
        split.append((rows, fixed))
    eqns = tuple(e for k, e in enumerate(body.eqns) if k not in dead)
    return Block(body.params, eqns, body.results), split


FAULT_KINDS = {"index": 1, "while": 2, "tape": 3}


def tape_limit_words() -> int:
    """The most tape words (8 bytes each) a row may use (see limits.max_tape_bytes)."""
    from .limits import max_tape_bytes

    return max_tape_bytes() // 8


def fault_code(kind: str, line: int, col: int) -> int:
    return FAULT_KINDS[kind] * 10**12 + line * 10**6 + col


def decode_fault(code: int) -> tuple[str, int, int]:
    kind = {v: k for k, v in FAULT_KINDS.items()}[code // 10**12]
    return kind, (code // 10**6) % 10**6, code % 10**6


def _reverse_divisors(body: Block, start: int, invariant: set[int]) -> list[Var]:
    """Scalars the same for every row that the reverse sweep divides a scalar by."""
    found: dict[int, Var] = {}
    for s in walk(Block((), tuple(body.eqns[start:]), ())):
        if (isinstance(s, Eqn) and s.op == "div" and isinstance(s.ins[1], Var) and s.ins[1].id in invariant
                and not s.ins[1].type.shape and not s.ins[0].type.shape):
            found.setdefault(s.ins[1].id, s.ins[1])
    return list(found.values())


def tape_floor(body: Block) -> tuple[int, int]:
    """Float and int words every tape must hold: all the pushes in the program at once, at
    least as many as its largest push group (see Writer.push_group)."""
    floats, ints = _push_words([s for s in walk(body) if isinstance(s, Eqn) and s.op == "push"])
    return max(floats, 16), max(ints, 16)


def _push_words(pushes) -> tuple[int, int]:
    """Float and int tape words a list of push equations writes."""
    floats = sum(_size(e.ins[0].type) if e.ins[0].type.shape else 1 for e in pushes if e.ins[0].type.kind == "f64")
    ints = sum(1 for e in pushes if e.ins[0].type.kind != "f64")
    return floats, ints


def _size(t: Type) -> int:
    size = 1
    for n in t.shape:
        size *= n
    return size


# ---- the module: row kernels and drivers over all rows ------------------------------------------

_JIT = '@dl_njit(cache=True, error_model="numpy")'


def _data_layout(program: Program) -> list[tuple[int, int]]:
    """(first column, width) of each data input in the data matrix."""
    out, col = [], 0
    for d in program.data:
        width = _size(d.type) if d.type.shape else 1
        out.append((col, width))
        col += width
    return out


def data_width(program: Program) -> int:
    return sum(w for _, w in _data_layout(program))


def output_width(program: Program) -> int:
    return sum(_size(r.type) if r.type.shape else 1 for r in program.body.results[1:1 + len(program.outputs)])


def _row_loop(name: str, program: Program, max_iterations: int, adjoint: bool,
              reverse_from: int | None, parallel: bool = False, threads: bool = True) -> list[str]:
    """A kernel over all rows, the body written out inside the row loop (one function per
    kernel: a call from one njit function to another recompiles the callee into the caller).

    Forward: dl_forward_rows(data, params..., losses, outs) fills each row's loss and outputs;
    with parallel, the rows are shared among threads (prange), each row writing only its own.
    Adjoint: dl_grad_rows(data, params..., ftape, itape) returns the mean loss, the mean
    gradient of each param, the tape words used, and the (possibly grown) tapes, reused from
    row to row. With parallel, dl_grad_chunks(data, params..., nchunks, chunk buffers...) splits
    the rows into a fixed number of chunks, each with its own tapes and sums, run by prange;
    the caller adds the chunk sums in order, so the result does not depend on the threads."""
    namer = Namer()
    w = _Writer(namer, max_iterations, reverse_from)
    w.flag_faults = parallel
    data_vars = program.body.params[:len(program.data)]
    param_vars = program.body.params[len(program.data):]
    params = [namer.define(v) for v in param_vars]
    grads = [namer.unique("dl_g") for _ in param_vars]
    hoisted, row_body, reverse_from, invariant = _split_row_invariant(program.body, param_vars, reverse_from)
    grad_results = program.body.results[1 + len(program.outputs):]
    if adjoint:
        row_body, grad_terms = _split_grad_sums(row_body, grad_results, invariant, reverse_from)
    w.reverse_from = reverse_from
    chunks = adjoint and parallel
    if chunks:
        extra = ["dl_nchunks", "dl_tapes", "dl_closs", "dl_cwords"] + [f"dl_c{g}" for g in grads]
    else:
        extra = ["dl_ftape", "dl_itape"] if adjoint else ["dl_losses", "dl_outs"]
    if parallel:
        extra.append("dl_faults")  # per chunk (adjoint) or per row (forward): 0, or a fault code
    jit = _JIT.replace(")", ", parallel=True)") if parallel and threads else _JIT
    lines = [jit, f"def {name}({', '.join(['dl_data'] + params + extra)}):"]
    if hoisted:
        w.line(1, "# the same for every row (params and constants only): computed once")
        w.comments = False
        for e in hoisted:
            w.eqn(e, 1)
        w.comments = True
    if adjoint:  # the reverse sweep multiplies by 1 / p instead of dividing by a param p: a
        # division is several times slower, and the last bit of an adjoint does not matter
        for d in _reverse_divisors(row_body, reverse_from, invariant):
            w.recips[d.id] = namer.unique("dl_inv")
            w.line(1, f"{w.recips[d.id]} = 1.0 / {w.atom(d)}")
    depth = 1
    w.taped = any(isinstance(s, Eqn) and s.op == "push" for s in walk(row_body))
    floor_f, floor_i = tape_floor(row_body)
    if chunks:
        w.line(1, "dl_n = dl_data.shape[0]")
        w.line(1, f"for dl_c in {'dl_prange' if threads else 'range'}(dl_nchunks):")
        # each chunk's tapes start at the size the caller asks (the largest any chunk needed
        # last time: dl_tapes[0, :]); each chunk reports the size it ended with (dl_tapes[1 + c])
        w.line(2, f"dl_ftape = dl_np.empty(max(dl_tapes[0, 0], {floor_f}))")
        w.line(2, f"dl_itape = dl_np.empty(max(dl_tapes[0, 1], {floor_i}), dl_np.int64)")
        w.line(2, "dl_fault = 0")
        depth = 2
    elif adjoint and w.taped:  # a push group writes before it checks: the tape must hold one
        w.line(1, f"if dl_ftape.shape[0] < {floor_f} or dl_itape.shape[0] < {floor_i}:")
        w.line(2, f"dl_ftape = dl_rt.grown(dl_ftape, {floor_f})")
        w.line(2, f"dl_itape = dl_rt.grown(dl_itape, {floor_i})")
    for e in row_body.eqns:  # top-level array values: one buffer each, reused by every row
        if _buffered(e) and (chunks or not parallel):  # (a prange over rows would share them)
            buffer = namer.unique("dl_buf")
            w.buffers[e.outs[0].id] = buffer
            w.line(depth, f"{buffer} = dl_np.empty({e.outs[0].type.shape})")
    if adjoint:
        w.line(depth, "dl_loss = 0.0")
        w.line(depth, "dl_tape_words = 0")
        for g, v in zip(grads, param_vars):
            w.line(depth, f"{g} = " + (f"dl_np.zeros({v.type.shape})" if v.type.shape else "0.0"))
    if chunks:
        w.line(depth, "for dl_r in range(dl_c * dl_n // dl_nchunks, (dl_c + 1) * dl_n // dl_nchunks):")
    elif parallel:
        w.line(depth, "for dl_r in dl_prange(dl_data.shape[0]):")
    else:
        w.line(depth, "for dl_r in range(dl_data.shape[0]):")
    body = depth + 1
    if parallel and not chunks:
        w.line(body, "dl_fault = 0")
    for (col, width), v in zip(_data_layout(program), data_vars):
        cell = f"dl_data[dl_r, {col}:{col + width}]" if v.type.shape else f"dl_data[dl_r, {col}]"
        w.line(body, f"{namer.define(v)} = {cell}")
    if adjoint and w.taped:
        w.line(body, "while True:  # once, or again with a larger tape if this row's did not fit")
        w.line(body + 1, "dl_fp = 0")
        w.line(body + 1, "dl_ip = 0")
        w.line(body + 1, "dl_over = False")
        w.block(row_body, body + 1, top=True)
        w.line(body + 1, "break")
        if parallel:  # a row that faulted (its tape would not fit) adds nothing: it is reported
            w.line(body, "if dl_fault != 0:")
            w.line(body + 1, "continue")
    else:
        w.block(row_body, body, top=True)
    results = [w.atom(r) for r in program.body.results[:1 + len(program.outputs)]]
    if adjoint:
        w.line(body, f"dl_loss += {results[0]}")
        for g, (rows, _) in zip(grads, grad_terms):
            for r in rows:
                if isinstance(r, Eqn):
                    w.accumulate(body, g, r)
                elif r.type.shape:
                    at = "[dl_i]" if len(r.type.shape) == 1 else ".flat[dl_i]"
                    w.line(body, f"for dl_i in range({_size(r.type)}):")
                    w.line(body + 1, f"{g}{at} += {w.atom(r)}{at}")
                else:
                    w.line(body, f"{g} += {w.atom(r)}")
        if any(fixed for _, fixed in grad_terms):
            w.line(depth, "# the terms that are the same for every row, once for all rows")
            count = ("((dl_c + 1) * dl_n // dl_nchunks - dl_c * dl_n // dl_nchunks)" if chunks
                     else "dl_data.shape[0]")
            w.line(depth, f"dl_rows = float({count})")
            for g, (_, fixed) in zip(grads, grad_terms):
                for r in fixed:
                    w.line(depth, f"{g} += dl_rows * {w.atom(r)}")
    if chunks:
        w.line(2, "dl_closs[dl_c] = dl_loss")
        w.line(2, "dl_cwords[dl_c] = dl_tape_words")
        w.line(2, "dl_faults[dl_c] = dl_fault")
        w.line(2, "dl_tapes[1 + dl_c, 0] = dl_ftape.shape[0]")
        w.line(2, "dl_tapes[1 + dl_c, 1] = dl_itape.shape[0]")
        for g in grads:
            w.line(2, f"dl_c{g}[dl_c] = {g}")
        w.line(1, "# the chunks' sums added in chunk order: the same bits whatever the threads")
        w.line(1, "dl_loss = 0.0")
        w.line(1, "dl_tape_words = 0")
        for g, v in zip(grads, param_vars):
            w.line(1, f"{g} = " + (f"dl_np.zeros({v.type.shape})" if v.type.shape else "0.0"))
        w.line(1, "for dl_c in range(dl_nchunks):")
        w.line(2, "dl_loss += dl_closs[dl_c]")
        w.line(2, "dl_tape_words += dl_cwords[dl_c]")
        for g in grads:
            w.line(2, f"{g} += dl_c{g}[dl_c]")
        w.line(1, f"return (dl_loss / dl_n, {''.join(g + ' / dl_n, ' for g in grads)}dl_tape_words)")
    elif adjoint:
        w.line(1, "dl_n = dl_data.shape[0]")
        w.line(1, f"return (dl_loss / dl_n, {''.join(g + ' / dl_n, ' for g in grads)}dl_tape_words, "
                  "dl_ftape, dl_itape)")
    else:
        w.line(2, f"dl_losses[dl_r] = {results[0]}")
        if parallel:
            w.line(2, "dl_faults[dl_r] = dl_fault")
        col = 0
        for r in program.body.results[1:1 + len(program.outputs)]:
            if r.type.shape:
                size = _size(r.type)
                w.line(2, f"dl_rt.put_row(dl_outs, dl_r, {col}, {w.atom(r)})")
                col += size
            else:
                w.line(2, f"dl_outs[dl_r, {col}] = {w.atom(r)}")
                col += 1
        w.line(1, "return dl_losses, dl_outs")
    return lines + w.lines


def generate(program: Program, adjoint: Program, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> str:
    """The Python source of a module with the forward and adjoint kernels of a program."""
    from .limits import check_nesting

    check_nesting(program)
    out: list[str] = [
        f"# Generated by dlang: the forward and adjoint kernels of {len(program.params)} param(s).",
        "# Do not edit: the file's name is a hash of its content.",
        "import math as dl_math",
        "import numpy as dl_np",
        "from numba import njit as dl_njit, prange as dl_prange",
        "from dlang import runtime as dl_rt",
        "",
        "",
        "# ---- forward: each row's loss and outputs ----",
    ]
    out += _row_loop("dl_forward_rows", program, max_iterations, False, None)
    out += ["", "", "# ---- adjoint: the mean loss and d loss / d param over the rows ----"]
    out += _row_loop("dl_grad_rows", adjoint, max_iterations, True, len(program.body.eqns))
    out += ["", "", "# ---- the same two, parallel over rows (for many rows; compiled only when used) ----"]
    out += _row_loop("dl_forward_rows_par", program, max_iterations, False, None, parallel=True)
    out += [""]
    out += _row_loop("dl_grad_chunks", adjoint, max_iterations, True, len(program.body.eqns), parallel=True)
    out += ["", "", "# ---- the chunked adjoint on one thread: the same sums in the same order, no thread pool ----"]
    out += _row_loop("dl_grad_chunks_serial", adjoint, max_iterations, True, len(program.body.eqns),
                     parallel=True, threads=False)
    return "\n".join(out) + "\n"
