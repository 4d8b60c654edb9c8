"""Resource limits checked before a kernel runs: a tape that could never fit in memory."""
from __future__ import annotations

import os

from .abi import TAPE_ENV, human_bytes, max_tape_bytes, memory_bytes  # noqa: F401 - the limits, with their checks here
from .errors import Diagnostic, ProgramError, source_text, span_at
from .ir import Block, Eqn, ForLoop, IfElse, Lit, Program, WhileLoop, size


def tape_bytes(adjoint: Program) -> tuple[int, object]:
    """The bytes of tape one data row needs, as far as they are known before running (a `for`
    loop with constant bounds; a `while` loop's trips are not known and count as none), and
    the location of the loop that needs the most."""
    best: dict = {"bytes": 0, "loc": None}

    def block(b: Block) -> int:
        words = 0
        for s in b.eqns:
            if isinstance(s, Eqn):
                if s.op == "push":
                    words += value_bytes(s.ins[0].type) // 8
            elif isinstance(s, ForLoop):
                trips = (s.hi.value - s.lo.value) if isinstance(s.lo, Lit) and isinstance(s.hi, Lit) else 0
                inner = max(0, trips) * block(s.body)
                if 8 * inner > best["bytes"]:
                    best.update(bytes=8 * inner, loc=s.loc)
                words += inner
            elif isinstance(s, WhileLoop):
                block(s.cond)
                block(s.body)  # its trips are known only when it runs
            elif isinstance(s, IfElse):
                words += max(block(s.then), block(s.orelse))
        return words

    return 8 * block(adjoint.body), best["loc"]


def check_tape_fits(adjoint: Program, command: str) -> None:
    """Refuse, before anything is allocated, a gradient whose tape for one row cannot fit in
    max_tape_bytes()."""
    need, loc = tape_bytes(adjoint)
    have = max_tape_bytes()
    if need <= have:
        return
    path = adjoint.source_path
    raise ProgramError(Diagnostic(
        f"the gradient would need a tape of {human_bytes(need)} for each data row (this loop records "
        f"the values its reverse pass reads at every step), more than the {human_bytes(have)} a row may use "
        f"(half this machine's memory, or ${TAPE_ENV}), so `dlang {command}` stops before it starts",
        span_at(loc, 3), path,
        note="run fewer steps (a shorter loop, or larger steps with a --const), or use `dlang run`, "
             "which needs no tape"), source_text(path))


def value_bytes(t) -> int:
    """Bytes of one value of type t (8 per float or int)."""
    return 8 * size(t)


MAX_NESTING = 500  # loops and ifs nested in one another: more than any real program (the code
# generator splits deep code into helper functions, so this is only a bound on absurd sizes)


def check_nesting(program: Program) -> None:
    """A program whose loops and ifs nest more than MAX_NESTING deep is an error at its
    innermost too-deep statement."""
    from .ir import blocks_of

    stack = [(program.body, 0)]
    while stack:
        block, depth = stack.pop()
        for s in block.eqns:
            if isinstance(s, Eqn):
                continue
            if depth + 1 > MAX_NESTING:
                path = program.source_path
                raise ProgramError(Diagnostic(
                    f"loops and ifs nest more than {MAX_NESTING} deep here, more than dlang compiles",
                    span_at(s.loc), path, note="combine nested conditions with `and`, or nested loops into one"),
                    source_text(path))
            stack.extend((inner, depth + 1) for inner in blocks_of(s))


def check_array_sizes(program: Program) -> None:
    """An array larger than a row may use (see max_tape_bytes) is an error before anything is
    allocated: a param, a data input or a value the body computes."""
    from .ir import walk

    limit = max_tape_bytes()
    for kind, items in (("param", program.params), ("data", program.data)):
        for item in items:
            if value_bytes(item.type) > limit:
                raise ProgramError(Diagnostic(
                    f"{kind} {item.name} is an array of {human_bytes(value_bytes(item.type))}, more than the "
                    f"{human_bytes(limit)} dlang lets one value use (half this machine's memory, or ${TAPE_ENV})",
                    None, program.source_path))
    for s in walk(program.body):
        for out in getattr(s, "outs", ()):
            if out.type.shape and value_bytes(out.type) > limit:
                raise ProgramError(Diagnostic(
                    f"this array would take {human_bytes(value_bytes(out.type))}, more than the "
                    f"{human_bytes(limit)} dlang lets one value use (half this machine's memory, or ${TAPE_ENV})",
                    span_at(s.loc), program.source_path), source_text(program.source_path))
