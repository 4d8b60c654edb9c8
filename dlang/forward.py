"""Forward-mode AD as a source transformation: a program's IR in, its tangent IR out.

The tangent program runs the primal equations unchanged and, beside each active one, the
equations of its tangents (d value / d t along a direction), built with the JVP rules of the
primitive registry (dlang.prims). Tangents are vectors: one pass carries K directions, each
value having K tangents (None while a tangent is known to be zero, so a one-hot seed costs
nothing until it mixes). Equal equations built for different directions are made once.

Control flow carries tangents the way it carries values: a loop gets K more carried values
per active carried value (its `while` condition block gets them as params too, unused), an
`if` gets K more results per active result. A push of an active value also pushes its K
tangents onto the same tape, and the matching pop takes them back first (last in, first
out), so the transformation applies to an adjoint program too: the tangent program of the
adjoint is forward over reverse, whose tangents of the gradients are Hessian-vector products.

Only values both varied by a seed and useful for a wanted result get tangents (dlang.activity).

Derived programs, each a plain program the kernel passes and codegen take as they are:
- jvp_program: the program and its tangents along K directions given as params (`dot1_NAME`,
  ..., one per param and direction), the tangents of the loss and outputs as extra outputs:
  the Jacobian, K columns per call.
- forward_gradient_program: the gradient by forward mode, a gradient program like the
  adjoint: each param's gradient slot gets sum_k (d loss along direction k) * direction k, so
  a call with K one-hot directions fills K entries of the gradient.
- hvp_program: forward over reverse: with the gradient, K Hessian-vector products H v_k, one
  per direction param set; the gradient slot of direction param `dotk_NAME` holds (H v_k) of
  param NAME.
"""
from __future__ import annotations

from dataclasses import replace

from .activity import TapePairs, activity, carried_slots, differentiable, tape_key
from .builder import Builder
from .ir import (F64, Atom, Block, Eqn, ForLoop, IfElse, Lit, ParamInput, Program, Stmt, Type, Var, WhileLoop,
                 defined_anywhere, renumber, tape_ops)
from .prims import REGISTRY, MissingRule


