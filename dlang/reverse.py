"""Reverse-mode AD as a source transformation: a program's IR in, its adjoint IR out.

The adjoint program runs the primal forward, then (after its `sweep` statement) a reverse
sweep over the equations in reverse order, accumulating adjoints (`b_x` is d loss / d x) by
addition with the rules of the primitive registry (dlang.prims). Loops and branches: a value
defined inside a loop body or branch that the reverse sweep reads is pushed onto a tape at the
end of that block in the forward pass and popped at the start of the matching reverse block,
each pop paired with its push by an id; a `while` loop also counts its trips, and its reverse
is a `for` over that count. Only active values (those that depend on a param and reach the
loss) get adjoints, and only values the reverse sweep reads are taped.

Each tape is sealed at one point of the body's top level (`seal[tape=T]`, or the `sweep`,
which also seals this level's tape): all its pushes come before that point, all its pops after.

The tape operations have derivative rules too, so an adjoint program can be differentiated
again: the adjoint of a popped value is pushed onto a cotangent tape where the pop is reversed,
and popped back, last first, where its push is reversed; the reverse of a seal seals the
cotangent tape. Each transformation uses new tape numbers (one for its own values, one per
tape of the program it differentiates), so tapes of different levels never interleave.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .ir import (F64, I64, Atom, Block, Eqn, ForLoop, IfElse, Lit, ParamInput, Program, Stmt, Type, Var, WhileLoop,
                 defined_anywhere, defined_in, renumber, tape_ops, vars_read, walk)
from .activity import TapePairs, activity, carried_slots, differentiable, tape_key
from .builder import Builder
from .prims import REGISTRY, AddAt, MissingRule


def reverse_ad(program: Program) -> Program:
    """The adjoint program: body results are (loss, d loss / d param for every param)."""
    return renumber(_Reverse(program).build())


# ---- the transformation ---------------------------------------------------------------------

@dataclass
class _Context:
    """The reverse of one forward block: what it pops, mapped to the vars that hold them."""

    defined: set[int]
    top_level: bool = False
    is_loop: bool = False
    popped: dict[int, Var] = field(default_factory=dict)  # primal id -> the var holding it here
    needed: list[Var] = field(default_factory=list)  # primal vars, in push order
    prologue: list[Eqn] = field(default_factory=list)  # cheap primal values recomputed here


# Scalar ops cheaper to redo in the reverse sweep than to tape (when their inputs are at hand).
_RECOMPUTE = {"add", "sub", "mul", "neg", "to_float"}


class _Reverse(Builder):
    def __init__(self, program: Program):
        if program.prelude or program.sums:
            raise ValueError("reverse_ad takes a program before the kernel passes (no prelude, no sums)")
        super().__init__(max(defined_anywhere(program.body) | {0}) + 1)
        self.program = program
        self.active = activity(program)
        self.pairs = TapePairs.of(program.body)
        used_tapes = [dict(e.params)["tape"] for e in walk(program.body)
                      if isinstance(e, Eqn) and e.op in ("push", "pop", "seal", "sweep")]
        self.tape = max(used_tapes, default=-1) + 1  # this level's tape: values the sweep reads
        self.next_tape_id = 0
        self.cotangents: dict[tuple, int] = {}  # (tape, id) of a primal pop -> id of its adjoint's push
        self.adj: dict[int, Atom] = {}
        self.contexts: list[_Context] = []
        self.pushes: dict[int, list[tuple[Var, int]]] = {}  # id(forward block) -> (var, tape id) pushed at its end
        self.trips: dict[int, Var] = {}  # id(while statement) -> its trip count
        self.definitions = {e.outs[0].id: e for e in walk(program.body) if isinstance(e, Eqn) and e.outs}
        self.results: list[Atom] = []

    # ---- building blocks used by the rules ----------------------------------------------

    def cotangent_tape(self, tape: int) -> int:
        """The tape the adjoints of a primal tape's popped values go on."""
        return self.tape + 1 + tape

    def tape_params(self, tape: int) -> tuple:
        self.next_tape_id += 1
        return (("id", self.next_tape_id), ("tape", tape))

    def p(self, a: Atom) -> Atom:
        """A primal value, as the reverse sweep sees it.

        Top-level values are still there. A value defined inside a loop body or branch is taped:
        pushed at the end of the forward block and popped at the start of the reverse one. It
        is pushed in the deepest branch (not loop) below its own block that needs it, so a loop
        whose body rarely takes a branch does not tape the branch's inputs every iteration. A
        cheap scalar op (+ - * on values at hand) is recomputed instead of taped."""
        if isinstance(a, Lit):
            return a
        depth = next((k for k in range(len(self.contexts) - 1, -1, -1) if a.id in self.contexts[k].defined), None)
        if depth is None:
            raise AssertionError(f"primal value {a} is not in scope of the reverse sweep")
        if self.contexts[depth].top_level:
            return a
        for ctx in reversed(self.contexts[depth:]):  # already at hand here?
            if a.id in ctx.popped:
                return ctx.popped[a.id]
        current = self.contexts[-1]
        eqn = self.definitions.get(a.id)
        if eqn is not None and eqn.op in _RECOMPUTE and not a.type.shape:
            ins = tuple(self.p(x) for x in eqn.ins)
            new = self.fresh(a.type, a.hint)
            current.prologue.append(Eqn((new,), eqn.op, eqn.params, ins, eqn.loc))
            current.popped[a.id] = new
            return new
        where = depth
        while where + 1 < len(self.contexts) and not self.contexts[where + 1].is_loop:
            where += 1
        ctx = self.contexts[where]
        ctx.popped[a.id] = self.fresh(a.type, a.hint)
        ctx.needed.append(a)
        return ctx.popped[a.id]

    def start(self, ctx: _Context, block: Block, loc) -> tuple[Eqn, ...]:
        """The reverse block's first statements: pop what the forward block pushed (in reverse
        order), then recompute the cheap values. Records the pushes for the forward pass."""
        pushed = [(v, self.tape_params(self.tape)) for v in ctx.needed]
        self.pushes[id(block)] = pushed
        pops = tuple(Eqn((ctx.popped[v.id],), "pop", params, (), loc) for v, params in reversed(pushed))
        return pops + tuple(ctx.prologue)

    def zero(self, t: Type) -> Atom:
        return self.op("zeros", shape=t.shape) if t.shape else Lit(0.0, F64)

    def adjoint(self, a: Atom) -> Atom | None:
        return self.adj.get(a.id) if isinstance(a, Var) else None

    def adjoint_or_zero(self, a: Atom, t: Type) -> Atom:
        cur = self.adjoint(a)
        return cur if cur is not None else self.zero(t)

    def accumulate(self, x: Atom, contribution) -> None:
        if not isinstance(x, Var) or x.id not in self.active:
            return
        cur = self.adj.get(x.id)
        if isinstance(contribution, AddAt):
            base = cur if cur is not None else self.zero(x.type)
            new = self.op("addindex", base, contribution.value, *contribution.idx)
        else:
            if contribution.type.shape and not x.type.shape:  # x was broadcast: sum it back
                contribution = self.op("sum", contribution)
            new = contribution if cur is None else self.op("add", cur, contribution)
        self.adj[x.id] = self.named(new, x)

    def named(self, new: Atom, x: Var) -> Atom:
        """Name a just-made adjoint after its primal (b_x), for readable emitted code."""
        last = self.stmts[-1] if self.stmts else None
        if not x.hint or not isinstance(new, Var) or new.hint or not isinstance(last, Eqn) or last.outs != (new,):
            return new
        renamed = Var(new.id, new.type, "b_" + x.hint)
        self.stmts[-1] = replace(last, outs=(renamed,))
        return renamed

    # ---- the walk ---------------------------------------------------------------------------

    def build(self) -> Program:
        prog = self.program
        body = prog.body
        top = _Context(defined_in(body), top_level=True)
        self.contexts.append(top)
        reverse = self.region(lambda: self.reverse_top(body))
        self.contexts.pop()
        forward = self.forward(body)
        self.stmts = []
        grads = [self.adjoint_or_zero(v, v.type) for v in prog.param_vars]
        tail = tuple(self.stmts)
        sweep = Eqn((), "sweep", (("tape", self.tape),), (), None)
        block = Block(body.params, forward.eqns + (sweep,) + reverse + tail, (body.results[0], *grads))
        return replace(prog, outputs=(), body=block, grads=tuple(p.name for p in prog.params))

    def region(self, fn) -> tuple[Stmt, ...]:
        saved, self.stmts = self.stmts, []
        fn()
        out, self.stmts = tuple(self.stmts), saved
        return out

    def reverse_top(self, body: Block) -> None:
        self.accumulate(body.results[0], Lit(1.0, F64))
        for s in reversed(body.eqns):
            self.reverse_stmt(s)

    def reverse_stmt(self, s: Stmt) -> None:
        self.loc = s.loc
        if isinstance(s, Eqn):
            self.reverse_eqn(s)
        elif isinstance(s, (ForLoop, WhileLoop)):
            self.reverse_loop(s)
        else:
            self.reverse_if(s)

    def reverse_eqn(self, e: Eqn) -> None:
        if e.op == "pop":
            self.reverse_pop(e)
            return
        if e.op == "push":
            self.reverse_push(e)
            return
        if e.op in ("seal", "sweep"):  # the primal tape's pops are reversed (they came after): seal their adjoints
            tape = dict(e.params)["tape"]
            if any(key[0] == tape for key in self.cotangents):
                self.stmts.append(Eqn((), "seal", (("tape", self.cotangent_tape(tape)),), (), e.loc))
            return
        if not differentiable(e) or not e.outs:
            return
        ct = self.adjoint(e.outs[0])
        if ct is None or e.outs[0].id not in self.active:
            return
        prim = REGISTRY[e.op]
        if prim.vjp is None:
            raise MissingRule(e.op)
        thunks = prim.vjp(self, e, ct)
        for x, thunk in zip(e.ins, thunks):
            if thunk is not None and isinstance(x, Var) and x.id in self.active:
                self.accumulate(x, thunk())

    def reverse_pop(self, e: Eqn) -> None:
        """y = pop: y's adjoint goes onto the cotangent tape, for the reverse of its push."""
        y = e.outs[0]
        ct = self.adjoint(y)
        if ct is None or y.id not in self.active:
            return
        params = self.tape_params(self.cotangent_tape(tape_key(e)[0]))
        self.cotangents[tape_key(e)] = dict(params)["id"]
        self.stmts.append(Eqn((), "push", params, (ct,), self.loc))

    def reverse_push(self, e: Eqn) -> None:
        """push x: x's adjoint gains what its pop's adjoint was (taken back off the cotangent tape)."""
        x = e.ins[0]
        cid = self.cotangents.get(tape_key(e))
        if cid is None or not isinstance(x, Var) or x.id not in self.active:
            return
        got = self.fresh(x.type, "b_" + x.hint if x.hint else "")
        tape = self.cotangent_tape(tape_key(e)[0])
        self.stmts.append(Eqn((got,), "pop", (("id", cid), ("tape", tape)), (), self.loc))
        self.accumulate(x, got)

    def pending_pushes(self, blocks: list[Block]) -> bool:
        """Whether these blocks push values whose pops' adjoints are on the cotangent tape."""
        return any(e.op == "push" and tape_key(e) in self.cotangents for b in blocks for e in tape_ops(b))

    def free_adjoints(self, blocks: list[Block]) -> list[Var]:
        """Active values defined outside these blocks that they read: their adjoints flow through."""
        inside: set[int] = set()
        for b in blocks:
            inside |= defined_anywhere(b)
        free = []
        for b in blocks:
            for v in vars_read(b):
                if v.id in self.active and v.id not in inside and v not in free:
                    free.append(v)
        return free

    def reverse_loop(self, s: ForLoop | WhileLoop) -> None:
        slots = [(init, param, result, out) for init, param, result, out in carried_slots(s)
                 if param.id in self.active or out.id in self.active]
        if not any(self.adjoint(out) is not None for _, _, _, out in slots) and not self.pending_pushes([s.body]):
            return  # no adjoint reaches this loop's results, nor its pushes
        free = self.free_adjoints([s.body])
        if isinstance(s, ForLoop):
            lo, hi = self.p(s.lo), self.p(s.hi)
        else:
            trips = self.trips.setdefault(id(s), self.fresh(I64, "trips"))
            self.contexts[-1].defined.add(trips.id)
            lo, hi = Lit(0, I64), self.p(trips)
        inits = [self.adjoint_or_zero(out, out.type) for _, _, _, out in slots]
        inits += [self.adjoint_or_zero(f, f.type) for f in free]
        k = self.fresh(I64, "k")
        b_yields = [self.fresh(out.type, "b_" + out.hint if out.hint else "") for _, _, _, out in slots]
        b_free = [self.fresh(f.type, "b_" + f.hint if f.hint else "") for f in free]
        saved = {f.id: self.adj.get(f.id) for f in free}
        for f, bf in zip(free, b_free):
            self.adj[f.id] = bf
        ctx = _Context(defined_in(s.body), is_loop=True)
        self.contexts.append(ctx)

        def body():
            for (_, _, result, _), by in zip(slots, b_yields):
                self.accumulate(result, by)
            for inner in reversed(s.body.eqns):
                self.reverse_stmt(inner)
            self.loc = s.loc
            self.results = [self.adjoint_or_zero(param, param.type) for _, param, _, _ in slots]
            self.results += [self.adjoint_or_zero(f, f.type) for f in free]

        eqns = self.region(body)
        self.contexts.pop()
        results = self.results
        block = Block((k, *b_yields, *b_free), self.start(ctx, s.body, s.loc) + eqns, tuple(results))
        outs = tuple(self.fresh(a.type, a.hint if isinstance(a, Var) else "") for a in results)  # a result may be a literal 0.0
        for f in free:
            self.adj[f.id] = saved[f.id]
        self.stmts.append(ForLoop(outs, lo, hi, tuple(inits), block, s.loc))
        for f, out in zip(free, outs[len(slots):]):  # first: an init may itself be a free value
            self.adj[f.id] = out
        for (init, _, _, _), out in zip(slots, outs):
            self.accumulate(init, out)

    def reverse_if(self, s: IfElse) -> None:
        slots = [(a, b, out) for a, b, out in zip(s.then.results, s.orelse.results, s.outs)
                 if out.id in self.active and self.adjoint(out) is not None]
        if not slots and not self.pending_pushes([s.then, s.orelse]):
            return
        cond = self.p(s.cond)
        free = self.free_adjoints([s.then, s.orelse])
        cts = [self.adjoint(out) for _, _, out in slots]
        branches = []
        for index, block in enumerate((s.then, s.orelse)):
            saved = dict(self.adj)
            ctx = _Context(defined_in(block))
            self.contexts.append(ctx)

            def body():
                for slot, ct in zip(slots, cts):
                    self.accumulate(slot[index], ct)
                for inner in reversed(block.eqns):
                    self.reverse_stmt(inner)
                self.loc = s.loc
                self.results = [self.adjoint_or_zero(f, f.type) for f in free]

            eqns = self.region(body)
            self.contexts.pop()
            branches.append(Block((), self.start(ctx, block, s.loc) + eqns, tuple(self.results)))
            self.adj = saved
        outs = tuple(self.fresh(f.type, "b_" + f.hint if f.hint else "") for f in free)
        self.stmts.append(IfElse(outs, cond, branches[0], branches[1], s.loc))
        for f, out in zip(free, outs):
            self.adj[f.id] = out

    # ---- the forward pass, with pushes --------------------------------------------------------

    def forward(self, block: Block, nested: bool = False) -> Block:
        eqns: list[Stmt] = []
        for s in block.eqns:
            if isinstance(s, Eqn):  # a previous level's sweep is only a seal of its tape here
                eqns.append(replace(s, op="seal") if s.op == "sweep" else s)
            elif isinstance(s, ForLoop):
                eqns.append(replace(s, body=self.forward(s.body, True)))
            elif isinstance(s, IfElse):
                eqns.append(replace(s, then=self.forward(s.then, True), orelse=self.forward(s.orelse, True)))
            else:
                eqns.append(self.counted_while(s))
        for v, params in self.pushes.get(id(block), []) if nested else []:
            eqns.append(Eqn((), "push", params, (v,), None))
        return Block(block.params, tuple(eqns), block.results)

    def counted_while(self, s: WhileLoop) -> WhileLoop:
        body = self.forward(s.body, True)
        trips = self.trips.get(id(s))
        if trips is None:
            return replace(s, body=body)
        count_c, count_b, count_next = self.fresh(I64, "count"), self.fresh(I64, "count"), self.fresh(I64, "count")
        cond = replace(s.cond, params=s.cond.params + (count_c,))
        step = Eqn((count_next,), "add", (), (count_b, Lit(1, I64)), s.loc)
        body = Block(body.params + (count_b,), body.eqns + (step,), body.results + (count_next,))
        return WhileLoop(s.outs + (trips,), s.inits + (Lit(0, I64),), cond, body, s.loc)


