"""The reference interpreter: evaluates IR on one row in plain Python and NumPy.

It is the oracle the tests hold compiled kernels to, and is never used to train: it walks
the IR one equation at a time and is slow by design.
"""
from __future__ import annotations

import csv
import zlib

import numpy as np

from .errors import Diagnostic, InputError, RuntimeFault, Span
from .ir import Atom, Block, Eqn, ForLoop, Lit, Program, WhileLoop
from .prims import IndexOutOfRange, evaluate

DEFAULT_MAX_ITERATIONS = 100_000_000


def initial_params(prog: Program, seed: int = 0) -> dict[str, float | np.ndarray]:
    """Each param's starting value. Random starts draw from a generator seeded by (seed, name),
    so adding a param does not change the others' values."""
    values: dict[str, float | np.ndarray] = {}
    for p in prog.params:
        kind, a, *rest = p.init
        if kind == "value":
            values[p.name] = np.full(p.type.shape, a) if p.type.shape else float(a)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(p.name.encode())])
        b = rest[0]
        draw = rng.normal(a, b, p.type.shape) if kind == "normal" else rng.uniform(a, b, p.type.shape)
        values[p.name] = draw if p.type.shape else float(draw)
    return values


def data_columns(name: str, size: int, header: list[str]) -> list[str]:
    """The CSV columns of `data name[size]`: name_0 ... or name0 ..."""
    for sep in ("_", ""):
        cols = [f"{name}{sep}{k}" for k in range(size)]
        if all(c in header for c in cols):
            return cols
    return [f"{name}_{k}" for k in range(size)]


def read_rows(prog: Program, csv_path: str) -> list[dict[str, float | np.ndarray]]:
    """The data values of every CSV row, by data name (vectors as 1-D arrays)."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        table = list(csv.reader(f))
    if not table:
        raise InputError(Diagnostic("the file is empty; expected a header row", None, csv_path))
    header = [h.strip() for h in table[0]]
    where: dict[str, list[int] | int] = {}
    for d in prog.data:
        cols = data_columns(d.name, d.type.shape[0], header) if d.type.shape else [d.name]
        for c in cols:
            if c not in header:
                raise InputError(Diagnostic(f"no column '{c}' (needed by data {d.name})", None, csv_path))
        idx = [header.index(c) for c in cols]
        where[d.name] = idx if d.type.shape else idx[0]
    rows = []
    for r, line in enumerate(table[1:], start=2):
        if not line:
            continue
        row: dict[str, float | np.ndarray] = {}
        for name, idx in where.items():
            cells = idx if isinstance(idx, list) else [idx]
            vals = []
            for c in cells:
                try:
                    v = float(line[c])
                except (ValueError, IndexError):
                    raise InputError(Diagnostic(f"row {r}, column '{header[c]}': not a number", None,
                                                csv_path)) from None
                if not np.isfinite(v):
                    raise InputError(Diagnostic(f"row {r}, column '{header[c]}': not a finite number", None,
                                                csv_path))
                vals.append(v)
            row[name] = np.array(vals) if isinstance(idx, list) else vals[0]
        rows.append(row)
    return rows


def run_body(prog: Program, row: dict, params: dict, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> list:
    """The body's results for one row: loss, outputs, then gradients (on an adjoint program)."""
    inputs = [row[d.name] for d in prog.data] + [params[p.name] for p in prog.params]
    return _Interpreter(prog, max_iterations).block(prog.body, {}, inputs)


def run_row(prog: Program, row: dict, params: dict, max_iterations: int = DEFAULT_MAX_ITERATIONS):
    """(loss, {output name: value}) for one row of data."""
    loss, *outs = run_body(prog, row, params, max_iterations)[: 1 + len(prog.outputs)]
    return float(loss), dict(zip(prog.outputs, outs))


def grad_row(adjoint: Program, row: dict, params: dict) -> tuple[float, dict]:
    """(loss, {param: gradient}) for one row, by interpreting an adjoint program."""
    results = run_body(adjoint, row, params)
    grads = results[1 + len(adjoint.outputs):]
    return float(results[0]), dict(zip(adjoint.grads, grads))


def program_loss(prog: Program, rows: list[dict] | None, params: dict | None = None) -> float:
    """The mean of each row's loss (with no data, the body runs once on an empty row)."""
    params = initial_params(prog) if params is None else params
    if not prog.data:
        rows = [{}]
    losses = [run_row(prog, row, params)[0] for row in rows]
    return float(np.mean(losses))


class _Interpreter:
    def __init__(self, prog: Program, max_iterations: int):
        self.prog = prog
        self.max_iterations = max_iterations
        self.tape: list = []

    def fault(self, message: str, loc) -> RuntimeFault:
        span = Span(loc[0], loc[1], loc[0], loc[1] + 1) if loc else None
        return RuntimeFault(Diagnostic(message, span, self.prog.source_path))

    def value(self, a: Atom, env: dict):
        return a.value if isinstance(a, Lit) else env[a.id]

    def block(self, b: Block, env: dict, args: list) -> list:
        env = dict(env)
        for v, x in zip(b.params, args):
            env[v.id] = x
        for s in b.eqns:
            if isinstance(s, Eqn) and s.op == "push":
                x = self.value(s.ins[0], env)
                self.tape.append(x.copy() if isinstance(x, np.ndarray) else x)
                continue
            if isinstance(s, Eqn) and s.op == "pop":
                env[s.outs[0].id] = self.tape.pop()
                continue
            if isinstance(s, Eqn):
                args_ = [self.value(a, env) for a in s.ins]
                try:
                    env[s.outs[0].id] = evaluate(s.op, dict(s.params), args_, s.outs[0].type)
                except IndexOutOfRange as err:
                    raise self.fault(f"index {list(err.index)} is out of range for an array of shape "
                                     f"{list(err.shape)}", s.loc) from None
                continue
            if isinstance(s, ForLoop):
                carried = [self.value(a, env) for a in s.inits]
                for i in range(self.value(s.lo, env), self.value(s.hi, env)):
                    carried = self.block(s.body, env, [i, *carried])
                outs = carried
            elif isinstance(s, WhileLoop):
                carried = [self.value(a, env) for a in s.inits]
                count = 0
                while self.block(s.cond, env, carried)[0]:
                    count += 1
                    if count > self.max_iterations:
                        raise self.fault(f"the while loop ran more than {self.max_iterations} times", s.loc)
                    carried = self.block(s.body, env, carried)
                outs = carried
            else:
                taken = s.then if self.value(s.cond, env) else s.orelse
                outs = self.block(taken, env, [])
            for v, x in zip(s.outs, outs):
                env[v.id] = x
        return [self.value(r, env) for r in b.results]

