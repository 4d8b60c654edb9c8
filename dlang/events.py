"""Events: where a program's branch switches or its loop stops, and gradients that see them.

dlang differentiates a program as written: the branch an `if` takes and the number of times a
loop runs are constants of the derivative. A simulator that steps time in a loop (a projectile
that lands, a ball that bounces, a tank that runs dry) then has a gradient that misses how the
moment of the event moves with the params: the loss, seen at the resolution of one time step,
is a staircase whose treads are flat.

`conditions` finds the conditions that depend on params, and `warnings` says what they do to
the gradient (a param whose gradient is zero everywhere; a condition whose switching the
gradient does not see). `event_program` makes, from a program, one whose loss is continuous across
the events of its time-stepping loops and whose derivative sees them, by a time-of-impact
correction of the iteration where a condition on a continuous value flips (as DiffTaichi does
by hand for one example, here derived from the IR):

- The margin of a condition (`a > b`: a - b) is known at each iteration; where it changes sign
  between two iterations the event happened a fraction alpha = m_prev / (m_prev - m_now) of
  the way between them.
- A *switch* (the new branch stays taken: flying, then landed): over that interval the old
  branch should have acted for a fraction alpha and the new one for the rest, so the state
  moves by d(alpha) (D_old - D_new), D being a branch's increment over one iteration.
- A *reset* (the branch is taken once and undoes its own condition: a bounce): the saltation
  term of hybrid systems, d(alpha) (J_H D_before - D_after), where J_H D_before is the reset
  map's Jacobian along the increment before the event (forward mode on the branch's IR).
- A `while` loop that stops is a switch to "stopped": its results (and an int step counter
  read as a float after it) move by (alpha - 1) (s_last - s_before_last).

Each correction is added as (alpha - 1) * D: the discrete program acts as if every event
happened at the end of its step (alpha = 1), the corrected one as if at its time of impact.
Its loss is continuous in the params where the program's is a staircase, and its gradient is
that loss's: the optimizer follows it (`dlang train --events auto`), while every loss and
output dlang reports is computed by the program as written. A switch is confirmed (and
corrected) one iteration after it, when the next iteration shows whether the condition stays
switched. Conditions that do not depend on params, the first
iteration of a loop, compound conditions (`and`, `or`) and `if`s nested in other `if`s are left
exact.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .ir import (BOOL, F64, I64, Atom, Block, Eqn, ForLoop, IfElse, Lit, Program, Stmt, Type, Var, WhileLoop,
                 defined_anywhere, defined_in, renumber, vars_read, walk)
from .builder import Builder
from .prims import REGISTRY

ZERO = Lit(0.0, F64)
TRUE = Lit(True, BOOL)
FALSE = Lit(False, BOOL)
_FLIP = {"gt": 1, "ge": 1, "lt": -1, "le": -1}  # margin sign: a - b for > and >=, b - a for < and <=
_STEPS = {"floor", "ceil", "round", "sign"}
MIN_GAP = 4  # iterations between flips for an event: faster flips (chattering) are left exact


# ---- which values depend on the params ---------------------------------------------------------------

def depends(program: Program, seeds: set[int]) -> set[int]:
    """Ids of the values that depend on the seeds by any route: any op (comparisons and floor
    included), the carried values of loops, the results of an `if` whose condition depends on
    them, the results of a `while` whose condition does."""
    dep = set(seeds)
    changed = True
    while changed:
        changed = _spread(program.body, dep)
    return dep


def _ids(atoms) -> set[int]:
    return {a.id for a in atoms if isinstance(a, Var)}


def _spread(block: Block, dep: set[int]) -> bool:
    changed = False

    def mark(vs) -> None:
        nonlocal changed
        new = {v.id for v in vs} - dep
        if new:
            dep.update(new)
            changed = True

    for s in block.eqns:
        if isinstance(s, Eqn):
            if _ids(s.ins) & dep and s.outs:
                mark(s.outs)
        elif isinstance(s, ForLoop):
            if _ids([s.lo, s.hi]) & dep:
                mark(s.outs)
            for init, param, result, out in zip(s.inits, s.body.params[1:], s.body.results, s.outs):
                if _ids([init, result]) & dep:
                    mark([param, out])
            changed |= _spread(s.body, dep)
        elif isinstance(s, WhileLoop):
            for init, cparam, param, result, out in zip(s.inits, s.cond.params, s.body.params, s.body.results,
                                                        s.outs):
                if _ids([init, result]) & dep:
                    mark([cparam, param, out])
            changed |= _spread(s.cond, dep) | _spread(s.body, dep)
            if _ids(s.cond.results) & dep:
                mark(s.outs)
        else:
            changed |= _spread(s.then, dep) | _spread(s.orelse, dep)
            if s.cond.id in dep if isinstance(s.cond, Var) else False:
                mark(s.outs)
            for a, b, out in zip(s.then.results, s.orelse.results, s.outs):
                if _ids([a, b]) & dep:
                    mark([out])
    return changed


# ---- conditions and warnings -----------------------------------------------------------------------------

@dataclass
class Condition:
    """A branch or loop condition that depends on params."""

    kind: str              # "if" or "while"
    loc: tuple | None      # the statement's line and column
    params: list[str]      # the params it depends on, in declaration order


def _is_branch(s: IfElse) -> bool:
    """An `if` of the program (not one lowering `and`/`or`, which yields only a bool)."""
    return any(o.type != BOOL for o in s.outs) or not s.outs


def conditions(program: Program) -> list[Condition]:
    """The branch and loop conditions that depend on params, in program order, one per place."""
    per_param = {p.name: depends(program, {v.id}) for p, v in zip(program.params, program.param_vars)}
    out, seen = [], set()
    for s in walk(program.body):
        if isinstance(s, IfElse) and _is_branch(s) and isinstance(s.cond, Var):
            ids, kind = {s.cond.id}, "if"
        elif isinstance(s, WhileLoop):
            ids, kind = _ids(s.cond.results), "while"
        else:
            continue
        names = [name for name, dep in per_param.items() if ids & dep]
        key = (kind, s.loc)
        if names and key not in seen:
            seen.add(key)
            out.append(Condition(kind, s.loc, names))
    return out


def warnings(program: Program, path: str | None = None) -> list:
    """What param-dependent conditions do to the gradient, as warning diagnostics: a param
    whose gradient is zero everywhere (it reaches the loss only through conditions, loop exits,
    comparisons or floor/round/ceil/sign), and each condition whose switching the gradient does
    not see."""
    from .activity import activity
    from .errors import Diagnostic, span_at

    if not program.has_loss:
        return []
    out = []
    loss = program.body.results[:1]
    for p, v in zip(program.params, program.param_vars):
        dep = depends(program, {v.id})
        if not (_ids(loss) & dep) or activity(program, {v.id}):
            continue
        where, loc = _blocker(program, dep)
        out.append(Diagnostic(f"the gradient of '{p.name}' is zero everywhere: '{p.name}' reaches the loss only "
                              f"through {where}", span_at(loc, 1) if loc else None, path,
                              "dlang train --events auto (the default) corrects for the conditions of loops; "
                              "see docs/events.md", severity="warning"))
    said = {d.span for d in out if d.span is not None}
    for c in conditions(program):
        if c.loc and span_at(c.loc, 1) in said:  # the warning above already names this condition
            continue
        what = "this `if` condition" if c.kind == "if" else "this `while` loop's condition"
        out.append(Diagnostic(f"{what} depends on {', '.join(repr(n) for n in c.params)}: the exact gradient does "
                              "not see where it switches", span_at(c.loc, 2 if c.kind == "if" else 5) if c.loc else None,
                              path, severity="warning"))
    return out


def _blocker(program: Program, dep: set[int]) -> tuple[str, tuple | None]:
    """The first place where a param's influence leaves the differentiable ops."""
    for s in walk(program.body):
        if isinstance(s, WhileLoop) and _ids(s.cond.results) & dep:
            line = f" at line {s.loc[0]}" if s.loc else ""
            return f"the condition of the `while` loop{line}", s.loc
        if isinstance(s, IfElse) and _is_branch(s) and isinstance(s.cond, Var) and s.cond.id in dep:
            line = f" at line {s.loc[0]}" if s.loc else ""
            return f"the condition of the `if`{line}", s.loc
        if isinstance(s, Eqn) and s.op in _STEPS and _ids(s.ins) & dep:
            line = f" at line {s.loc[0]}" if s.loc else ""
            return f"`{s.op}`{line}, whose derivative is zero", s.loc
    return "comparisons, whose derivative is zero", None


