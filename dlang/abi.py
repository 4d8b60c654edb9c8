"""The kernels' calling convention, in one place: the generated functions' names, what they
take and return, how rows are split into chunks, and how a fault is coded.

dlang.codegen writes the kernels to this convention and dlang.kernels calls them by it.

- FORWARD(data, lo, hi, *params, losses, outs) -> (fault, row): rows lo..hi-1 of `data`
  write their loss into losses[r] and their outputs into outs[r, :].
- LOSS(data, lo, hi, *params) -> (sum, fault, row): the sum of rows lo..hi-1's losses (the
  program without its outputs: what training and finite differences need).
- GRAD(data, lo, hi, *params, sizes, out) -> (fault, row): rows lo..hi-1; `out` (GRAD_WIDTH
  floats) receives the sum of the rows' losses, the sum of their gradients (every param's
  elements, in declaration order, row-major) and the tape words the rows used; `sizes` (two
  ints per tape: float words, int words) holds the tape sizes to start with and receives those
  the rows ended with.
- FORWARD_CHUNKS(data, nchunks, *params, losses, outs) -> (fault, row),
  LOSS_CHUNKS(data, nchunks, *params) -> (sum, fault, row) and
  GRAD_CHUNKS(data, nchunks, *params, tape_hint) -> (sums, tape sizes, fault, row), parallel
  over chunks (prange), and LOSS_CHUNKS_SERIAL, GRAD_CHUNKS_SERIAL, the same chunks in order on
  one thread: they call FORWARD, LOSS or GRAD once per chunk, chunk c getting rows
  chunk_bounds(c, n, nchunks), each with its own tapes, sums and fault. The chunks' sums are
  added in chunk order, so a loss or gradient is the same, bit for bit, whatever the number of
  threads: the parallel path runs exactly the serial function on each chunk.
- A fault (an index out of range, a while loop past --max-iterations, a tape past its limit)
  stops the chunk: it returns (fault code, row), or (0, 0) when all went well.
"""
from __future__ import annotations

import os

from .errors import InputError
from .ir import size

FORWARD = "dl_forward"
LOSS = "dl_loss"
GRAD = "dl_grad"
FORWARD_CHUNKS = "dl_forward_chunks"
LOSS_CHUNKS = "dl_loss_chunks"
LOSS_CHUNKS_SERIAL = "dl_loss_chunks_serial"
GRAD_CHUNKS = "dl_grad_chunks"
GRAD_CHUNKS_SERIAL = "dl_grad_chunks_serial"

CHUNKS = 64  # a fixed number of chunks: the sums do not depend on the threads
PARALLEL_MIN_ROWS = 2048  # from here on, the chunked kernels run (NUMBA_FACTS: below a few
PARALLEL_ENV = "DLANG_PARALLEL_MIN_ROWS"  # thousand light rows a serial loop is as fast)


PARALLEL_MIN_SECONDS = 0.001  # a call whose work is less than this runs its chunks on one thread:
PARALLEL_SECONDS_ENV = "DLANG_PARALLEL_MIN_SECONDS"  # waking a second thread costs more than it saves,
# and when the machine is shared the second thread may wait a whole time slice for a core


def parallel_min_rows() -> int:
    """Rows from which the chunked kernels run ($DLANG_PARALLEL_MIN_ROWS lowers it for tests)."""
    return int(_env_number(PARALLEL_ENV, PARALLEL_MIN_ROWS, 1))


def parallel_min_seconds() -> float:
    """The least work (seconds on one thread) a call takes more than one thread for
    ($DLANG_PARALLEL_MIN_SECONDS: 0 makes every chunked call parallel, as the tests do)."""
    return _env_number(PARALLEL_SECONDS_ENV, PARALLEL_MIN_SECONDS, 0.0)


def _env_number(name: str, default: float, least: float) -> float:
    text = os.environ.get(name)
    if text:
        try:
            return max(least, float(text))
        except ValueError:
            pass
    return default


def chunk_bounds(c: int, n: int, chunks: int) -> tuple[int, int]:
    return c * n // chunks, (c + 1) * n // chunks


def grad_width(param_sizes: list[int]) -> int:
    """Floats in a GRAD call's `out`: the loss, every gradient element, the tape words."""
    return 2 + sum(param_sizes)


# ---- faults ---------------------------------------------------------------------------------------

FAULT_KINDS = {"index": 1, "while": 2, "tape": 3, "value": 4}  # value: int() of a non-finite or huge float


def fault_code(kind: str, line: int, col: int) -> int:
    return FAULT_KINDS[kind] * 10**12 + line * 10**6 + col


def decode_fault(code: int) -> tuple[str, int, int]:
    kind = {v: k for k, v in FAULT_KINDS.items()}[code // 10**12]
    return kind, (code // 10**6) % 10**6, code % 10**6


# ---- the data matrix and the outputs -----------------------------------------------------------------

def data_layout(program) -> list[tuple[int, int]]:
    """(first column, width) of each data input in the data matrix a kernel reads."""
    out, col = [], 0
    for d in program.data:
        width = size(d.type)
        out.append((col, width))
        col += width
    return out


def data_width(program) -> int:
    return sum(w for _, w in data_layout(program))


def output_width(program) -> int:
    """Columns of the outputs matrix: one per output value element."""
    return sum(size(r.type) for r in program.body.results[1:1 + len(program.outputs)])


# ---- how much tape a row may use ----------------------------------------------------------------------

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
            raise InputError(f"${TAPE_ENV} must be a positive number of bytes, not {text!r}")
        return value
    return memory_bytes() // 2


def human_bytes(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"
