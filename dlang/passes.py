"""The optimisation passes the kernels are made with: IR in, IR out, one public verb each.

dlang.pipeline lists them in the order they run; `dlang emit --stage NAME` prints a program
after any of them, and the tests verify the IR after each. The code generator only renders
what these passes decide: which equations run once per call (the prelude), how a gradient is
added up over the rows, where a division becomes a multiplication, which arrays get a buffer.
"""
from __future__ import annotations

from dataclasses import replace

from .ir import (F64, I64, Atom, Block, Eqn, ForLoop, GradSum, IfElse, Lit, Program, Stmt, Type, Var, WhileLoop,
                 blocks_of, reads, renumber, size, walk, with_blocks)
from .prims import REGISTRY

_KEPT = {p.name for p in REGISTRY.values() if p.structural}  # the tape must balance; seals mark points


def eliminate_dead_code(program: Program) -> Program:
    """Drop equations whose results nothing reads (tape operations and the sweep always stay).

    The adjoint program has no outputs, so the primal work that only fed an output goes too.
    Loops and branches stay whole: their carried values are read by their own bodies."""
    body = program.body
    while True:
        used = _used_ids(body) | {a.id for e in program.prelude for a in e.ins if isinstance(a, Var)}
        used |= {a.id for g in program.sums for a in g.fixed if isinstance(a, Var)}
        new = _prune(body, used)
        prelude = tuple(e for e in program.prelude if any(v.id in used for v in e.outs))
        if new == body and prelude == program.prelude:
            return renumber(replace(program, body=body, prelude=prelude))
        body, program = new, replace(program, prelude=prelude)


def _used_ids(block: Block) -> set[int]:
    used: set[int] = set()
    for s in walk(block):
        used |= {a.id for a in reads(s) if isinstance(a, Var)}
        for inner in blocks_of(s):
            used |= {a.id for a in inner.results if isinstance(a, Var)}
    return used | {a.id for a in block.results if isinstance(a, Var)}


def _prune(block: Block, used: set[int]) -> Block:
    eqns: list[Stmt] = []
    for s in block.eqns:
        if isinstance(s, Eqn):
            if s.op in _KEPT or any(v.id in used for v in s.outs):
                eqns.append(s)
        else:
            eqns.append(with_blocks(s, lambda b: _prune(b, used)))
    return Block(block.params, tuple(eqns), block.results)


def without_outputs(program: Program) -> Program:
    """The program computing only each row's loss: what a kernel that sums the loss needs
    (dead-code elimination then drops the work that only fed outputs)."""
    body = replace(program.body, results=program.body.results[:1])
    return replace(program, outputs=(), body=body)


# ---- what runs once per call --------------------------------------------------------------------

def _hoistable(e: Stmt, invariant: set[int]) -> bool:
    if not isinstance(e, Eqn) or len(e.outs) != 1 or "buffer" in dict(e.params):
        return False
    prim = REGISTRY[e.op]
    if prim.structural:
        return False
    if prim.checked_at_run_time(e.ins):
        return False  # checked at run time: a fault needs the row it happened in
    return all(isinstance(a, Lit) or a.id in invariant for a in e.ins)


def hoist_invariants(program: Program) -> Program:
    """Top-level equations that read only params, literals and each other are the same for
    every row: they move to the prelude, which a kernel runs once per call."""
    invariant = {v.id for v in program.param_vars} | {e.outs[0].id for e in program.prelude}
    prelude, rest = list(program.prelude), []
    for s in program.body.eqns:
        if _hoistable(s, invariant):
            prelude.append(s)
            invariant.add(s.outs[0].id)
        else:
            rest.append(s)
    body = replace(program.body, eqns=tuple(rest))
    return renumber(replace(program, body=body, prelude=tuple(prelude)))


# ---- how a gradient is added up over the rows ----------------------------------------------------