# ---- the event-aware program ------------------------------------------------------------------------------

class _Builder(Builder):
    def region(self, fn) -> tuple[tuple[Stmt, ...], tuple[Atom, ...]]:
        saved, self.stmts = self.stmts, []
        results = tuple(fn())
        out, self.stmts = tuple(self.stmts), saved
        return out, results

    def if_(self, cond: Atom, then_fn, else_fn, types: list[Type]) -> list[Var]:
        t_eqns, t_res = self.region(then_fn)
        e_eqns, e_res = self.region(else_fn)
        outs = [self.fresh(t) for t in types]
        self.stmts.append(IfElse(tuple(outs), cond, Block((), t_eqns, t_res), Block((), e_eqns, e_res), self.loc))
        return outs

    def xor(self, a: Atom, b: Atom) -> Var:
        return self.if_(a, lambda: [self.op("not", b)], lambda: [b], [BOOL])[0]

    def both(self, a: Atom, b: Atom) -> Var:
        return self.if_(a, lambda: [b], lambda: [FALSE], [BOOL])[0]

    def correction(self, value: Atom, alpha: Atom, delta: Atom) -> Var:
        """value + (alpha - 1) * delta: the state as if the event had happened a fraction alpha
        of the way through its step instead of at its end (the discrete program's alpha = 1)."""
        return self.op("add", value, self.op("mul", self.op("sub", alpha, Lit(1.0, F64)), delta))