def gradient_dot_program(program: Program) -> Program:
    """A program to differentiate a gradient with: the params of `program`, then one direction
    param per param (named dir_NAME, of its shape), and as loss the gradient of `program`'s
    loss dotted with the directions. Its gradient with respect to the first params is the
    Hessian times the directions (reverse over reverse), with respect to the directions the
    gradient itself."""
    adjoint = reverse_ad(program)
    taken = {p.name for p in program.params} | {d.name for d in program.data}
    next_id = max(defined_anywhere(adjoint.body)) + 1
    directions, inputs = [], []
    for p in program.params:
        name = "dir_" + p.name
        while name in taken:
            name += "_"
        taken.add(name)
        directions.append(Var(next_id, p.type, name))
        inputs.append(ParamInput(name, p.type, ("value", 0.0)))
        next_id += 1
    eqns = list(adjoint.body.eqns)
    total: Atom = Lit(0.0, F64)
    for g, v in zip(adjoint.body.results[1:], directions):
        term = Var(next_id, v.type)
        eqns.append(Eqn((term,), "mul", (), (g, v), None))
        next_id += 1
        if v.type.shape:
            summed = Var(next_id, F64)
            eqns.append(Eqn((summed,), "sum", (), (term,), None))
            next_id += 1
            term = summed
        new = Var(next_id, F64, "gradient_dot")
        eqns.append(Eqn((new,), "add", (), (total, term), None))
        next_id += 1
        total = new
    body = Block(adjoint.body.params + tuple(directions), tuple(eqns), (total,))
    return renumber(replace(adjoint, params=adjoint.params + tuple(inputs), body=body, grads=()))