class Forward(Builder):
    """The tangent transformation of one program's body."""

    def __init__(self, program: Program, directions: int, seeds: dict[int, list], wanted: tuple[Atom, ...],
                 first_id: int):
        if program.prelude or program.sums:
            raise ValueError("forward mode takes a program before the kernel passes (no prelude, no sums)")
        super().__init__(first_id)
        self.k = directions
        seeded = {vid for vid, ts in seeds.items() if any(t is not None for t in ts)}
        self.active = activity(program, seeded, wanted)
        self.pairs = TapePairs.of(program.body)
        self.tan: dict[int, list] = {vid: list(ts) for vid, ts in seeds.items()}
        self.cache: list[dict] = [{}]
        self.tape_next: dict[int, int] = {}
        for e in tape_ops(program.body):
            tape, ident = tape_key(e)
            self.tape_next[tape] = max(self.tape_next.get(tape, 0), ident + 1)
        self.tangent_ids: dict[tuple, list[int]] = {}  # (tape, id) of an active push -> its tangents' ids

    # ---- the builder the JVP rules use --------------------------------------------------------

    def emit(self, name: str, ins, params: tuple, out_type: Type) -> Var:
        """An equal equation built before in this block or an enclosing one (for another
        direction) is reused."""
        key = (name, params, tuple(ins))
        for level in reversed(self.cache):
            if key in level:
                return level[key]
        out = super().emit(name, ins, params, out_type)
        self.cache[-1][key] = out
        return out

    def tangents(self, a: Atom) -> list:
        if isinstance(a, Var) and a.id in self.active:
            return self.tan.get(a.id, [None] * self.k)
        return [None] * self.k

    def materialized(self, t: Atom | None, type_: Type) -> Atom:
        """A tangent as an atom: a zero one made explicit (a literal, or an array of zeros)."""
        if t is not None:
            return t
        return self.op("zeros", shape=type_.shape) if type_.shape else Lit(0.0, F64)

    # ---- the walk -------------------------------------------------------------------------------

    def region(self, eqns, extra) -> tuple[tuple[Stmt, ...], tuple[Atom, ...]]:
        """The statements of a nested block with their tangents, and extra() evaluated at its end."""
        saved, self.stmts = self.stmts, []
        self.cache.append({})
        for s in eqns:
            self.stmt(s)
        results = tuple(extra())
        out, self.stmts = tuple(self.stmts), saved
        self.cache.pop()
        return out, results

    def stmt(self, s: Stmt) -> None:
        self.loc = s.loc
        if isinstance(s, Eqn):
            self.eqn(s)
        elif isinstance(s, (ForLoop, WhileLoop)):
            self.loop(s)
        else:
            self.if_else(s)

    def eqn(self, e: Eqn) -> None:
        if e.op == "push":
            self.push(e)
            return
        if e.op == "pop":
            self.pop(e)
            return
        self.stmts.append(e)
        if not differentiable(e) or not e.outs or e.outs[0].id not in self.active:
            return
        prim = REGISTRY[e.op]
        if prim.jvp is None:
            raise MissingRule(e.op, "forward")
        ins = [self.tangents(a) for a in e.ins]
        out = []
        for k in range(self.k):
            ts = [t[k] for t in ins]
            out.append(None if all(t is None for t in ts) else prim.jvp(self, e, ts))
        self.tan[e.outs[0].id] = out

    def push(self, e: Eqn) -> None:
        """push x: then x's tangents, on the same tape, when the value's pop is active."""
        self.stmts.append(e)
        popped = self.pairs.popped.get(tape_key(e))
        if popped is None or popped.id not in self.active:
            return
        x = e.ins[0]
        tape = tape_key(e)[0]
        ids = []
        for t in self.tangents(x):
            ident = self.tape_next[tape]
            self.tape_next[tape] += 1
            self.stmts.append(Eqn((), "push", (("id", ident), ("tape", tape)), (self.materialized(t, x.type),), e.loc))
            ids.append(ident)
        self.tangent_ids[tape_key(e)] = ids

    def pop(self, e: Eqn) -> None:
        """y = pop: its tangents were pushed after it, so they are popped first, last first."""
        ids = self.tangent_ids.get(tape_key(e))
        y = e.outs[0]
        if ids:
            tape = tape_key(e)[0]
            outs = [self.fresh(y.type, "dot_" + y.hint if y.hint else "") for _ in ids]
            for ident, out in reversed(list(zip(ids, outs))):
                self.stmts.append(Eqn((out,), "pop", (("id", ident), ("tape", tape)), (), e.loc))
            self.tan[y.id] = outs
        self.stmts.append(e)

    def tangent_params(self, params: list[Var]) -> list[Var]:
        return [self.fresh(p.type, "dot_" + p.hint if p.hint else "") for p in params for _ in range(self.k)]

    def loop(self, s: ForLoop | WhileLoop) -> None:
        slots = [(init, param, result, out) for init, param, result, out in carried_slots(s)
                 if param.id in self.active or out.id in self.active]
        inits = tuple(self.materialized(t, init.type) for init, param, _, _ in slots
                      for t in self.tangents(init))
        body_params = self.tangent_params([param for _, param, _, _ in slots])
        for j, (_, param, _, _) in enumerate(slots):
            self.tan[param.id] = body_params[j * self.k:(j + 1) * self.k]

        def tangent_results():
            return [self.materialized(t, result.type) for _, _, result, _ in slots for t in self.tangents(result)]

        eqns, results = self.region(s.body.eqns, tangent_results)
        body = Block(s.body.params + tuple(body_params), eqns, s.body.results + results)
        outs = self.tangent_params([out for _, _, _, out in slots])
        for j, (_, _, _, out) in enumerate(slots):
            self.tan[out.id] = outs[j * self.k:(j + 1) * self.k]
        if isinstance(s, ForLoop):
            new = ForLoop(s.outs + tuple(outs), s.lo, s.hi, s.inits + inits, body, s.loc)
        else:  # the condition block takes the tangents too (it has the carried values' params), unused
            positions = [k for k, (_, param, _, _) in enumerate(carried_slots(s))
                         if param.id in self.active or s.outs[k].id in self.active]
            cond_extra = self.tangent_params([s.cond.params[k] for k in positions])
            cond = Block(s.cond.params + tuple(cond_extra), s.cond.eqns, s.cond.results)
            new = WhileLoop(s.outs + tuple(outs), s.inits + inits, cond, body, s.loc)
        self.stmts.append(new)

    def if_else(self, s: IfElse) -> None:
        slots = [k for k, out in enumerate(s.outs) if out.id in self.active]
        blocks = []
        for branch in (s.then, s.orelse):
            def tangent_results(branch=branch):
                return [self.materialized(t, branch.results[k].type) for k in slots
                        for t in self.tangents(branch.results[k])]

            eqns, results = self.region(branch.eqns, tangent_results)
            blocks.append(Block(branch.params, eqns, branch.results + results))
        outs = self.tangent_params([s.outs[k] for k in slots])
        for j, k in enumerate(slots):
            self.tan[s.outs[k].id] = outs[j * self.k:(j + 1) * self.k]
        self.stmts.append(IfElse(s.outs + tuple(outs), s.cond, blocks[0], blocks[1], s.loc))

    def top(self, body: Block) -> None:
        for s in body.eqns:
            self.stmt(s)
        self.loc = None