def use_counts(program: Program) -> dict[int, int]:
    """How many times each var is read in the body (statements, block results, body results)."""
    uses: dict[int, int] = {}

    def use(atoms) -> None:
        for a in atoms:
            if isinstance(a, Var):
                uses[a.id] = uses.get(a.id, 0) + 1

    for s in walk(program.body):
        use(reads(s))
        for inner in blocks_of(s):
            use(inner.results)
    use(program.body.results)
    return uses


def split_gradient_sums(program: Program) -> Program:
    """A param's gradient per row is often a sum of a term that varies by row and one that does
    not (the adjoint of a penalty on params: a ridge term). Each row adds up only the varying
    terms; each invariant term is added once, times the number of rows (a GradSum per param).
    A gradient packed from scalars (scalarize) is split element by element. The additions this
    takes apart are dropped from the body."""
    if not program.grads or program.sums:
        return program
    uses = use_counts(program)
    invariant = {v.id for v in program.param_vars} | {e.outs[0].id for e in program.prelude}
    eqns = list(program.body.eqns)
    sweep = next((k for k, e in enumerate(eqns) if isinstance(e, Eqn) and e.op == "sweep"), -1)  # -1: forward mode
    defined = {e.outs[0].id: k for k, e in enumerate(eqns)
               if k > sweep and isinstance(e, Eqn) and len(e.outs) == 1}
    dead: set[int] = set()
    next_id = [max(_all_ids(program)) + 1]
    tail: list[Eqn] = []  # the row parts of packed gradients, added up again
    prelude = list(program.prelude)  # ... and their fixed parts

    def terms(a: Atom, rows: list, fixed: list) -> None:
        k = defined.get(a.id) if isinstance(a, Var) and uses.get(a.id) == 1 else None
        e = eqns[k] if k is not None else None
        if isinstance(a, Lit) or a.id in invariant:
            fixed.append(a)
        elif e is not None and e.op == "add" and all(x.type == a.type for x in e.ins):
            dead.add(k)
            for x in e.ins:
                terms(x, rows, fixed)
        else:
            rows.append(a)

    def added(atoms: list, into: list) -> Atom:
        total = atoms[0] if atoms else Lit(0.0, F64)
        for a in atoms[1:]:
            out = Var(next_id[0], F64)
            next_id[0] += 1
            into.append(Eqn((out,), "add", (), (total, a), None))
            total = out
        return total

    def packed(r: Atom, rows: list, fixed: list) -> bool:
        """A packed gradient: its elements' row terms packed into one row term, their fixed
        terms into one fixed term (in the prelude). False if r is not a pack to take apart."""
        k = defined.get(r.id) if isinstance(r, Var) and uses.get(r.id) == 1 else None
        if k is None or eqns[k].op != "pack":
            return False
        parts, before = [], set(dead)
        for x in eqns[k].ins:
            part_rows, part_fixed = [], []
            terms(x, part_rows, part_fixed)
            parts.append((part_rows, [a for a in part_fixed if a != Lit(0.0, F64)]))
        if not any(f for _, f in parts):
            dead.intersection_update(before)  # nothing the same for every row: leave the pack as it is
            return False
        dead.add(k)
        shape = (("shape", r.type.shape),)
        row_pack, fixed_pack = Var(next_id[0], r.type), Var(next_id[0] + 1, r.type)
        next_id[0] += 2
        row_elems = [added(p, tail) for p, _ in parts]
        fixed_elems = [added(f, prelude) for _, f in parts]
        tail.append(Eqn((row_pack,), "pack", shape, tuple(row_elems), eqns[k].loc))
        prelude.append(Eqn((fixed_pack,), "pack", shape, tuple(fixed_elems), None))
        rows.append(row_pack)
        fixed.append(fixed_pack)
        return True

    head = program.body.results[:1 + len(program.outputs)]
    all_rows, sums = [], []
    for r in program.body.results[1 + len(program.outputs):]:
        rows: list = []
        fixed: list = []
        if not packed(r, rows, fixed):
            terms(r, rows, fixed)
        all_rows += rows
        sums.append(GradSum(len(rows), tuple(a for a in fixed if a != Lit(0.0, F64))))
    body = Block(program.body.params, tuple(e for k, e in enumerate(eqns) if k not in dead) + tuple(tail),
                 tuple(head) + tuple(all_rows))
    return renumber(replace(program, body=body, sums=tuple(sums), prelude=tuple(prelude)))


