"""Activity analysis, shared by the AD transformations: which values vary with the inputs a
derivative is taken with respect to, and which reach the results it is wanted for.

A value is *varied* when it depends on a seeded input (a param, or a direction's seed) through
differentiable ops, loop-carried values, branch results and the tape (a popped value varies
when the value its push stored does); it is *useful* when a wanted result depends on it. Only
values both varied and useful (active) get derivatives: reverse mode gives adjoints to the
active values for the loss, forward mode gives tangents to the active values for the results
it is asked for.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .ir import Atom, Block, Eqn, ForLoop, IfElse, Program, Stmt, Var, WhileLoop, tape_ops
from .prims import REGISTRY


def carried_slots(s: Stmt):
    """For a loop: (inits, block params, yields, outs) per carried value."""
    if isinstance(s, ForLoop):
        return zip(s.inits, s.body.params[1:], s.body.results, s.outs)
    return zip(s.inits, s.body.params, s.body.results, s.outs)


def ids(atoms) -> set[int]:
    return {a.id for a in atoms if isinstance(a, Var)}


def tape_key(e: Eqn) -> tuple[int, int]:
    """(tape, id) of a push or pop."""
    params = dict(e.params)
    return params["tape"], params["id"]


@dataclass
class TapePairs:
    """A program's pushes and pops, by (tape, id): what each push stores, what each pop gives."""

    stored: dict[tuple, Atom] = field(default_factory=dict)
    popped: dict[tuple, Var] = field(default_factory=dict)

    @classmethod
    def of(cls, block: Block) -> "TapePairs":
        pairs = cls()
        for e in tape_ops(block):
            if e.op == "push":
                pairs.stored[tape_key(e)] = e.ins[0]
            else:
                pairs.popped[tape_key(e)] = e.outs[0]
        return pairs


def activity(program: Program, seeds: set[int] | None = None, wanted: tuple[Atom, ...] | None = None) -> set[int]:
    """Ids of active values: f64 values that depend on a seed (default: the params) and reach a
    wanted result (default: the loss)."""
    pairs = TapePairs.of(program.body)
    varied = {v.id for v in program.param_vars} if seeds is None else set(seeds)
    while mark_varied(program.body, varied, pairs):
        pass
    useful = ids(program.body.results[:1] if wanted is None else wanted)
    while mark_useful(program.body, useful, pairs):
        pass
    return varied & useful


def _mark(target: set[int], new_ids: set[int]) -> bool:
    new = new_ids - target
    target |= new
    return bool(new)


def differentiable(e: Eqn) -> bool:
    prim = REGISTRY.get(e.op)
    return prim is not None and prim.differentiable and not prim.structural


def mark_varied(block: Block, varied: set[int], pairs: TapePairs) -> bool:
    changed = False
    for s in block.eqns:
        if isinstance(s, Eqn):
            if s.op == "pop":
                if ids([pairs.stored.get(tape_key(s))]) & varied and s.outs[0].type.kind == "f64":
                    changed |= _mark(varied, {s.outs[0].id})
            elif differentiable(s) and ids(s.ins) & varied:
                changed |= _mark(varied, {v.id for v in s.outs if v.type.kind == "f64"})
        elif isinstance(s, (ForLoop, WhileLoop)):
            for init, param, result, out in carried_slots(s):
                if ids([init, result]) & varied:
                    changed |= _mark(varied, {param.id, out.id})
            if isinstance(s, WhileLoop):  # the condition block sees the same carried values
                for init, param, result in zip(s.inits, s.cond.params, s.body.results):
                    if ids([init, result]) & varied:
                        changed |= _mark(varied, {param.id})
            for inner in (s.body,) if isinstance(s, ForLoop) else (s.cond, s.body):
                changed |= mark_varied(inner, varied, pairs)
        elif isinstance(s, IfElse):
            changed |= mark_varied(s.then, varied, pairs) | mark_varied(s.orelse, varied, pairs)
            for a, b, out in zip(s.then.results, s.orelse.results, s.outs):
                if ids([a, b]) & varied and out.type.kind == "f64":
                    changed |= _mark(varied, {out.id})
    return changed


def mark_useful(block: Block, useful: set[int], pairs: TapePairs) -> bool:
    changed = False
    for s in reversed(block.eqns):
        if isinstance(s, Eqn):
            if s.op == "push":
                popped = pairs.popped.get(tape_key(s))
                if popped is not None and popped.id in useful:
                    changed |= _mark(useful, {a.id for a in s.ins if isinstance(a, Var) and a.type.kind == "f64"})
            elif differentiable(s) and ids(s.outs) & useful:
                changed |= _mark(useful, {a.id for a in s.ins if isinstance(a, Var) and a.type.kind == "f64"})
        elif isinstance(s, (ForLoop, WhileLoop)):
            for init, param, result, out in carried_slots(s):
                if {param.id, out.id} & useful:
                    changed |= _mark(useful, ids([init, result]) | {param.id, out.id})
            changed |= mark_useful(s.body, useful, pairs)
        elif isinstance(s, IfElse):
            for a, b, out in zip(s.then.results, s.orelse.results, s.outs):
                if out.id in useful:
                    changed |= _mark(useful, ids([a, b]))
            changed |= mark_useful(s.then, useful, pairs) | mark_useful(s.orelse, useful, pairs)
    return changed