def _names(program: Program, directions: int) -> list[list[str]]:
    """The direction params' names: dot1_NAME ... dotK_NAME per param, none taken already."""
    taken = {p.name for p in program.params} | {d.name for d in program.data} | {n for n, _ in program.consts}
    out = []
    for k in range(1, directions + 1):
        row = []
        for p in program.params:
            name = f"dot{k}_{p.name}"
            while name in taken:
                name += "_"
            taken.add(name)
            row.append(name)
        out.append(row)
    return out


def _seeded(program: Program, directions: int):
    """The program's direction params (k-major), their body vars, the seeds of its param vars,
    and the first free id."""
    next_id = max(defined_anywhere(program.body) | {0}) + 1
    names = _names(program, directions)
    inputs, dvars = [], []
    for row in names:
        for p, name in zip(program.params, row):
            inputs.append(ParamInput(name, p.type, ("value", 0.0)))
            dvars.append(Var(next_id, p.type, name))
            next_id += 1
    n = len(program.params)
    seeds = {v.id: [dvars[k * n + j] for k in range(directions)] for j, v in enumerate(program.param_vars)}
    return inputs, dvars, seeds, next_id


def jvp_program(program: Program, directions: int = 1) -> Program:
    """The program with its tangents along `directions` direction params: outputs are the
    program's, then per direction k the tangent of the loss (dotk_loss) and of each output."""
    inputs, dvars, seeds, next_id = _seeded(program, directions)
    n_out = 1 + len(program.outputs)
    wanted = program.body.results[:n_out]
    fwd = Forward(program, directions, seeds, wanted, next_id)
    fwd.top(program.body)
    extra = []
    for k in range(directions):
        extra += [fwd.materialized(fwd.tangents(r)[k], r.type) for r in wanted]
    outputs = list(program.outputs)
    taken = set(outputs) | {p.name for p in program.params} | {i.name for i in inputs}
    for k in range(1, directions + 1):
        for name in ("loss", *program.outputs):
            new = f"dot{k}_{name}"
            while new in taken:
                new += "_"
            taken.add(new)
            outputs.append(new)
    body = Block(program.body.params + tuple(dvars), tuple(fwd.stmts), wanted + tuple(extra))
    return renumber(replace(program, params=program.params + tuple(inputs), outputs=tuple(outputs), body=body,
                            grads=()))


def forward_gradient_program(program: Program, directions: int) -> Program:
    """The gradient by forward mode, shaped like an adjoint program: results (loss, one slot
    per param) where the slot of param p is sum_k (d loss along direction k) * dotk_p."""
    if program.grads:
        raise ValueError("forward_gradient_program takes a program, not a gradient program")
    inputs, dvars, seeds, next_id = _seeded(program, directions)
    loss = program.body.results[0]
    fwd = Forward(program, directions, seeds, (loss,), next_id)
    fwd.top(program.body)
    slopes = fwd.tangents(loss)
    n = len(program.params)
    grads = []
    for j, p in enumerate(program.params):
        total = None
        for k in range(directions):
            if slopes[k] is None:
                continue
            term = fwd.mul(slopes[k], dvars[k * n + j])
            total = term if total is None else fwd.op("add", total, term)
        grads.append(fwd.materialized(total, p.type))
    body = Block(program.body.params + tuple(dvars), tuple(fwd.stmts), (loss, *grads))
    return renumber(replace(program, params=program.params + tuple(inputs), outputs=(), body=body,
                            grads=tuple(p.name for p in program.params)))


def hvp_program(program: Program, directions: int = 1) -> Program:
    """Forward over reverse: the loss, its gradient, and K Hessian-vector products H v_k, the
    directions given as params dotk_NAME. Shaped like an adjoint program: the gradient slot of
    param p holds d loss / d p, that of dotk_p holds (H v_k) of p."""
    from .reverse import reverse_ad

    adjoint = reverse_ad(program)
    inputs, dvars, seeds, next_id = _seeded(adjoint, directions)
    grads = adjoint.body.results[1:]
    fwd = Forward(adjoint, directions, seeds, grads, next_id)
    fwd.top(adjoint.body)
    products = [fwd.materialized(fwd.tangents(g)[k], g.type) for k in range(directions) for g in grads]
    body = Block(adjoint.body.params + tuple(dvars), tuple(fwd.stmts), adjoint.body.results + tuple(products))
    return renumber(replace(adjoint, params=adjoint.params + tuple(inputs), body=body,
                            grads=adjoint.grads + tuple(i.name for i in inputs)))