# ---- divisions by a param --------------------------------------------------------------------

def reciprocals(program: Program) -> Program:
    """In the reverse sweep, a scalar divided by a scalar the same for every row (a param, or a
    prelude value) is multiplied by its reciprocal, computed once in the prelude: a division is
    several times slower, and the last bit of an adjoint does not matter."""
    if not any(isinstance(e, Eqn) and e.op == "sweep" for e in program.body.eqns):
        return program  # no reverse sweep (a gradient by forward mode, or not a gradient)
    invariant = {v.id for v in program.param_vars} | {e.outs[0].id for e in program.prelude}
    next_id = [max(_all_ids(program)) + 1]
    recips: dict[int, Var] = {}
    prelude = list(program.prelude)

    def reciprocal(d: Var) -> Var:
        if d.id not in recips:
            r = Var(next_id[0], F64, "inv_" + d.hint if d.hint else "inv")
            next_id[0] += 1
            prelude.append(Eqn((r,), "div", (), (Lit(1.0, F64), d), None))
            recips[d.id] = r
        return recips[d.id]

    def rewrite(block: Block) -> Block:
        eqns = []
        for s in block.eqns:
            if (isinstance(s, Eqn) and s.op == "div" and isinstance(s.ins[1], Var) and s.ins[1].id in invariant
                    and not s.ins[1].type.shape and not s.ins[0].type.shape):
                s = replace(s, op="mul", ins=(s.ins[0], reciprocal(s.ins[1])))
            else:
                s = with_blocks(s, rewrite)
            eqns.append(s)
        return replace(block, eqns=tuple(eqns))

    eqns = list(program.body.eqns)
    sweep = next(k for k, e in enumerate(eqns) if isinstance(e, Eqn) and e.op == "sweep")
    after = rewrite(Block((), tuple(eqns[sweep + 1:]), ()))
    body = replace(program.body, eqns=tuple(eqns[:sweep + 1]) + after.eqns)
    return renumber(replace(program, body=body, prelude=tuple(prelude)))


def _all_ids(program: Program) -> set[int]:
    ids = {v.id for v in program.body.params} | {v.id for e in program.prelude for v in e.outs}
    for s in walk(program.body):
        ids |= {v.id for v in s.outs}
        for inner in blocks_of(s):
            ids |= {v.id for v in inner.params}
    return ids


# ---- memory -----------------------------------------------------------------------------------------

def assign_buffers(program: Program) -> Program:
    """Each array the row body computes at its top level gets a buffer, allocated once per
    kernel call and rewritten by every row (a row's values are dead when the next row starts;
    the tape holds copies). Arrays inside loops and branches are new values each time."""
    eqns = []
    for s in program.body.eqns:
        if isinstance(s, Eqn) and len(s.outs) == 1 and s.outs[0].type.shape and not REGISTRY[s.op].structural:
            s = replace(s, params=tuple(sorted(dict(s.params, buffer=True).items())))
        eqns.append(s)
    return replace(program, body=replace(program.body, eqns=tuple(eqns)))


# ---- small arrays as scalars ------------------------------------------------------------------------

SMALL_ARRAY = 16  # arrays of at most this many elements, indexed only by literals, become scalars


