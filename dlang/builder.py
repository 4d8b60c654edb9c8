"""What the AD transformations build IR with: fresh vars, and equations with constants folded.

The primitive registry's derivative rules call a builder's `op(name, *ins, **params)`,
`mul(a, b)` and `p(atom)` (the primal value as the new code sees it); reverse mode, forward
mode and the event corrections each subclass this one.
"""
from __future__ import annotations

from .ir import F64, Atom, Eqn, Lit, Stmt, Type, Var
from .prims import evaluate, result_type


class Builder:
    def __init__(self, next_id: int):
        self.next_id = next_id  # the last id handed out: fresh vars take the ones after it
        self.stmts: list[Stmt] = []
        self.loc = None  # the source place the equations made now are attributed to

    def fresh(self, type_: Type, hint: str = "") -> Var:
        self.next_id += 1
        return Var(self.next_id, type_, hint)

    def p(self, a: Atom) -> Atom:
        """A primal value where the new code reads it (reverse mode may tape it)."""
        return a

    def op(self, name: str, *ins: Atom, **params) -> Atom:
        """The equation `name[params] ins` appended, its output returned; a float op on
        literals is folded to a literal, x ^ 1 is x."""
        out_type = result_type(name, [a.type for a in ins], params)
        if out_type == F64 and ins and all(isinstance(a, Lit) for a in ins):
            return Lit(evaluate(name, params, [a.value for a in ins], F64), F64)
        if name == "pow" and ins[1] == Lit(1.0, F64):
            return ins[0]
        return self.emit(name, ins, tuple(sorted(params.items())), out_type)

    def emit(self, name: str, ins, params: tuple, out_type: Type) -> Var:
        out = self.fresh(out_type)
        self.stmts.append(Eqn((out,), name, params, tuple(ins), self.loc))
        return out

    def mul(self, a: Atom, b: Atom) -> Atom:
        if a == Lit(1.0, F64):
            return b
        if b == Lit(1.0, F64):
            return a
        return self.op("mul", a, b)
