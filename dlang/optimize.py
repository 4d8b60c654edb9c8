"""IR clean-up passes run before code generation (IR in, IR out)."""
from __future__ import annotations

from dataclasses import replace

from .ir import Block, Eqn, ForLoop, Program, Stmt, Var, WhileLoop, renumber


def eliminate_dead_code(program: Program) -> Program:
    """Drop equations whose results nothing reads (tape pushes and pops always stay).

    The adjoint program has no outputs, so the primal work that only fed an output goes too.
    Loops and branches stay whole: their carried values are read by their own bodies."""
    body = program.body
    while True:
        used = _used_ids(body)
        new = _prune(body, used)
        if new == body:
            return renumber(replace(program, body=body))
        body = new


def _used_ids(block: Block) -> set[int]:
    used: set[int] = set()
    stack = [block]
    while stack:
        b = stack.pop()
        used |= {a.id for a in b.results if isinstance(a, Var)}
        for s in b.eqns:
            if isinstance(s, Eqn):
                used |= {a.id for a in s.ins if isinstance(a, Var)}
            elif isinstance(s, ForLoop):
                used |= {a.id for a in (s.lo, s.hi, *s.inits) if isinstance(a, Var)}
                stack.append(s.body)
            elif isinstance(s, WhileLoop):
                used |= {a.id for a in s.inits if isinstance(a, Var)}
                stack += [s.cond, s.body]
            else:
                used |= {s.cond.id} if isinstance(s.cond, Var) else set()
                stack += [s.then, s.orelse]
    return used


def _prune(block: Block, used: set[int]) -> Block:
    eqns: list[Stmt] = []
    for s in block.eqns:
        if isinstance(s, Eqn):
            if s.op in ("push", "pop") or any(v.id in used for v in s.outs):
                eqns.append(s)
        elif isinstance(s, ForLoop):
            eqns.append(replace(s, body=_prune(s.body, used)))
        elif isinstance(s, WhileLoop):
            eqns.append(replace(s, cond=_prune(s.cond, used), body=_prune(s.body, used)))
        else:
            eqns.append(replace(s, then=_prune(s.then, used), orelse=_prune(s.orelse, used)))
    return Block(block.params, tuple(eqns), block.results)