class _Families:
    """Union-find over array vars whose values must share one representation (a loop's carried
    value, its block params, results and outputs; an if's results and outputs; an array and
    the one an element update makes of it; a pushed array and its pop)."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, i: int) -> int:
        root = i
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(i, i) != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def join(self, *atoms) -> None:
        ids = [a.id for a in atoms if isinstance(a, Var) and a.type.shape]
        for other in ids[1:]:
            a, b = self.find(ids[0]), self.find(other)
            if a != b:
                self.parent[b] = a


def _small_array_plan(program: Program) -> set[int]:
    """The ids of the array vars to scalarize: small, and in no family with an array indexed by
    a value known only at run time (or too large)."""
    fam = _Families()
    arrays: list[Var] = []
    pinned: list[Var] = []
    pushed: dict[tuple, Atom] = {}
    popped: dict[tuple, Var] = {}
    for s in walk(program.body):
        arrays += [v for v in s.outs if v.type.shape]
        for b in blocks_of(s):
            arrays += [v for v in b.params if v.type.shape]
        if isinstance(s, Eqn):
            prim = REGISTRY[s.op]
            if prim.checks_index is not None:
                if not all(isinstance(i, Lit) for i in s.ins[prim.checks_index:]):
                    pinned.append(s.ins[0])
                if s.op != "index":
                    fam.join(s.ins[0], s.outs[0])
            elif s.op in ("push", "pop"):
                key = (dict(s.params)["tape"], dict(s.params)["id"])
                (pushed if s.op == "push" else popped)[key] = s.ins[0] if s.op == "push" else s.outs[0]
        elif isinstance(s, ForLoop):
            for param, result, out in zip(s.body.params[1:], s.body.results, s.outs):
                fam.join(param, result, out)
        elif isinstance(s, WhileLoop):
            for cparam, param, result, out in zip(s.cond.params, s.body.params, s.body.results, s.outs):
                fam.join(cparam, param, result, out)
        elif isinstance(s, IfElse):
            for a, b, out in zip(s.then.results, s.orelse.results, s.outs):
                fam.join(a, b, out)
    inputs = {v.id for v in program.body.params}
    for key, out in popped.items():
        if isinstance(pushed.get(key), Var) and pushed[key].id not in inputs:
            fam.join(pushed[key], out)
    bad = {fam.find(a.id) for a in pinned if isinstance(a, Var)}
    bad |= {fam.find(v.id) for v in arrays if size(v.type) > SMALL_ARRAY}
    return {v.id for v in arrays if v.id not in inputs and fam.find(v.id) not in bad}


def scalarize_small_arrays(program: Program) -> Program:
    """Arrays of at most SMALL_ARRAY elements that are indexed only by literals become one
    scalar per element: elementwise ops, sums, @, element reads and updates become plain scalar
    equations, a loop carries the elements, a push stores each. Numba compiles straight-line
    scalar code in time linear in its length (array loops cost far more, and more than
    linearly) and keeps it in registers. Inputs stay arrays (read element by element where
    scalar code needs them); outputs and gradients are packed back into arrays."""
    plan = _small_array_plan(program)
    if not plan and not program.body.params:
        return program
    return renumber(_Scalarizer(program, plan).run())


class _Scalarizer:
    def __init__(self, program: Program, plan: set[int]):
        self.program, self.plan = program, plan
        self.next_id = max(_all_ids(program)) + 1
        self.elements: dict[int, list[Atom]] = {}  # scalarized var id -> its elements
        self.alias: dict[int, Atom] = {}  # a scalar var whose value another atom now gives
        self.eqns: list[Stmt] = []
        self.caches: list[dict] = []  # per open block: (kind, var id) -> explode or pack made there
        self.tape_ids: dict[tuple, list[int]] = {}  # (tape, id) of an array push -> its elements' ids
        self.next_tape_id: dict[int, int] = {}
        self.popped_scalar: set[tuple] = set()  # (tape, id) of the array pops that are scalarized
        for e in walk(program.body):
            if isinstance(e, Eqn) and e.op in ("push", "pop"):
                t, k = dict(e.params)["tape"], dict(e.params)["id"]
                self.next_tape_id[t] = max(self.next_tape_id.get(t, 0), k + 1)
                if e.op == "pop" and e.outs[0].id in plan:
                    self.popped_scalar.add((t, k))

    def fresh(self, type_: Type, hint: str = "") -> Var:
        self.next_id += 1
        return Var(self.next_id, type_, hint)

    def emit(self, op: str, ins, loc, out_type: Type = F64, hint: str = "", **params) -> Var:
        out = self.fresh(out_type, hint)
        self.eqns.append(Eqn((out,), op, tuple(sorted(params.items())), tuple(ins), loc))
        return out

    def val(self, a: Atom) -> Atom:
        """A scalar atom as the rewritten program has it."""
        return self.alias.get(a.id, a) if isinstance(a, Var) else a

    # ---- the two conversions ----

    def cached(self, kind: str, a: Var):
        for cache in reversed(self.caches):
            if (kind, a.id) in cache:
                return cache[(kind, a.id)]
        return None

    def elems(self, a: Atom, loc=None) -> list[Atom]:
        """An array atom's elements, row-major: its scalars, or read from the array."""
        if a.id in self.elements:
            return self.elements[a.id]
        got = self.cached("explode", a)
        if got is None:
            got = [self.emit("index", (a, *(Lit(i, I64) for i in idx)), loc, hint=_element_hint(a, idx))
                   for idx in _cells(a.type)]
            self.caches[-1][("explode", a.id)] = got
        return got

    def array(self, a: Atom, loc=None) -> Atom:
        """An atom as the rewritten program has it, an array packed if it was scalarized."""
        if isinstance(a, Lit) or a.id not in self.elements:
            return self.val(a)
        got = self.cached("pack", a)
        if got is None:
            got = self.emit("pack", self.elements[a.id], loc, a.type, a.hint, shape=a.type.shape)
            self.caches[-1][("pack", a.id)] = got
        return got

    def scalars(self, v: Var) -> list[Var]:
        """New scalar vars for a scalarized var (a block param or a statement's output)."""
        new = [self.fresh(F64, _element_hint(v, idx)) for idx in _cells(v.type)]
        self.elements[v.id] = new
        return new

    def slots(self, atoms, scalarized) -> list[Atom]:
        """Atoms for a list of slots: the elements of a scalarized slot, else the atom itself."""
        out = []
        for a, scal in zip(atoms, scalarized):
            out += self.elems(a) if scal else [self.array(a)]
        return out

    def expand_vars(self, vs) -> list[Var]:
        out = []
        for v in vs:
            out += self.scalars(v) if v.id in self.plan else [v]
        return out

    # ---- the walk ----

    def run(self) -> Program:
        prog = self.program
        self.caches.append({})
        self.eqns = []
        for s in prog.body.eqns:
            self.stmt(s)
        results = [self.array(r) for r in prog.body.results]
        body = Block(prog.body.params, tuple(self.eqns), tuple(results))
        return replace(prog, body=body)

    def block(self, b: Block, params, scalarized) -> Block:
        saved, self.eqns = self.eqns, []
        self.caches.append({})
        for s in b.eqns:
            self.stmt(s)
        results = self.slots(b.results, scalarized)
        eqns, self.eqns = tuple(self.eqns), saved
        self.caches.pop()
        return Block(tuple(params), eqns, tuple(results))

    def stmt(self, s: Stmt) -> None:
        if isinstance(s, Eqn):
            self.eqn(s)
            return
        scal = [o.id in self.plan for o in s.outs]
        if isinstance(s, ForLoop):
            inits = self.slots(s.inits, scal)
            params = [s.body.params[0]] + self.expand_vars(s.body.params[1:])
            body = self.block(s.body, params, scal)
            new = replace(s, lo=self.val(s.lo), hi=self.val(s.hi), inits=tuple(inits), body=body)
        elif isinstance(s, WhileLoop):
            inits = self.slots(s.inits, scal)
            cond = self.block(s.cond, self.expand_vars(s.cond.params), [False])
            body = self.block(s.body, self.expand_vars(s.body.params), scal)
            new = replace(s, inits=tuple(inits), cond=cond, body=body)
        else:
            new = replace(s, cond=self.val(s.cond), then=self.block(s.then, (), scal),
                          orelse=self.block(s.orelse, (), scal))
        self.eqns.append(replace(new, outs=tuple(self.expand_vars(s.outs))))

    def eqn(self, e: Eqn) -> None:
        if e.op == "push":
            self.push(e)
        elif e.op == "pop":
            self.pop(e)
        elif e.outs and e.outs[0].id in self.plan:
            self.elements[e.outs[0].id] = self.expand(e)
        elif e.outs and any(isinstance(a, Var) and a.id in self.elements for a in e.ins):
            value = self.reduce(e)
            if value is None:  # an op on kept arrays: pack what was scalarized
                self.eqns.append(replace(e, ins=tuple(self.array(a, e.loc) for a in e.ins)))
            else:
                self.alias[e.outs[0].id] = value
        else:
            self.eqns.append(replace(e, ins=tuple(self.val(a) for a in e.ins)))

    # ---- ops ----

    def expand(self, e: Eqn) -> list[Atom]:
        """The elements of an op's array result, as scalar equations."""
        op, out, loc = e.op, e.outs[0], e.loc
        n = size(out.type)
        if REGISTRY[op].elementwise:
            cols = [self.elems(a, loc) if a.type.shape else [self.val(a)] * n for a in e.ins]
            return [self.emit(op, [c[k] for c in cols], loc) for k in range(n)]
        if op == "zeros":
            return [Lit(0.0, F64)] * n
        if op == "broadcast":
            return [self.val(e.ins[0])] * n
        if op == "pack":
            return [self.val(a) for a in e.ins]
        if op == "transpose":
            (rows, cols), x = e.ins[0].type.shape, self.elems(e.ins[0], loc)
            return [x[i * cols + j] for j in range(cols) for i in range(rows)]
        if op == "outer":
            x, y = self.elems(e.ins[0], loc), self.elems(e.ins[1], loc)
            return [self.emit("mul", (a, b), loc) for a in x for b in y]
        if op == "matmul":
            return self.matmul(e)
        if op == "index":  # a row of a matrix
            if not isinstance(e.ins[1], Lit):  # row i, known at run time: its elements read one by one
                arr, i = self.array(e.ins[0], loc), self.val(e.ins[1])
                return [self.emit("index", (arr, i, Lit(j, I64)), loc) for j in range(n)]
            x, width = self.elems(e.ins[0], loc), e.ins[0].type.shape[1]
            i = e.ins[1].value
            return x[i * width:(i + 1) * width]
        if op in ("setindex", "addindex"):
            x, value = list(self.elems(e.ins[0], loc)), e.ins[1]
            start = _flat_index(e.ins[0].type, [a.value for a in e.ins[2:]])
            parts = self.elems(value, loc) if value.type.shape else [self.val(value)]
            for k, v in enumerate(parts):
                x[start + k] = v if op == "setindex" else self.emit("add", (x[start + k], v), loc)
            return x
        # another op (softmax): on its inputs as arrays, its result read element by element
        whole = self.fresh(out.type, out.hint)
        self.eqns.append(replace(e, outs=(whole,), ins=tuple(self.array(a, loc) if a.type.shape else self.val(a)
                                                              for a in e.ins)))
        return [self.emit("index", (whole, *(Lit(i, I64) for i in idx)), loc) for idx in _cells(out.type)]

    def matmul(self, e: Eqn) -> list[Atom]:
        a, b = e.ins
        sa, sb = a.type.shape, b.type.shape
        x, y = self.elems(a, e.loc), self.elems(b, e.loc)
        if len(sa) == 2 and len(sb) == 1:
            n, m = sa
            return [self.dot([x[i * m + k] for k in range(m)], y, e.loc) for i in range(n)]
        if len(sa) == 1:
            m, n = sb
            return [self.dot(x, [y[k * n + j] for k in range(m)], e.loc) for j in range(n)]
        (n, m), (_, p) = sa, sb
        return [self.dot([x[i * m + k] for k in range(m)], [y[k * p + j] for k in range(m)], e.loc)
                for i in range(n) for j in range(p)]

    def dot(self, x, y, loc) -> Atom:
        """x[0] y[0] + x[1] y[1] + ..., added in order (as the loop it replaces did)."""
        return self.total([self.emit("mul", (a, b), loc) for a, b in zip(x, y)], loc)

    def total(self, x, loc) -> Atom:
        acc = x[0]
        for a in x[1:]:
            acc = self.emit("add", (acc, a), loc)
        return acc

    def reduce(self, e: Eqn) -> Atom | None:
        """A scalar result of scalarized arrays (sum, mean, dot, v @ w, an element), or None."""
        op, loc = e.op, e.loc
        if op in ("sum", "mean"):
            acc = self.total(self.elems(e.ins[0], loc), loc)
            if op == "mean":
                acc = self.emit("div", (acc, Lit(float(size(e.ins[0].type)), F64)), loc)
            return acc
        if op in ("dot", "matmul") and not e.outs[0].type.shape:
            return self.dot(self.elems(e.ins[0], loc), self.elems(e.ins[1], loc), loc)
        if op == "index" and not e.outs[0].type.shape and all(isinstance(i, Lit) for i in e.ins[1:]):
            return self.elems(e.ins[0], loc)[_flat_index(e.ins[0].type, [a.value for a in e.ins[1:]])]
        return None

    # ---- the tape ----

    def push(self, e: Eqn) -> None:
        tape, k = dict(e.params)["tape"], dict(e.params)["id"]
        x = e.ins[0]
        if (tape, k) not in self.popped_scalar:
            self.eqns.append(replace(e, ins=(self.array(x, e.loc),)))
            return
        ids = []
        for value in self.elems(x, e.loc):
            ids.append(self.next_tape_id[tape])
            self.next_tape_id[tape] += 1
            self.eqns.append(Eqn((), "push", (("id", ids[-1]), ("tape", tape)), (value,), e.loc))
        self.tape_ids[(tape, k)] = ids

    def pop(self, e: Eqn) -> None:
        out = e.outs[0]
        if out.id not in self.plan:
            self.eqns.append(e)
            return
        tape, k = dict(e.params)["tape"], dict(e.params)["id"]
        values = self.scalars(out)
        for v, new in reversed(list(zip(values, self.tape_ids[(tape, k)]))):
            self.eqns.append(Eqn((v,), "pop", (("id", new), ("tape", tape)), (), e.loc))


