"""Resource limits checked before a kernel runs: a tape that could never fit in memory."""
from __future__ import annotations

import os

from .errors import Diagnostic, ProgramError, source_text, span_at
from .ir import Block, Eqn, ForLoop, IfElse, Lit, Program, WhileLoop


def memory_bytes() -> int:
    """This machine's physical memory (a large guess where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux or macOS
        return 1 << 40


TAPE_ENV = "DLANG_MAX_TAPE_BYTES"


def max_tape_bytes() -> int:
    """The most tape one data row may use: half this machine's memory, or $DLANG_MAX_TAPE_BYTES."""
    text = os.environ.get(TAPE_ENV)
    if text:
        try:
            number = float(text)
            value = int(number) if number == number and number != float("inf") else 0
        except (ValueError, OverflowError):
            value = 0
        if value <= 0:
            from .errors import InputError

            raise InputError(f"${TAPE_ENV} must be a positive number of bytes, not {text!r}")
        return value
    return memory_bytes() // 2


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
    n = 8
    for k in t.shape:
        n *= k
    return n


def human_bytes(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


# Python's own limits on the generated source: 20 statically nested loops, 100 indentation
# levels. The row loop, the tape retry loop, a parallel kernel's chunk loop and the loops an
# array operation is written as take up to 7 and 12 of them.
MAX_LOOP_DEPTH = 13
MAX_BLOCK_DEPTH = 80


def check_nesting(program: Program) -> None:
    """A program whose loops (or loops and ifs) nest deeper than the kernels can be compiled
    with is an error at its innermost too-deep statement."""
    from .ir import blocks_of

    def deepest(b: Block, loops: int, blocks: int):
        for s in b.eqns:
            if isinstance(s, Eqn):
                continue
            is_loop = not isinstance(s, IfElse)
            depth = (loops + is_loop, blocks + 1)
            if depth[0] > MAX_LOOP_DEPTH or depth[1] > MAX_BLOCK_DEPTH:
                return s, depth
            for inner in blocks_of(s):
                found = deepest(inner, *depth)
                if found:
                    return found
        return None

    found = deepest(program.body, 0, 0)
    if found is None:
        return
    s, (loops, blocks) = found
    if loops > MAX_LOOP_DEPTH:
        what = f"loops nest {loops} deep here; the compiled kernels allow at most {MAX_LOOP_DEPTH}"
        note = "combine nested loops into one (a loop over i * n + j), or split the work into loops one after another"
    else:
        what = f"loops and ifs nest {blocks} deep here; the compiled kernels allow at most {MAX_BLOCK_DEPTH}"
        note = "combine nested conditions with `and`, or use min, max or clamp instead of an if"
    path = program.source_path
    raise ProgramError(Diagnostic(what + " (Python, which Numba compiles, limits how deep code may nest)",
                                  span_at(s.loc), path, note=note), source_text(path))


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