def _margin(cond: Atom, eqns, dep: set[int]):
    """(sign, a, b) with the condition true exactly where sign * (a - b) > 0 (or >= 0), when
    the condition is a comparison of floats (possibly under `not`) made among `eqns` whose
    operands depend on params; else None."""
    if not isinstance(cond, Var):
        return None
    defs = {e.outs[0].id: e for e in eqns if isinstance(e, Eqn) and e.outs}
    sign = 1
    e = defs.get(cond.id)
    while e is not None and e.op == "not" and isinstance(e.ins[0], Var):
        sign = -sign
        e = defs.get(e.ins[0].id)
    if e is None or e.op not in _FLIP or any(a.type != F64 for a in e.ins) or not (_ids(e.ins) & dep):
        return None
    return sign * _FLIP[e.op], e.ins[0], e.ins[1]


def _straight(block: Block) -> bool:
    return all(isinstance(s, Eqn) and s.op not in ("push", "pop", "seal", "sweep") for s in block.eqns)


def _steps_time(s: WhileLoop) -> bool:
    """A while loop one of whose carried floats grows by a constant each trip (t += dt)."""
    defs = {e.outs[0].id: e for e in s.body.eqns if isinstance(e, Eqn) and e.outs}
    for param, result in zip(s.body.params, s.body.results):
        e = defs.get(result.id) if isinstance(result, Var) else None
        if e is not None and e.op in ("add", "sub") and param.type == F64:
            a, c = e.ins
            if (a == param and isinstance(c, Lit)) or (e.op == "add" and c == param and isinstance(a, Lit)):
                return True
    return False


def _compound_margin(cond: Block, dep: set[int]):
    """For a condition joined by `and`/`or` with exactly one comparison of floats that depends
    on params: its margin and the equations that compute its operands (no index checks: they
    are evaluated after the loop, where a guard no longer protects them); else (None, [])."""
    eqns = [st for st in walk(cond) if isinstance(st, Eqn)]
    found = [e for e in eqns if e.op in _FLIP and all(a.type == F64 for a in e.ins) and _ids(e.ins) & dep]
    if len(found) != 1:
        return None, []
    e = found[0]
    defs = {x.outs[0].id: x for x in eqns if x.outs}
    need, stack = set(), list(_ids(e.ins))
    while stack:
        i = stack.pop()
        d = defs.get(i)
        if d is None or i in need:
            continue
        if REGISTRY[d.op].checks_index is not None or REGISTRY[d.op].guard is not None:
            return None, []
        need.add(i)
        stack.extend(_ids(d.ins))
    return (_FLIP[e.op], e.ins[0], e.ins[1]), [x for x in eqns if x.outs and x.outs[0].id in need]


