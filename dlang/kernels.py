"""Compiled kernels: generated source written to a content-hashed file in the kernel cache,
imported, and compiled by Numba (which caches its machine code beside the file)."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .codegen import DEFAULT_MAX_ITERATIONS, decode_fault, generate, output_width
from .errors import Diagnostic, RuntimeFault, Span
from .ir import Program
from .reverse import reverse_ad

CACHE_ENV = "DLANG_CACHE_DIR"
PARALLEL_MIN_ROWS = 2048  # from here on, kernels run in parallel over rows (NUMBA_FACTS: below a few
CHUNKS = 64               # thousand light rows a serial loop is as fast); a fixed number of chunks


def cache_dir() -> Path:
    """$DLANG_CACHE_DIR, else $XDG_CACHE_HOME/dlang, else ~/.cache/dlang."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dlang"


def _write_once(path: Path, text: str) -> None:
    """Write a file that is never rewritten: a temporary file, then an atomic rename."""
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclass
class Kernels:
    """The compiled forward and adjoint kernels of one program, and how to call them."""

    program: Program
    adjoint: Program
    source: str
    path: Path
    module: object
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    _tapes: tuple | None = None
    _chunk_tapes: tuple = (256, 64)  # float and int words each chunk's tapes start with
    tape_bytes_per_row: float = 0.0  # of the last grad call: 8 bytes per value taped, mean over rows

    def _param_args(self, params: dict) -> list:
        args = []
        for p in self.program.params:
            v = params[p.name]
            args.append(np.ascontiguousarray(v, dtype=np.float64) if p.type.shape else float(v))
        return args

    def forward_rows(self, data: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
        """Each row's loss, and its outputs (one column per output value)."""
        n = data.shape[0]
        losses = np.empty(n)
        outs = np.empty((n, output_width(self.program)))
        with self._faults(data, params) as faults:
            if n < PARALLEL_MIN_ROWS or _threads() == 1:  # each row's own: no order to keep
                return self.module.dl_forward_rows(data, *self._param_args(params), losses, outs)
            codes = np.zeros(n, np.int64)
            self.module.dl_forward_rows_par(data, *self._param_args(params), losses, outs, codes)
            faults.check(codes)
            return losses, outs

    def loss(self, data: np.ndarray, params: dict) -> float:
        return float(np.mean(self.forward_rows(data, params)[0]))

    def grad(self, data: np.ndarray, params: dict) -> tuple[float, dict]:
        """The mean loss over rows and its gradient with respect to every param."""
        if data.shape[0] >= PARALLEL_MIN_ROWS:
            return self._grad_chunks(data, params)
        if self._tapes is None:
            self._tapes = (np.empty(4096), np.empty(1024, np.int64))
        with self._faults(data, params):
            loss, *grads_and_tapes = self.module.dl_grad_rows(data, *self._param_args(params), *self._tapes)
        grads = grads_and_tapes[:-3]
        self.tape_bytes_per_row = 8.0 * grads_and_tapes[-3] / max(1, data.shape[0])
        self._tapes = tuple(grads_and_tapes[-2:])  # grown tapes are kept for the next call
        return float(loss), {p.name: (g if p.type.shape else float(g)) for p, g in zip(self.program.params, grads)}

    def _grad_chunks(self, data: np.ndarray, params: dict) -> tuple[float, dict]:
        """Parallel over a fixed number of chunks of rows, summed in chunk order: the same
        result, bit for bit, whatever the number of threads."""
        k = CHUNKS
        closs, cwords = np.zeros(k), np.zeros(k, np.int64)
        cgrads = [np.zeros((k, *p.type.shape)) for p in self.program.params]
        codes = np.zeros(k, np.int64)
        tapes = np.zeros((k + 1, 2), np.int64)
        tapes[0] = self._chunk_tapes  # the tape sizes the chunks needed last time
        with self._faults(data, params) as faults:
            kernel = self.module.dl_grad_chunks if _threads() > 1 else self.module.dl_grad_chunks_serial
            loss, *grads, words = kernel(data, *self._param_args(params), k, tapes, closs, cwords, *cgrads, codes)
            faults.check(codes)
        self._chunk_tapes = tapes[1:].max(axis=0)
        self.tape_bytes_per_row = 8.0 * float(words) / data.shape[0]
        return float(loss), {p.name: (g if p.type.shape else float(g)) for p, g in zip(self.program.params, grads)}

    def _faults(self, data, params):
        return _FaultReport(self, data, params)


def _threads() -> int:
    """Numba's thread count now: with one, the chunked kernels run without the thread pool."""
    import numba

    return numba.get_num_threads()


class _FaultReport:
    """Turns a fault raised inside a kernel into a RuntimeFault naming the line and the row."""

    def __init__(self, kernels: Kernels, data, params):
        self.kernels, self.data, self.params = kernels, data, params

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if err is None or not isinstance(err, (IndexError, RuntimeError)) or "dl_fault:" not in str(err):
            return False
        what, line, col = str(err).split("dl_fault:")[1].split(":")[:3]
        self.fail(what, int(line), int(col))

    def check(self, codes: np.ndarray) -> None:
        """Fault codes a parallel kernel left (it cannot raise inside prange)."""
        found = np.flatnonzero(codes)
        if found.size:
            self.fail(*decode_fault(int(codes[found[0]])))

    def fail(self, what: str, line: int, col: int):
        row = self._find_row(adjoint=what == "tape")
        where = f" (data row {row + 1})" if row is not None else ""
        note = None
        if what == "index":
            message = f"an index is out of range{where}"
        elif what == "tape":
            from .limits import TAPE_ENV, _size, max_tape_bytes

            message = (f"the gradient's tape for a row{where} grew past the {_size(max_tape_bytes())} a row may "
                       f"use (half this machine's memory, or ${TAPE_ENV}): a while loop ran for very many steps")
            note = "run fewer steps, or lower --max-iterations to stop such a loop sooner"
        else:
            message = (f"the while loop ran more than {self.kernels.max_iterations:,} times{where}; "
                       "its condition may never become false")
            note = "raise the cap with --max-iterations if the loop really needs more steps"
        span = Span(line, col, line, col + 1) if line else None
        source = None
        path = self.kernels.program.source_path
        if path and os.path.exists(path):
            source = Path(path).read_text(encoding="utf-8-sig", errors="replace")
        raise RuntimeFault(Diagnostic(message, span, path, note), source) from None

    def _find_row(self, adjoint: bool = False):
        """Which row faults: rerun the rows one at a time (only on this error path); a tape
        that outgrows its limit shows only in the adjoint kernel."""
        k = self.kernels
        args = k._param_args(self.params)
        for r in range(self.data.shape[0]):
            try:  # the serial kernels: a parallel one may fault in another row first
                if adjoint:
                    k.module.dl_grad_rows(self.data[r:r + 1], *args, np.empty(16), np.empty(16, np.int64))
                else:
                    k.module.dl_forward_rows(self.data[r:r + 1], *args, np.empty(1),
                                             np.empty((1, output_width(k.program))))
            except (IndexError, RuntimeError):
                return r
        return None


@functools.lru_cache(maxsize=1)
def _runtime_digest() -> str:
    """A hash of dlang/runtime.py: Numba's cache of a kernel holds the runtime helpers compiled
    into it, so a kernel compiled against another runtime must not be reused."""
    from . import runtime

    return hashlib.sha256(Path(runtime.__file__).read_bytes()).hexdigest()


def compile_kernels(program: Program, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> Kernels:
    """Generate, cache and load the kernels of a program."""
    adjoint = reverse_ad(program)
    source = generate(program, adjoint, max_iterations)
    import numba

    key = hashlib.sha256("\n".join([source, __version__, numba.__version__, _runtime_digest()]).encode()
                         ).hexdigest()[:32]
    path = cache_dir() / "kernels" / f"k_{key}.py"
    _write_once(path, source)
    name = f"dlang_kernel_{key}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return Kernels(program, adjoint, source, path, module, max_iterations)

