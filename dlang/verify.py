"""The IR verifier: checks the invariants every pass must keep, with precise messages."""
from __future__ import annotations

from .ir import BOOL, F64, I64, Atom, Block, Eqn, ForLoop, IfElse, Program, Stmt, Var, WhileLoop, walk
from .prims import REGISTRY, TypeRuleError, result_type


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
        self.pushes: dict[tuple, tuple] = {}  # (tape, id) -> (value, position, where)
        self.pops: dict[tuple, tuple] = {}
        self.push_groups: list[tuple[int, list[int]]] = []  # (tape, ids) pushed by one block, in order
        self.seals: dict[int, int] = {}  # tape -> position of its seal (or the sweep)
        self.position = 0  # statements seen, in program order
        self.sweeps = 0

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def program(self, p: Program) -> None:
        inputs = [d.type for d in p.data] + [q.type for q in p.params]
        if [v.type for v in p.body.params] != inputs:
            self.fail("body", "params do not match the data and param declarations")
        if len(set(p.outputs)) != len(p.outputs):
            self.fail("body", "output names repeat")
        self.results(p)
        for q in p.params:
            if q.init[0] not in ("value", "normal", "uniform"):
                self.fail(f"param {q.name}", f"unknown init {q.init[0]}")
        scope: set[int] = set()
        for v in p.body.params:
            self.define(v, scope, "body")
        self.prelude(p, scope)
        self.block(p.body, scope, "body", top=True, params_defined=True)
        for k, g in enumerate(p.sums):
            for a in g.fixed:
                self.use(a, self.prelude_scope, f"sum {k}")
        if self.sweeps > 1:  # a gradient by forward mode has none
            self.fail("body", f"a gradient program has at most one sweep at its top level, not {self.sweeps}")
        self.tapes()

    def results(self, p: Program) -> None:
        grads = sum(g.rows for g in p.sums) if p.sums else len(p.grads)
        if p.sums and len(p.sums) != len(p.grads):
            self.fail("body", f"{len(p.sums)} gradient sums for {len(p.grads)} gradients")
        if len(p.body.results) != 1 + len(p.outputs) + grads:
            self.fail("body", f"returns {len(p.body.results)} values for the loss, {len(p.outputs)} outputs "
                              f"and {grads} gradient terms")
            return
        if p.body.results and p.body.results[0].type != F64:
            self.fail("body", f"the loss is {p.body.results[0].type}, not f64")
        types = {q.name: q.type for q in p.params}
        for name, (rows, fixed) in zip(p.grads, p.grad_terms()):
            for r in rows + fixed:
                if types.get(name) != r.type:
                    self.fail("body", f"a gradient term of {name} is {r.type}, not {types.get(name)}")

    def prelude(self, p: Program, scope: set[int]) -> None:
        """The prelude reads only params, literals and its own values, and holds plain equations."""
        params = {v.id for v in p.param_vars}
        self.prelude_scope = set(params)
        for k, e in enumerate(p.prelude):
            where = f"prelude[{k}] {getattr(e, 'op', type(e).__name__)}"
            prim = REGISTRY.get(getattr(e, "op", None))
            if not isinstance(e, Eqn) or prim is None or prim.structural or prim.checked_at_run_time(e.ins):
                self.fail(where, "the prelude holds only plain equations (nothing checked at run time)")
                continue
            self.eqn(e, self.prelude_scope, where)
            for v in e.outs:
                self.define(v, self.prelude_scope, where)
                scope.add(v.id)

    def define(self, v: Var, scope: set[int], where: str) -> None:
        if v.id in self.defined:
            self.fail(where, f"var {v_name(v)} is defined twice")
        self.defined.add(v.id)
        scope.add(v.id)

    def use(self, a: Atom, scope: set[int], where: str) -> None:
        if isinstance(a, Var) and a.id not in scope:
            self.fail(where, f"var {v_name(a)} is used where it is not defined")

    def block(self, b: Block, outer: set[int], where: str, top: bool = False,
              params_defined: bool = False) -> set[int]:
        scope = set(outer)
        if not params_defined:
            for v in b.params:
                self.define(v, scope, where)
        for k, s in enumerate(b.eqns):
            self.position += 1
            self.stmt(s, scope, f"{where}[{k}]", top)
        for r in b.results:
            self.use(r, scope, f"{where} results")
        self.lifo(b, where)
        return scope

    def results_match(self, b: Block, outs, where: str, what: str) -> None:
        if [r.type for r in b.results] != [v.type for v in outs]:
            self.fail(where, f"{what} yields ({_types(b.results)}) but the outputs are ({_types(outs)})")

    def eqn(self, s: Eqn, scope: set[int], where: str, top: bool = False) -> None:
        for a in s.ins:
            self.use(a, scope, where)
        prim = REGISTRY.get(s.op)
        if prim is None:
            self.fail(where, f"no op {s.op} (it is not in the primitive registry)")
            return
        params = dict(s.params)
        if "buffer" in params and not (top and s.outs and s.outs[0].type.shape):
            self.fail(where, "only an array the row body computes at its top level has a buffer")
        if s.op == "push":
            if s.outs or len(s.ins) != 1:
                self.fail(where, "push takes one value and has no outputs")
            else:
                self.tape_op(s, params, self.pushes, s.ins[0], where)
        elif s.op == "pop":
            if len(s.outs) != 1 or s.ins:
                self.fail(where, "pop takes nothing and has one output")
            else:
                self.tape_op(s, params, self.pops, s.outs[0], where)
        elif s.op in ("sweep", "seal"):
            if s.outs or s.ins:
                self.fail(where, f"{s.op} takes nothing and has no outputs")
            if not top:
                self.fail(where, f"a {s.op} is at the top level of the body")
            tape = params.get("tape")
            if not isinstance(tape, int):
                self.fail(where, f"{s.op} needs an int param tape")
            elif tape in self.seals:
                self.fail(where, f"tape {tape} is sealed twice")
            else:
                self.seals[tape] = self.position
            self.sweeps += s.op == "sweep"
        elif len(s.outs) != 1:
            self.fail(where, f"has {len(s.outs)} outputs; every op but push and sweep has one")
        else:
            try:
                want = result_type(s.op, [a.type for a in s.ins], params)
            except TypeRuleError as err:
                self.fail(where, str(err))
            else:
                if want != s.outs[0].type:
                    self.fail(where, f"output is {s.outs[0].type}, but {s.op} gives {want}")

    def tape_op(self, s: Eqn, params: dict, table: dict, value, where: str) -> None:
        key = (params.get("tape"), params.get("id"))
        if not all(isinstance(k, int) for k in key):
            self.fail(where, f"{s.op} needs int params tape and id, not {s.params}")
            return
        if key in table:
            self.fail(where, f"a second {s.op} with tape {key[0]} id {key[1]}")
        table[key] = (value, self.position, where)

    def tapes(self) -> None:
        """Each push has exactly one pop of the same tape and id, of its type; a tape's pushes all
        come before its seal, its pops after."""
        for table, what, before in ((self.pushes, "push", True), (self.pops, "pop", False)):
            for (tape, k), (_, at, where) in table.items():
                sealed = self.seals.get(tape)
                if sealed is None:
                    self.fail(where, f"{what} of tape {tape} id {k}: the tape is never sealed")
                elif (at < sealed) != before:
                    self.fail(where, f"{what} of tape {tape} id {k} is on the wrong side of its seal")
        for key, (value, at, where) in self.pushes.items():
            if key not in self.pops:
                self.fail(where, f"push of tape {key[0]} id {key[1]} has no pop")
                continue
            popped, pop_at, pop_where = self.pops[key]
            if popped.type != value.type:
                self.fail(pop_where, f"pop of tape {key[0]} id {key[1]} is {popped.type}, but its push stores "
                                     f"{value.type}")
            if pop_at <= at:
                self.fail(pop_where, f"pop of tape {key[0]} id {key[1]} comes before its push")
        for key, (_, _, where) in self.pops.items():
            if key not in self.pushes:
                self.fail(where, f"pop of tape {key[0]} id {key[1]} has no push")

    def lifo(self, b: Block, where: str) -> None:
        """A block's pops of one tape take back, last first, what one block pushed."""
        pops: dict[int, list[int]] = {}
        for s in b.eqns:
            if isinstance(s, Eqn) and s.op == "pop":
                params = dict(s.params)
                pops.setdefault(params.get("tape"), []).append(params.get("id"))
        pushes: dict[int, list[int]] = {}
        for s in b.eqns:
            if isinstance(s, Eqn) and s.op == "push":
                params = dict(s.params)
                pushes.setdefault(params.get("tape"), []).append(params.get("id"))
        for tape, ids in pushes.items():
            self.push_groups.append((tape, ids))
        for tape, ids in pops.items():
            group = next((g for t, g in self.push_groups if t == tape and set(g) & set(ids)), None)
            if group is not None and list(reversed(group)) != ids:
                self.fail(where, f"the pops of tape {tape} ({ids}) do not take back, last first, "
                                 f"what one block pushed ({group})")

    def stmt(self, s: Stmt, scope: set[int], where: str, top: bool) -> None:
        where = f"{where} {_describe(s)}"
        if isinstance(s, Eqn):
            self.eqn(s, scope, where, top)
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
            if any(isinstance(x, Eqn) and x.op in ("push", "pop") for x in walk(s.cond)):
                self.fail(where, "a while condition does not use the tape")
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
