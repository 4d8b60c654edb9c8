"""The optimisation passes the kernels are made with: IR in, IR out, one public verb each.

dlang.pipeline lists them in the order they run; `dlang emit --stage NAME` prints a program
after any of them, and the tests verify the IR after each. The code generator only renders
what these passes decide: which equations run once per call (the prelude), how a gradient is
added up over the rows, where a division becomes a multiplication, which arrays get a buffer.
"""
from __future__ import annotations

from dataclasses import replace

from .ir import (F64, Atom, Block, Eqn, ForLoop, GradSum, IfElse, Lit, Program, Stmt, Var, WhileLoop,
                 blocks_of, reads, renumber, walk, with_blocks)
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


# ---- what runs once per call --------------------------------------------------------------------

def _hoistable(e: Stmt, invariant: set[int]) -> bool:
    if not isinstance(e, Eqn) or len(e.outs) != 1 or "buffer" in dict(e.params):
        return False
    prim = REGISTRY[e.op]
    if prim.structural or prim.checks_index is not None:  # a fault needs the row it happened in
        return False
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
    The additions this takes apart are dropped from the body."""
    if not program.grads or program.sums:
        return program
    uses = use_counts(program)
    invariant = {v.id for v in program.param_vars} | {e.outs[0].id for e in program.prelude}
    eqns = list(program.body.eqns)
    sweep = next(k for k, e in enumerate(eqns) if isinstance(e, Eqn) and e.op == "sweep")
    defined = {e.outs[0].id: k for k, e in enumerate(eqns)
               if k > sweep and isinstance(e, Eqn) and len(e.outs) == 1}
    dead: set[int] = set()

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

    head = program.body.results[:1 + len(program.outputs)]
    all_rows, sums = [], []
    for r in program.body.results[1 + len(program.outputs):]:
        rows: list = []
        fixed: list = []
        terms(r, rows, fixed)
        all_rows += rows
        sums.append(GradSum(len(rows), tuple(a for a in fixed if a != Lit(0.0, F64))))
    body = Block(program.body.params, tuple(e for k, e in enumerate(eqns) if k not in dead),
                 tuple(head) + tuple(all_rows))
    return renumber(replace(program, body=body, sums=tuple(sums)))


# ---- divisions by a param --------------------------------------------------------------------

def reciprocals(program: Program) -> Program:
    """In the reverse sweep, a scalar divided by a scalar the same for every row (a param, or a
    prelude value) is multiplied by its reciprocal, computed once in the prelude: a division is
    several times slower, and the last bit of an adjoint does not matter."""
    if not program.grads:
        return program
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


# ---- the kernel passes, in order ----------------------------------------------------------------

KERNEL_PASSES = (
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
