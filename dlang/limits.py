"""Resource limits checked before a kernel runs: a tape that could never fit in memory."""
from __future__ import annotations

import os

from .errors import Diagnostic, ProgramError, Span
from .ir import Block, Eqn, ForLoop, IfElse, Lit, Program, WhileLoop


def memory_bytes() -> int:
    """This machine's physical memory (a large guess where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux or macOS
        return 1 << 40


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
                    shape = s.ins[0].type.shape
                    size = 1
                    for n in shape:
                        size *= n
                    words += size
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
    half of this machine's memory."""
    need, loc = tape_bytes(adjoint)
    have = memory_bytes()
    if need <= have // 2:
        return
    span = Span(loc[0], loc[1], loc[0], loc[1] + 3) if loc else None
    source = None
    path = adjoint.source_path
    if path and os.path.exists(path):
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            source = f.read()
    raise ProgramError(Diagnostic(
        f"the gradient would need a tape of {_size(need)} for each data row (this loop records "
        f"the values its reverse pass reads at every step), more than this machine's memory "
        f"({_size(have)}), so `dlang {command}` stops before it starts",
        span, path,
        note="run fewer steps (a shorter loop, or larger steps with a --const), or use `dlang run`, "
             "which needs no tape"), source)


def _size(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"
