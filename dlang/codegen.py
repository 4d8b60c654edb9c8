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

from .ir import BOOL, F64, I64, Atom, Block, Eqn, ForLoop, IfElse, Lit, Program, Type, Var, WhileLoop

DEFAULT_MAX_ITERATIONS = 100_000_000

_RESERVED = set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))

# scalar forms (elementwise ops on arrays call dl_rt.ew_* helpers instead)
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
    "sum": "dl_rt.total({0})",
    "transpose": "dl_np.ascontiguousarray({0}.T)",
}
_BINARY = {
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "pow": "{0} ** {1}",
    "lt": "{0} < {1}", "le": "{0} <= {1}", "gt": "{0} > {1}", "ge": "{0} >= {1}", "eq": "{0} == {1}",
    "ne": "{0} != {1}",
    "atan2": "dl_math.atan2({0}, {1})", "min": "dl_rt.fmin({0}, {1})", "max": "dl_rt.fmax({0}, {1})",
    "mask_ge": "dl_rt.mask_ge({0}, {1})", "mask_gt": "dl_rt.mask_gt({0}, {1})",
    "dot": "dl_rt.dot({0}, {1})", "outer": "dl_rt.outer({0}, {1})",
}
_MATMUL = {(2, 1): "dl_rt.matvec({0}, {1})", (1, 2): "dl_rt.vecmat({0}, {1})",
           (2, 2): "dl_rt.matmat({0}, {1})", (1, 1): "dl_rt.dot({0}, {1})"}


