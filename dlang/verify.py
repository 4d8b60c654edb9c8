"""The IR verifier: checks the invariants every pass must keep, with precise messages."""
from __future__ import annotations

from .ir import BOOL, F64, I64, Atom, Block, Eqn, ForLoop, IfElse, Program, Stmt, Var, WhileLoop
from .prims import TypeRuleError, result_type


class IRError(Exception):
    """The IR breaks an invariant: a bug in dlang, never the user's fault."""


def verify(program: Program) -> None:
    """Raise IRError listing every broken invariant in the program."""
    problems: list[str] = []
    _Verifier(problems).program(program)
    if problems:
        raise IRError("invalid IR:\n  " + "\n  ".join(problems))


class _Verifier:
    def __init__(self, problems: list[str]):
        self.problems = problems
        self.defined: set[int] = set()

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def program(self, p: Program) -> None:
        inputs = [d.type for d in p.data] + [q.type for q in p.params]
        if [v.type for v in p.body.params] != inputs:
            self.fail("body", "params do not match the data and param declarations")
        if len(set(p.outputs)) != len(p.outputs):
            self.fail("body", "output names repeat")
        if len(p.body.results) != 1 + len(p.outputs) + len(p.grads):
            self.fail("body", f"returns {len(p.body.results)} values for the loss, {len(p.outputs)} outputs "
                              f"and {len(p.grads)} gradients")
        elif p.body.results and p.body.results[0].type != F64:
            self.fail("body", f"the loss is {p.body.results[0].type}, not f64")
        else:
            types = {q.name: q.type for q in p.params}
            for name, r in zip(p.grads, p.body.results[1 + len(p.outputs):]):
                if types.get(name) != r.type:
                    self.fail("body", f"the gradient of {name} is {r.type}, not {types.get(name)}")
        for q in p.params:
            if q.init[0] not in ("value", "normal", "uniform"):
                self.fail(f"param {q.name}", f"unknown init {q.init[0]}")
        self.block(p.body, set(), "body")

    def define(self, v: Var, scope: set[int], where: str) -> None:
        if v.id in self.defined:
            self.fail(where, f"var {v.id} is defined twice")
        self.defined.add(v.id)
        scope.add(v.id)

    def use(self, a: Atom, scope: set[int], where: str) -> None:
        if isinstance(a, Var) and a.id not in scope:
            self.fail(where, f"var {v_name(a)} is used where it is not defined")

    def block(self, b: Block, outer: set[int], where: str) -> set[int]:
        scope = set(outer)
        for v in b.params:
            self.define(v, scope, where)
        for k, s in enumerate(b.eqns):
            self.stmt(s, scope, f"{where}[{k}]")
        for r in b.results:
            self.use(r, scope, f"{where} results")
        return scope

    def results_match(self, b: Block, outs, where: str, what: str) -> None:
        if [r.type for r in b.results] != [v.type for v in outs]:
            self.fail(where, f"{what} yields ({_types(b.results)}) but the outputs are ({_types(outs)})")

    def stmt(self, s: Stmt, scope: set[int], where: str) -> None:
        where = f"{where} {_describe(s)}"
        if isinstance(s, Eqn):
            for a in s.ins:
                self.use(a, scope, where)
            if s.op == "push":
                if s.outs or len(s.ins) != 1:
                    self.fail(where, "push takes one value and has no outputs")
            elif s.op == "pop":
                if len(s.outs) != 1 or s.ins:
                    self.fail(where, "pop takes nothing and has one output")
            elif len(s.outs) != 1:
                self.fail(where, f"has {len(s.outs)} outputs; every op but push has one")
            else:
                try:
                    want = result_type(s.op, [a.type for a in s.ins], dict(s.params))
                except TypeRuleError as err:
                    self.fail(where, str(err))
                else:
                    if want != s.outs[0].type:
                        self.fail(where, f"output is {s.outs[0].type}, but {s.op} gives {want}")
        elif isinstance(s, ForLoop):
            for a in (s.lo, s.hi, *s.inits):
                self.use(a, scope, where)
            if s.lo.type != I64 or s.hi.type != I64:
                self.fail(where, "loop bounds must be i64")
            params = s.body.params
            if not params or params[0].type != I64:
                self.fail(where, "the first body param must be the i64 index")
            if [v.type for v in params[1:]] != [a.type for a in s.inits]:
                self.fail(where, "carried params do not match the initial values")
            self.block(s.body, scope, where)
            self.results_match(s.body, s.outs, where, "the body")
        elif isinstance(s, WhileLoop):
            for a in s.inits:
                self.use(a, scope, where)
            for b in (s.cond, s.body):
                if [v.type for v in b.params] != [a.type for a in s.inits]:
                    self.fail(where, "block params do not match the initial values")
            self.block(s.cond, scope, where + " cond")
            if [r.type for r in s.cond.results] != [BOOL]:
                self.fail(where, "the condition block must yield one bool")
            self.block(s.body, scope, where + " body")
            self.results_match(s.body, s.outs, where, "the body")
        elif isinstance(s, IfElse):
            self.use(s.cond, scope, where)
            if s.cond.type != BOOL:
                self.fail(where, f"the condition is {s.cond.type}, not bool")
            for b in (s.then, s.orelse):
                if b.params:
                    self.fail(where, "if blocks take no params")
                self.block(b, scope, where)
                self.results_match(b, s.outs, where, "a branch")
        else:
            self.fail(where, f"unknown statement {type(s).__name__}")
            return
        for v in s.outs:
            self.define(v, scope, where)


def v_name(v: Var) -> str:
    return f"%{v.hint or ''}#{v.id}"


def _types(atoms) -> str:
    return ", ".join(str(a.type) for a in atoms)


def _describe(s: Stmt) -> str:
    if isinstance(s, Eqn):
        return s.op
    return type(s).__name__