def _rename(stmts, results, mapping: dict[int, Atom]):
    """Statements and results with the vars in mapping replaced (reads only, nested blocks too)."""
    if not mapping:
        return tuple(stmts), tuple(results)

    def atom(a):
        return mapping.get(a.id, a) if isinstance(a, Var) else a

    def block(b: Block) -> Block:
        eqns, res = _rename(b.eqns, b.results, mapping)
        return Block(b.params, eqns, res)

    out = []
    for s in stmts:
        if isinstance(s, Eqn):
            s = replace(s, ins=tuple(atom(a) for a in s.ins))
        elif isinstance(s, ForLoop):
            s = replace(s, lo=atom(s.lo), hi=atom(s.hi), inits=tuple(atom(a) for a in s.inits), body=block(s.body))
        elif isinstance(s, WhileLoop):
            s = replace(s, inits=tuple(atom(a) for a in s.inits), cond=block(s.cond), body=block(s.body))
        else:
            s = replace(s, cond=atom(s.cond), then=block(s.then), orelse=block(s.orelse))
        out.append(s)
    return tuple(out), tuple(atom(r) for r in results)


class _Events:
    def __init__(self, program: Program):
        self.program = program
        self.dep = depends(program, {v.id for v in program.param_vars})
        ids = defined_anywhere(program.body)
        self.b = _Builder(max(ids | {0}) + 1)
        self.changed = 0

    def block(self, b: Block) -> Block:
        """A block with the events of the loops in it (and in its nested blocks) corrected."""
        stmts = list(b.eqns)
        results = b.results
        out: list[Stmt] = []
        k = 0
        while k < len(stmts):
            s = stmts[k]
            k += 1
            if isinstance(s, Eqn):
                out.append(s)
                continue
            if isinstance(s, IfElse):
                out.append(replace(s, then=self.block(s.then), orelse=self.block(s.orelse)))
                continue
            s = replace(s, body=self.block(s.body))
            # every loop is taken for one that steps time (a loop that jumps from event to event,
            # like the gallery's bouncing_ball.dl, has results continuous across its events; its
            # compound `while` condition is left exact by exit_event)
            s, pairs = self.if_events(s)
            mapping: dict[int, Atom] = {}
            self.counters = {}
            if isinstance(s, WhileLoop):
                s, extra, mapping = self.exit_event(s)
                out.append(s)
                out += extra
            else:
                out.append(s)
            if self.counters:  # a step counter read as a float after the loop: that float is moved
                kept = []
                for st in stmts[k:]:
                    if (isinstance(st, Eqn) and st.op == "to_float" and isinstance(st.ins[0], Var)
                            and st.ins[0].id in self.counters):
                        mapping[st.outs[0].id] = self.counters[st.ins[0].id]
                    else:
                        kept.append(st)
                stmts[k:] = kept
            if pairs:  # each state value plus its shift
                def shifted():
                    return [self.b.op("add", mapping.get(o.id, o), mapping.get(d.id, d)) for o, d in pairs]

                eqns, values = self.b.region(shifted)
                out += eqns
                mapping.update({o.id: v for (o, _), v in zip(pairs, values)})
            if mapping:
                rest, results = _rename(stmts[k:], results, mapping)
                stmts[k:] = rest
        return Block(b.params, tuple(out), tuple(results))

    # ---- an `if` in a time-stepping loop: switches and resets ----

    def if_events(self, loop: ForLoop | WhileLoop):
        """The loop with its ifs' events corrected, and (state out, its shift out) pairs: the
        loop's state stays exact; the shift, (alpha - 1) X at each event carried forward
        through the body's Jacobian (forward mode), is added to the loop's results."""
        self.shifts = []
        self.margin_shifts = []
        carried = len(loop.outs)
        index = 0
        while index < len(loop.body.eqns):
            body = loop.body
            s = body.eqns[index]
            index += 1
            if not (isinstance(s, IfElse) and _is_branch(s) and isinstance(s.cond, Var)):
                continue
            margin = _margin(s.cond, body.eqns[:index - 1], self.dep)
            slots = [k for k, o in enumerate(s.outs) if o.type == F64]
            if margin is None or s.cond.id not in defined_in(body) or not slots:
                continue
            loop = self.correct_if(loop, index - 1, margin, slots)
            index = next(k for k, st in enumerate(loop.body.eqns) if st is self.last_if) + 1
            self.changed += 1
        if not self.shifts:
            return loop, []
        return self.propagate(loop, carried)

    def propagate(self, loop, carried: int):
        """Carry a shift of each of the loop's first `carried` float values: the body's tangent
        along it (forward mode), plus the event shifts where they arise."""
        from .forward import Forward

        b = self.b
        body = loop.body
        first = 1 if isinstance(loop, ForLoop) else 0
        slots = [k for k in range(carried) if loop.outs[k].type == F64]
        state = [body.params[first + k] for k in slots]
        deltas = [b.fresh(F64, "shift_" + v.hint if v.hint else "shift") for v in state]
        wanted = tuple(body.results[k] for k in slots)
        program = Program((), (), (), (), Block(body.params, body.eqns, body.results))
        margin_vars = tuple(m for m, _ in self.margin_shifts)  # their tangents are wanted too
        fwd = Forward(program, 1, {v.id: [d] for v, d in zip(state, deltas)}, wanted + margin_vars, b.next_id)
        marks = {id(stmt): pairs for stmt, pairs in self.shifts}
        margins = {m.id: shift for m, shift in self.margin_shifts}
        for st in body.eqns:
            fwd.stmt(st)
            if isinstance(st, Eqn) and st.outs and st.outs[0].id in margins:
                tangent = fwd.materialized(fwd.tangents(st.outs[0])[0], F64)
                fwd.stmts.append(Eqn((margins[st.outs[0].id],), "add", (), (tangent, ZERO), st.loc))
            for w, shift in marks.get(id(st), []):
                fwd.tan[w.id] = [fwd.op("add", fwd.materialized(fwd.tangents(w)[0], F64), shift)]
                fwd.active.add(w.id)
        results = tuple(fwd.materialized(fwd.tangents(r)[0], F64) for r in wanted)
        b.next_id = fwd.next_id
        new_body = Block(body.params + tuple(deltas), tuple(fwd.stmts), body.results + results)
        outs = tuple(b.fresh(F64) for _ in slots)
        inits = loop.inits + (ZERO,) * len(slots)
        if isinstance(loop, ForLoop):
            new = ForLoop(loop.outs + outs, loop.lo, loop.hi, inits, new_body, loop.loc)
        else:
            cond = Block(loop.cond.params + tuple(b.fresh(F64) for _ in slots), loop.cond.eqns, loop.cond.results)
            new = WhileLoop(loop.outs + outs, inits, cond, new_body, loop.loc)
        return new, [(loop.outs[k], o) for k, o in zip(slots, outs)]

    def correct_if(self, loop, index: int, margin, slots: list[int]):
        b = self.b
        body = loop.body
        s = body.eqns[index]
        b.loc = s.loc
        inside = defined_in(body)
        own = defined_anywhere(Block((), (s,), ()))
        free = [v for v in vars_read(Block((), (s,), ())) if v.type == F64 and v.id in inside and v.id not in own]
        n, nz = len(slots), len(free)
        # carried: seen, c1, m1, flag1, a1, gap, PA[n], R[n], w1[n], w2[n], z1[nz]
        types = [BOOL, BOOL, F64, BOOL, F64, F64] + [F64] * (4 * n + nz)
        carried = [b.fresh(t, h) for t, h in zip(types, ["seen", "was", "margin_was", "event_was", "alpha_was",
                                                         "since_flip"] + [""] * (4 * n + nz))]
        seen, c1, m1, flag1, a1, gap = carried[:6]
        pa1 = carried[6:6 + n]
        r1 = carried[6 + n:6 + 2 * n]
        w1 = carried[6 + 2 * n:6 + 3 * n]
        w2 = carried[6 + 3 * n:6 + 4 * n]
        z1 = carried[6 + 4 * n:]
        inits = [FALSE, FALSE, ZERO, FALSE, ZERO, ZERO] + [ZERO] * (4 * n + nz)

        def new_body():
            for e in body.eqns[:index]:
                b.stmts.append(e)
            b.loc = s.loc
            sign, x, y = margin
            exact_m = b.op("sub", x, y) if sign > 0 else b.op("sub", y, x)
            # the margin of the shifted state: its shift is defined by propagate (forward mode)
            shift = b.fresh(F64, "margin_shift")
            self.margin_shifts.append((exact_m, shift))
            m = b.op("add", exact_m, shift)
            flips = b.both(seen, b.xor(s.cond, c1))
            # an event: a flip at least MIN_GAP iterations after the last one (not a reset's
            # condition flipping back, nor a condition chattering faster than the step resolves)
            settled = b.op("ge", gap, Lit(float(MIN_GAP), F64))
            event = b.both(flips, settled)
            gap_next = b.if_(flips, lambda: [ZERO], lambda: [b.op("add", gap, Lit(1.0, F64))], [F64])[0]
            # where the shifted margins put the crossing: in this step, or at most one step either side
            alpha = b.if_(event, lambda: [b.op("clamp", b.op("div_or_zero", m1, b.op("sub", m1, m)), Lit(-1.0, F64),
                                               Lit(2.0, F64))], lambda: [ZERO], [F64])[0]
            branches = [self.with_jump(branch, slots, free, z1, event) for branch in (s.then, s.orelse)]
            jumps = [b.fresh(F64) for _ in slots]
            new_if = IfElse(s.outs + tuple(jumps), s.cond, branches[0], branches[1], s.loc)
            b.stmts.append(new_if)
            self.last_if = new_if
            w = [s.outs[k] for k in slots]
            stays = b.op("not", flips)

            def corrected():
                deltas = [b.op("sub", wk, w1k) for wk, w1k in zip(w, w1)]
                late = b.op("sub", a1, Lit(1.0, F64))
                # a switch: a shift of the state, carried forward by the body's Jacobian (moving
                # the state itself would put it back on the switching surface); a reset: the
                # state moved to where it would be had the reset happened at its time of impact
                return b.if_(stays, lambda: [b.op("mul", late, b.op("sub", p, d)) for p, d in zip(pa1, deltas)] + w,
                             lambda: [ZERO] * n + [b.correction(wk, a1, b.op("sub", r, d))
                                                   for wk, r, d in zip(w, r1, deltas)], [F64] * (2 * n))

            both = b.if_(flag1, corrected, lambda: [ZERO] * n + w, [F64] * (2 * n))
            shifts, fixed = both[:n], both[n:]
            self.shifts.append((b.stmts[-1], list(zip(fixed, shifts))))
            mapping = {wk.id: f for wk, f in zip(w, fixed)}
            rest, results = _rename(body.eqns[index + 1:], body.results, mapping)
            b.stmts.extend(rest)
            increments = [b.op("sub", a, c) for a, c in zip(w1, w2)]
            return list(results) + [TRUE, s.cond, m, event, alpha, gap_next] + increments + jumps + w + list(w1) + free

        eqns, results = b.region(new_body)
        params = body.params + tuple(carried)
        new_body_block = Block(params, eqns, results)
        outs = loop.outs + tuple(b.fresh(t) for t in types)
        if isinstance(loop, ForLoop):
            return ForLoop(outs, loop.lo, loop.hi, loop.inits + tuple(inits), new_body_block, loop.loc)
        cond_params = loop.cond.params + tuple(b.fresh(t) for t in types)
        cond = Block(cond_params, loop.cond.eqns, loop.cond.results)
        return WhileLoop(outs, loop.inits + tuple(inits), cond, new_body_block, loop.loc)

    def with_jump(self, branch: Block, slots: list[int], free: list[Var], z1: list[Var], event: Atom) -> Block:
        """The branch, returning also J_branch (z - z_prev) for its float results when an event
        happens (forward mode on its IR), zeros otherwise."""
        b = self.b

        def jvp():
            from .forward import Forward

            if not _straight(branch) or not free:
                return [ZERO] * len(slots)
            dz = {z.id: [b.op("sub", z, zp)] for z, zp in zip(free, z1)}
            program = Program((), (), (), (), Block((), branch.eqns, branch.results))
            fwd = Forward(program, 1, dz, branch.results, b.next_id)
            fwd.top(program.body)
            primal = {id(e) for e in branch.eqns}
            b.stmts.extend(st for st in fwd.stmts if id(st) not in primal)
            values = [fwd.materialized(fwd.tangents(branch.results[k])[0], F64) for k in slots]
            b.next_id = fwd.next_id
            return values

        eqns, jumps = b.region(lambda: b.if_(event, jvp, lambda: [ZERO] * len(slots), [F64] * len(slots)))
        return Block(branch.params, branch.eqns + eqns, branch.results + tuple(jumps))

    # ---- a time-stepping while loop that stops ----

    def exit_event(self, loop: WhileLoop):
        cond = loop.cond
        margin = _margin(cond.results[0], cond.eqns, self.dep) if _straight(cond) else None
        slice_ = list(cond.eqns)
        if margin is None and _steps_time(loop):  # a compound condition (a guard: `and n < 10000`)
            margin, slice_ = _compound_margin(cond, self.dep)
        if margin is None:
            return loop, [], {}
        b = self.b
        b.loc = loop.loc
        slots = [k for k, o in enumerate(loop.outs) if o.type in (F64, I64)]  # an int: a step counter
        prev_c = [b.fresh(loop.outs[k].type) for k in slots]
        prev_b = [b.fresh(loop.outs[k].type) for k in slots]
        ran_c, ran_b = b.fresh(BOOL), b.fresh(BOOL)
        cond2 = Block(cond.params + tuple(prev_c) + (ran_c,), cond.eqns, cond.results)
        body = loop.body
        body2 = Block(body.params + tuple(prev_b) + (ran_b,), body.eqns,
                      body.results + tuple(body.params[k] for k in slots) + (TRUE,))
        outs_prev = [b.fresh(loop.outs[k].type) for k in slots]
        ran = b.fresh(BOOL)
        new = WhileLoop(loop.outs + tuple(outs_prev) + (ran,), loop.inits + tuple(loop.inits[k] for k in slots)
                        + (FALSE,), cond2, body2, loop.loc)

        def margin_at(values: list[Atom]) -> Var:
            mapping = {p.id: v for p, v in zip(cond.params, values)}
            renamed: dict[int, Atom] = dict(mapping)
            for e in slice_:
                fresh = tuple(b.fresh(o.type) for o in e.outs)
                b.stmts.append(replace(e, outs=fresh, ins=tuple(renamed.get(a.id, a) if isinstance(a, Var) else a
                                                                for a in e.ins)))
                renamed.update({o.id: f for o, f in zip(e.outs, fresh)})
            sign, x, y = margin
            x, y = (renamed.get(a.id, a) if isinstance(a, Var) else a for a in (x, y))
            return b.op("sub", x, y) if sign > 0 else b.op("sub", y, x)

        def after():
            last = margin_at(list(loop.outs))
            before = list(loop.outs)
            for k, p in zip(slots, outs_prev):
                before[k] = p
            previous = margin_at(before)
            # the margin crossed zero in the last trip (not so when a guard stopped the loop)
            crossed = b.both(ran, b.op("le", b.op("mul", previous, last), ZERO))
            alpha = b.if_(crossed, lambda: [b.op("div_or_zero", previous, b.op("sub", previous, last))],
                          lambda: [Lit(1.0, F64)], [F64])[0]
            fixed = []
            for k, p in zip(slots, outs_prev):
                out = loop.outs[k]
                if out.type == I64:  # a counter: its float value is moved (see counters in block)
                    out, p = b.op("to_float", out), b.op("to_float", p)
                fixed.append(b.correction(out, alpha, b.op("sub", out, p)))
            return fixed

        extra, fixed = b.region(after)
        self.changed += 1
        self.counters = {loop.outs[k].id: f for k, f in zip(slots, fixed) if loop.outs[k].type == I64}
        return new, list(extra), {loop.outs[k].id: f for k, f in zip(slots, fixed) if loop.outs[k].type == F64}


def event_program(program: Program) -> Program | None:
    """The program with its time-stepping loops' events corrected (each event's state moved
    to its time of impact: a loss continuous across events, a derivative that sees them), or
    None when it has none to correct."""
    ev = _Events(program)
    body = ev.block(program.body)
    if not ev.changed:
        return None
    return renumber(replace(program, body=body))
