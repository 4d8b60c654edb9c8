"""The reference interpreter: evaluates IR on one row in plain Python and NumPy.

It is the oracle the tests hold compiled kernels to, and is never used to compute a result
for the user: it walks the IR one equation at a time and is slow by design. Outside tests it
runs only on an error path, on one row, to find which equation made a kernel's first NaN or
infinity (first_non_finite).
"""
from __future__ import annotations

import numpy as np

from .errors import Diagnostic, RuntimeFault, span_at
from .ir import DEFAULT_MAX_ITERATIONS, Atom, Block, Eqn, ForLoop, Lit, Program, WhileLoop, initial_params
from .prims import IndexOutOfRange, IntOutOfRange, evaluate

__all__ = ["initial_params", "run_body", "run_row", "grad_row", "program_loss", "first_non_finite"]


def run_body(prog: Program, row: dict, params: dict, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> list:
    """The body's results for one row: loss, outputs, then gradients (on an adjoint program;
    a gradient split into row and fixed terms by passes.split_gradient_sums is added back up)."""
    return _Interpreter(prog, max_iterations).run(row, params)


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


def first_non_finite(adjoint: Program, row: dict, params: dict,
                     max_iterations: int = DEFAULT_MAX_ITERATIONS, budget: int = 5_000_000):
    """Where a row's first NaN or infinity comes from: (the equation, whether it is in the
    reverse sweep, its value), None if every value is finite, or "too long" when the row takes
    more than `budget` equations to run (a diagnosis after a kernel gave a non-finite result)."""
    interp = _Interpreter(adjoint, max_iterations)
    interp.watch = _Watch(budget)
    try:
        interp.run(row, params)
    except _Found as found:
        return found.args[0]
    except _TooLong:
        return "too long"
    return None


class _Found(Exception):
    pass


class _TooLong(Exception):
    pass


class _Watch:
    """Stops the interpreter at the first equation whose value is not finite."""

    def __init__(self, budget: int):
        self.budget = budget
        self.in_reverse = False  # whether the sweep statement has run

    def check(self, e: Eqn, value) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise _TooLong
        if not np.all(np.isfinite(value)):
            raise _Found((e, self.in_reverse, value))


class _Interpreter:
    def __init__(self, prog: Program, max_iterations: int):
        self.prog = prog
        self.max_iterations = max_iterations
        self.tapes: dict[int, list] = {}  # tape number -> (id, value) pushed, last on top
        self.watch: _Watch | None = None

    def run(self, row: dict, params: dict) -> list:
        prog = self.prog
        env: dict = {}
        for v, p in zip(prog.param_vars, prog.params):
            env[v.id] = params[p.name]
        self.eqns(prog.prelude, env)
        inputs = [row[d.name] for d in prog.data] + [params[p.name] for p in prog.params]
        results = self.block(prog.body, env, inputs)
        if not prog.sums:
            return results
        head, rest = results[:1 + len(prog.outputs)], results[1 + len(prog.outputs):]
        grads = []
        for g, p in zip(prog.sums, prog.params):
            total = np.zeros(p.type.shape) if p.type.shape else 0.0
            for term in rest[:g.rows] + [self.value(a, env) for a in g.fixed]:
                total = total + term
            del rest[:g.rows]
            grads.append(total)
        return head + grads

    def fault(self, message: str, loc) -> RuntimeFault:
        return RuntimeFault(Diagnostic(message, span_at(loc), self.prog.source_path))

    def value(self, a: Atom, env: dict):
        return a.value if isinstance(a, Lit) else env[a.id]

    def block(self, b: Block, env: dict, args: list) -> list:
        env = dict(env)
        for v, x in zip(b.params, args):
            env[v.id] = x
        self.eqns(b.eqns, env)
        return [self.value(r, env) for r in b.results]

    def eqns(self, stmts, env: dict) -> None:
        for s in stmts:
            if isinstance(s, Eqn) and s.op in ("sweep", "seal"):
                if self.watch and s.op == "sweep":
                    self.watch.in_reverse = True
                continue
            if isinstance(s, Eqn) and s.op == "push":
                x = self.value(s.ins[0], env)
                params = dict(s.params)
                self.tapes.setdefault(params["tape"], []).append((params["id"], x.copy() if isinstance(x, np.ndarray) else x))
                continue
            if isinstance(s, Eqn) and s.op == "pop":
                params = dict(s.params)
                pushed, x = self.tapes[params["tape"]].pop()
                assert pushed == params["id"], f"pop id {params['id']} took the value of push {pushed}"
                env[s.outs[0].id] = x
                continue
            if isinstance(s, Eqn):
                args_ = [self.value(a, env) for a in s.ins]
                try:
                    env[s.outs[0].id] = evaluate(s.op, dict(s.params), args_, s.outs[0].type)
                except IntOutOfRange as err:
                    raise self.fault(f"int() was given {err.value!r}, which is not finite or too large for an int",
                                     s.loc) from None
                except IndexOutOfRange as err:
                    raise self.fault(f"index {list(err.index)} is out of range for an array of shape "
                                     f"{list(err.shape)}", s.loc) from None
                if self.watch and s.outs[0].type.kind == "f64":
                    self.watch.check(s, env[s.outs[0].id])
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