def _cells(t: Type) -> list[tuple[int, ...]]:
    """Every element's index, row-major."""
    if len(t.shape) == 2:
        return [(i, j) for i in range(t.shape[0]) for j in range(t.shape[1])]
    return [(i,) for i in range(t.shape[0])]


def _flat_index(t: Type, idx: list[int]) -> int:
    """The row-major position of an element (or of a row's first element)."""
    if len(t.shape) == 2:
        return idx[0] * t.shape[1] + (idx[1] if len(idx) == 2 else 0)
    return idx[0]


def _element_hint(v: Atom, idx) -> str:
    return f"{v.hint}_{'_'.join(map(str, idx))}" if getattr(v, "hint", "") else ""


# ---- the kernel passes, in order ----------------------------------------------------------------

KERNEL_PASSES = (
    ("scalarize", scalarize_small_arrays, "arrays of at most 16 elements indexed by literals become scalars"),
    ("dce", eliminate_dead_code, "drop equations nothing reads"),
    ("hoist", hoist_invariants, "equations on params only run once per call (the prelude)"),
    ("split-sums", split_gradient_sums, "gradient terms the same for every row are added once"),
    ("reciprocals", reciprocals, "the reverse sweep multiplies by 1/p instead of dividing by a param"),
    ("buffers", assign_buffers, "top-level arrays of a row are written into buffers reused by every row"),
)


def optimize(program: Program, verify=None) -> Program:
    """Every kernel pass in order (verify(program) after each, when given)."""
    for _, run, _ in KERNEL_PASSES:
        program = run(program)
        if verify is not None:
            verify(program)
    return program