# Elementwise ops on arrays call one small cached helper each (dlang.runtime.ew_*): compiling a
# kernel full of NumPy array expressions is many times slower.
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
        self.line(indent, "if dl_over:  # the tape was too small for this row: grow it and run the row again")
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
        the overflow, skips the stores, and is run again with a larger tape before its reverse
        sweep starts (see start_reverse)."""
        if not pushes:
            return
        floats, ints = _push_words(pushes)
        checks = [f"{top} + {need} > {tape}.shape[0]" for tape, top, need in
                  (("dl_ftape", "dl_fp", floats), ("dl_itape", "dl_ip", ints)) if need]
        self.line(indent, f"if {' or '.join(checks)}:")
        self.line(indent + 1, "dl_over = True")
        self.line(indent, "else:")
        indent += 1
        for e in pushes:
            a = e.ins[0]
            name = self.atom(a)
            if a.type.shape:
                size = _size(a.type)
                self.line(indent, f"dl_ftape[dl_fp:dl_fp + {size}] = {name}.ravel()")
                self.line(indent, f"dl_fp += {size}")
            elif a.type == F64:
                self.line(indent, f"dl_ftape[dl_fp] = {name}")
                self.line(indent, "dl_fp += 1")
            else:
                self.line(indent, f"dl_itape[dl_ip] = {name}")
                self.line(indent, "dl_ip += 1")

    def comment_for(self, loc, indent: int) -> None:
        if not (self.in_reverse and self.comments) or loc is None or loc == self.last_comment_loc:
            return
        self.last_comment_loc = loc
        primal = self.rendered.get(loc)
        if primal:
            self.line(indent, f"# grad of: {'; '.join(primal)}  (line {loc[0]})")

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
        expr = self.expression(e, ins, target, indent)
        if expr is not None:
            text = f"{target} = {expr}"
            self.line(indent, text)
            if not self.in_reverse and e.loc is not None:
                self.rendered.setdefault(e.loc, []).append(text)

    def expression(self, e: Eqn, ins: list[str], target: str, indent: int) -> str | None:
        op, out = e.op, e.outs[0]
        is_array = any(a.type.shape for a in e.ins) or bool(out.type.shape)
        kinds = "".join("a" if a.type.shape else "s" for a in e.ins)
        buffer = self.buffers.get(out.id)
        if buffer is not None:  # write into the kernel's buffer for this value: no allocation
            self.line(indent, _into_call(e, kinds, buffer, ins))
            return buffer
        if is_array and (op in _ELEMENTWISE_UNARY or op in _ELEMENTWISE_BINARY or op == "clamp"):
            self.line(indent, f"{target} = dl_np.empty({out.type.shape})")
            if op == "clamp":  # min(max(x, lo), hi), the second step in place
                self.line(indent, f"dl_rt.ew_max_{kinds[:2]}_into({target}, {ins[0]}, {ins[1]})")
                self.line(indent, f"dl_rt.ew_min_a{kinds[2]}_into({target}, {target}, {ins[2]})")
            else:
                self.line(indent, _into_call(e, kinds, target, ins))
            return None
        if op in _UNARY and len(ins) == 1:
            return _UNARY[op].format(*ins)
        if op in _BINARY:
            return _BINARY[op].format(*ins)
        if op == "clamp":
            return f"dl_rt.clamp({ins[0]}, {ins[1]}, {ins[2]})"
        if op == "matmul":
            key = (len(e.ins[0].type.shape), len(e.ins[1].type.shape))
            return _MATMUL[key].format(*ins)
        if op == "mean":
            return f"dl_rt.total({ins[0]}) / {float(_size(e.ins[0].type))!r}"
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

    def pop(self, v: Var, indent: int) -> None:
        name = self.n.define(v)
        t = v.type
        if t.shape:
            size = _size(t)
            shape = "(" + ", ".join(map(str, t.shape)) + ",)"
            self.line(indent, f"dl_fp -= {size}")
            self.line(indent, f"{name} = dl_ftape[dl_fp:dl_fp + {size}].copy().reshape({shape})")
        elif t == F64:
            self.line(indent, "dl_fp -= 1")
            self.line(indent, f"{name} = dl_ftape[dl_fp]")
        else:
            self.line(indent, "dl_ip -= 1")
            value = "dl_itape[dl_ip] != 0" if t == BOOL else "dl_itape[dl_ip]"
            self.line(indent, f"{name} = {value}")


def _into_call(e: Eqn, kinds: str, buffer: str, ins: list[str]) -> str:
    """The runtime call that computes equation e into `buffer` (see _BUFFERED)."""
    op = e.op
    if op in _ELEMENTWISE_UNARY:
        return f"dl_rt.ew_{op}_into({buffer}, {ins[0]})"
    if op in _ELEMENTWISE_BINARY:
        return f"dl_rt.ew_{op}_{kinds}_into({buffer}, {ins[0]}, {ins[1]})"
    if op == "matmul":
        name = {(2, 1): "matvec", (1, 2): "vecmat", (2, 2): "matmat"}[(len(e.ins[0].type.shape),
                                                                     len(e.ins[1].type.shape))]
        return f"dl_rt.{name}_into({buffer}, {ins[0]}, {ins[1]})"
    if op == "outer":
        return f"dl_rt.outer_into({buffer}, {ins[0]}, {ins[1]})"
    if op == "zeros":
        return f"dl_rt.fill_into({buffer}, 0.0)"
    return f"dl_rt.fill_into({buffer}, {ins[0]})"  # broadcast


def _buffered(e) -> bool:
    """Array equations that can write into a preallocated buffer."""
    if not isinstance(e, Eqn) or not e.outs or not e.outs[0].type.shape:
        return False
    if e.op in _ELEMENTWISE_UNARY or e.op in _ELEMENTWISE_BINARY or e.op in ("outer", "zeros", "broadcast"):
        return True
    return e.op == "matmul" and bool(e.outs[0].type.shape)


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
    return hoisted, Block(body.params, tuple(rest), body.results), start


FAULT_KINDS = {"index": 1, "while": 2}


def fault_code(kind: str, line: int, col: int) -> int:
    return FAULT_KINDS[kind] * 10**12 + line * 10**6 + col


def decode_fault(code: int) -> tuple[str, int, int]:
    kind = {v: k for k, v in FAULT_KINDS.items()}[code // 10**12]
    return kind, (code // 10**6) % 10**6, code % 10**6


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
              reverse_from: int | None, parallel: bool = False) -> list[str]:
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
    hoisted, row_body, reverse_from = _split_row_invariant(program.body, param_vars, reverse_from)
    w.reverse_from = reverse_from
    chunks = adjoint and parallel
    if chunks:
        extra = ["dl_nchunks", "dl_closs", "dl_cwords"] + [f"dl_c{g}" for g in grads]
    else:
        extra = ["dl_ftape", "dl_itape"] if adjoint else ["dl_losses", "dl_outs"]
    if parallel:
        extra.append("dl_faults")  # per chunk (adjoint) or per row (forward): 0, or a fault code
    jit = _JIT.replace(")", ", parallel=True)") if parallel else _JIT
    lines = [jit, f"def {name}({', '.join(['dl_data'] + params + extra)}):"]
    if hoisted:
        w.line(1, "# the same for every row (params and constants only): computed once")
        w.comments = False
        for e in hoisted:
            w.eqn(e, 1)
        w.comments = True
    depth = 1
    if chunks:
        w.line(1, "dl_n = dl_data.shape[0]")
        w.line(1, "for dl_c in dl_prange(dl_nchunks):")
        w.line(2, "dl_ftape = dl_np.empty(4096)")
        w.line(2, "dl_itape = dl_np.empty(1024, dl_np.int64)")
        w.line(2, "dl_fault = 0")
        depth = 2
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
    if adjoint:
        w.line(body, "while True:  # once, or again with a larger tape if this row's did not fit")
        w.line(body + 1, "dl_fp = 0")
        w.line(body + 1, "dl_ip = 0")
        w.line(body + 1, "dl_over = False")
        w.block(row_body, body + 1, top=True)
        w.line(body + 1, "break")
    else:
        w.block(row_body, body, top=True)
    results = [w.atom(r) for r in program.body.results]
    if adjoint:
        w.line(body, f"dl_loss += {results[0]}")
        for g, r in zip(grads, results[1 + len(program.outputs):]):
            w.line(body, f"{g} += {r}")
    if chunks:
        w.line(2, "dl_closs[dl_c] = dl_loss")
        w.line(2, "dl_cwords[dl_c] = dl_tape_words")
        w.line(2, "dl_faults[dl_c] = dl_fault")
        for g in grads:
            w.line(2, f"dl_c{g}[dl_c] = {g}")
        w.line(1, "return 0")
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
                w.line(2, f"dl_outs[dl_r, {col}:{col + size}] = {w.atom(r)}.ravel()")
                col += size
            else:
                w.line(2, f"dl_outs[dl_r, {col}] = {w.atom(r)}")
                col += 1
        w.line(1, "return dl_losses, dl_outs")
    return lines + w.lines


def generate(program: Program, adjoint: Program, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> str:
    """The Python source of a module with the forward and adjoint kernels of a program."""
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
    return "\n".join(out) + "\n"
