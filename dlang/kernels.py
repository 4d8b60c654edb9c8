"""Compiled kernels: generated source written to a content-hashed file in the kernel cache,
imported, and compiled by Numba (which caches its machine code beside the file); `Kernels`
calls them by the convention of dlang.abi."""
from __future__ import annotations

import functools
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__, abi
from .codegen import tapes_of
from .errors import Diagnostic, DlangWarning, RuntimeFault, source_text, span_at
from .ir import DEFAULT_MAX_ITERATIONS, Program, size

CACHE_ENV = "DLANG_CACHE_DIR"

# OpenMP's threads spin while they wait for work by default. When another process keeps the
# cores busy (a second dlang, a parallel test run, Dask workers), a spinning thread holds a core
# its partner needs, and a parallel call waits whole time slices: 24x slower than one thread
# on a short call, measured. Waiting threads sleep instead, unless the user chose otherwise.
# (OpenMP reads this when Numba first loads its threading layer, after this import.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cache_dir() -> Path:
    """$DLANG_CACHE_DIR, else $XDG_CACHE_HOME/dlang, else ~/.cache/dlang."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dlang"


def _write_checked(path: Path, text: str) -> None:
    """Make `path` hold exactly `text`. A file already there is read and compared (one that is
    truncated, has garbage in it or cannot be read is replaced); a new one is written to a
    temporary file and renamed into place, so no process ever reads half a file."""
    data = text.encode()
    try:
        if path.read_bytes() == data:
            return
    except OSError:  # missing, or not a readable file
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@functools.lru_cache(maxsize=None)
def _usable_dir(directory: Path) -> Path:
    """`directory`, created with its __pycache__ (where Numba writes), if files can be written in
    both; else a private directory under the system's temporary directory, with a one-line
    warning: dlang still works, the kernels are compiled and cached there."""
    try:
        _probe(directory)
        return directory
    except OSError as err:
        return _fallback_dir(directory, err.strerror or str(err))


@functools.lru_cache(maxsize=None)
def _fallback_dir(unusable: Path, reason: str) -> Path:
    """Where kernels go when `unusable` cannot be written (said once per process)."""
    fallback = Path(tempfile.gettempdir()) / f"dlang-{os.getuid()}" / "kernels"
    try:
        _private(fallback.parent)
        _probe(fallback)
    except OSError:  # not ours, or not writable either: a new directory for this process
        fallback = Path(tempfile.mkdtemp(prefix="dlang-kernels-"))
    import warnings

    warnings.warn(DlangWarning(f"cannot write the kernel cache {unusable} ({reason}); "
                               f"compiling kernels in {fallback} instead"), stacklevel=2)
    return fallback


def _probe(directory: Path) -> None:
    for d in (directory, directory / "__pycache__"):
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".probe-")
        os.close(fd)
        os.unlink(tmp)


def _private(directory: Path) -> None:
    """A directory only this user can write (made if missing): one another user made in the
    shared temporary directory is refused, as its kernels would run as this user's code."""
    import stat

    directory.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise PermissionError(f"{directory} is not a private directory")


class Kernels:
    """The compiled kernels of one program, and how to call them: a value, made whole by
    `load_kernels`. It pickles (as the IR and source it was made from) and is rebuilt from the
    kernel cache in another process, compiling only what that cache lacks.

    Every call takes the data matrix, the params (name -> float or array) and, optionally, the
    row labels a user sees (the file's row numbers when rows were skipped) for fault messages."""

    def __init__(self, program: Program, forward: Program, adjoint: Program, source: str, path: Path,
                 module, max_iterations: int = DEFAULT_MAX_ITERATIONS):
        self.program = program  # as checked
        self.forward = forward  # the program after the kernel passes
        self.adjoint = adjoint  # its adjoint after the kernel passes
        self.source = source
        self.path = path
        self.module = module
        self.max_iterations = max_iterations
        self._tape_sizes = np.zeros(2 * len(tapes_of(adjoint)), np.int64)  # the sizes the last call needed
        self._row_seconds: dict[str, float] = {}  # a row's work on one thread, as the last call measured it
        self.derived: dict = {}  # (mode, directions) -> the kernels of a derived program (dlang.derivatives)

    def __reduce__(self):
        return (_rebuild, (self.program, self.forward, self.adjoint, self.source, self.max_iterations))

    def _param_args(self, params: dict) -> list:
        args = []
        for p in self.program.params:
            v = params[p.name]
            args.append(np.ascontiguousarray(v, dtype=np.float64) if p.type.shape else float(v))
        return args

    def forward_rows(self, data: np.ndarray, params: dict, rows=None) -> tuple[np.ndarray, np.ndarray]:
        """Each row's loss, and its outputs (one column per output value)."""
        n = data.shape[0]
        losses = np.empty(n)
        outs = np.empty((n, abi.output_width(self.program)))
        args = self._param_args(params)
        with _numba_recursion(), _Timed(self, "forward", n) as timed:
            if timed.parallel:
                with _dynamic_chunks():
                    fault = getattr(self.module, abi.FORWARD_CHUNKS)(data, abi.CHUNKS, *args, losses, outs)
            else:  # each row's own: no order to keep
                fault = getattr(self.module, abi.FORWARD)(data, 0, n, *args, losses, outs)
        self._check(fault, data, rows)
        return losses, outs

    def loss(self, data: np.ndarray, params: dict, rows=None) -> float:
        """The mean loss over the rows (the rows' sums added in chunk order, as for grad)."""
        n = data.shape[0]
        args = self._param_args(params)
        with _numba_recursion(), _Timed(self, "loss", n) as timed:
            if not timed.chunked:
                total, *fault = getattr(self.module, abi.LOSS)(data, 0, n, *args)
            elif timed.parallel:
                with _dynamic_chunks():
                    total, *fault = getattr(self.module, abi.LOSS_CHUNKS)(data, abi.CHUNKS, *args)
            else:
                total, *fault = getattr(self.module, abi.LOSS_CHUNKS_SERIAL)(data, abi.CHUNKS, *args)
        self._check(fault, data, rows)
        return total / n

    def grad(self, data: np.ndarray, params: dict, rows=None) -> tuple[float, dict]:
        """The mean loss over rows and its gradient with respect to every param."""
        result = self.gradient(data, params, rows)
        return result.loss, result.grads

    def gradient(self, data: np.ndarray, params: dict, rows=None) -> "GradResult":
        """The mean loss, its gradient, and the tape bytes a row used (mean over the rows).

        From abi.parallel_min_rows() rows on, the rows are split into abi.CHUNKS chunks, run in
        parallel (or in order on one thread) and summed in chunk order: the same result, bit
        for bit, whatever the number of threads."""
        n = data.shape[0]
        args = self._param_args(params)
        with _numba_recursion(), _Timed(self, "grad", n) as timed:
            if not timed.chunked:
                total = np.zeros(abi.grad_width([size(t) for t in self.adjoint.grad_types()]))
                sizes = self._tape_sizes.copy()
                fault = getattr(self.module, abi.GRAD)(data, 0, n, *args, sizes, total)
            elif timed.parallel:
                with _dynamic_chunks():
                    total, sizes, *fault = getattr(self.module, abi.GRAD_CHUNKS)(
                        data, abi.CHUNKS, *args, self._tape_sizes)
            else:
                total, sizes, *fault = getattr(self.module, abi.GRAD_CHUNKS_SERIAL)(
                    data, abi.CHUNKS, *args, self._tape_sizes)
        self._check(fault, data, rows, adjoint=True)
        self._tape_sizes = sizes  # where the next call's tapes start
        loss = float(total[0]) / n
        grads, offset = {}, 1
        for name, t in zip(self.adjoint.grads, self.adjoint.grad_types()):
            k = size(t)
            value = total[offset:offset + k] / n
            grads[name] = value.reshape(t.shape) if t.shape else float(value[0])
            offset += k
        return GradResult(loss, grads, 8.0 * float(total[offset]) / max(1, n))

    def _check(self, fault, data, rows, adjoint: bool = False) -> None:
        """A fault a kernel reported, (code, row) (the first chunk's, in chunk order), as a
        RuntimeFault naming the source line and the data row; nothing when the code is 0."""
        code, row = (int(x) for x in fault)
        if code == 0:
            return
        label = int(rows[row]) if rows is not None and len(rows) == data.shape[0] else row + 1
        per_row = self.program.data and not self.program.whole_columns
        raise _fault(self, *abi.decode_fault(code), label if per_row else None)


@dataclass
class GradResult:
    loss: float
    grads: dict
    tape_bytes_per_row: float  # 8 bytes per value taped, mean over the rows


def _fault(kernels: Kernels, what: str, line: int, col: int, row: int | None) -> RuntimeFault:
    where = f" (data row {row})" if row is not None else ""
    note = None
    if what == "index":
        message = f"an index is out of range{where}"
    elif what == "value":
        message = f"int() was given a value that is not finite or too large for an int{where}"
    elif what == "tape":
        message = (f"the gradient's tape for a row{where} grew past the {abi.human_bytes(abi.max_tape_bytes())} a row may "
                   f"use (half this machine's memory, or ${abi.TAPE_ENV}): a while loop ran for very many steps")
        note = "run fewer steps, or lower --max-iterations to stop such a loop sooner"
    else:
        message = (f"the while loop ran more than {kernels.max_iterations:,} times{where}; "
                   "its condition may never become false")
        note = "raise the cap with --max-iterations if the loop really needs more steps"
    path = kernels.program.source_path
    span = span_at((line, col)) if line else None
    fault = RuntimeFault(Diagnostic(message, span, path, note), source_text(path))
    fault.kind = what  # "index", "while" or "tape"
    return fault


class _Timed:
    """Chooses the threads of one call from its work, and measures it for the next call.

    From abi.parallel_min_rows() rows on, a call runs its chunks in parallel when Numba has
    more than one thread and the work (rows times the seconds a row took in the last call, on
    one thread) is at least abi.parallel_min_seconds(); otherwise the same chunks run in order
    on one thread. The chunk sums are the same either way, so this never changes a result."""

    def __init__(self, kernels: Kernels, kind: str, rows: int):
        self.kernels, self.kind, self.rows = kernels, kind, rows
        self.chunked = rows >= abi.parallel_min_rows()  # else one call of the serial kernel
        self.threads = _threads() if self.chunked else 1
        self.timed = self.threads > 1  # with one thread there is nothing to choose
        if self.timed:
            per_row = kernels._row_seconds.get(kind)
            if per_row is not None and per_row * rows < abi.parallel_min_seconds():
                self.threads = 1
        self.parallel = self.threads > 1

    def __enter__(self):
        if self.timed:
            self.start = time.perf_counter()
        return self

    def __exit__(self, kind, err, tb):
        if self.timed and err is None and self.rows:
            seconds = time.perf_counter() - self.start
            self.kernels._row_seconds[self.kind] = seconds * self.threads / self.rows


class _dynamic_chunks:
    """The parallel chunk loop hands out chunks one at a time to whichever thread is free
    (Numba's static split gives each thread half the chunks up front: when the machine is
    shared and one thread waits for a core, the other then waits for it)."""

    def __enter__(self):
        self.previous = _numba().set_parallel_chunksize(1)  # returns the chunk size it replaces

    def __exit__(self, *exc):
        _numba().set_parallel_chunksize(self.previous)


def _threads() -> int:
    """Numba's thread count now: with one, the chunked kernels run without the thread pool."""
    return _numba().get_num_threads()


@functools.lru_cache(maxsize=1)
def _numba():
    import numba

    return numba


class _numba_recursion:
    """Numba's SSA pass recurses once per basic block along a path; long generated functions
    need more than Python's default limit (it is restored afterwards)."""

    LIMIT = 100_000

    def __enter__(self):
        self.old = sys.getrecursionlimit()
        if self.old < self.LIMIT:
            sys.setrecursionlimit(self.LIMIT)

    def __exit__(self, *exc):
        sys.setrecursionlimit(self.old)


@functools.lru_cache(maxsize=1)
def _runtime_digest() -> str:
    """A hash of dlang/runtime.py: Numba's cache of a kernel holds the runtime helpers compiled
    into it, so a kernel compiled against another runtime must not be reused."""
    from . import runtime

    return hashlib.sha256(Path(runtime.__file__).read_bytes()).hexdigest()


def load_kernels(program: Program, forward: Program, adjoint: Program, source: str,
                 max_iterations: int = DEFAULT_MAX_ITERATIONS) -> Kernels:
    """Write the kernel source to the cache (named by a hash of it) and load it; Numba compiles
    each kernel the first time it is called, or loads it from its cache beside the file."""
    import numba

    key = hashlib.sha256("\n".join([source, __version__, numba.__version__, _runtime_digest()]).encode()
                         ).hexdigest()[:32]
    directory = _usable_dir(Path(os.path.abspath(cache_dir())) / "kernels")
    path = directory / f"k_{key}.py"
    try:
        _write_checked(path, source)
    except OSError as err:  # e.g. k_<key>.py is a directory, or the disk is full
        path = _fallback_dir(path, err.strerror or str(err)) / path.name
        _write_checked(path, source)
    name = f"dlang_kernel_{key}"
    module = sys.modules.get(name)
    if module is None:
        module = _load_module(name, path, source)
    return Kernels(program, forward, adjoint, source, path, module, max_iterations)


def _rebuild(program, forward, adjoint, source, max_iterations) -> Kernels:
    """Unpickling: the same kernels, from this process's kernel cache."""
    return load_kernels(program, forward, adjoint, source, max_iterations)


def _load_module(name: str, path: Path, source: str):
    """Run the kernel source as module `name`, compiled from `source` in memory (the text the
    file was just checked to hold): no .pyc is read or written, so none can be stale or damaged.
    Numba finds the file by the code's file name and caches its machine code beside it."""
    import types

    module = types.ModuleType(name)
    module.__file__ = str(path)
    code = compile(source, str(path), "exec")
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    for value in list(vars(module).values()):
        _check_numba_cache(value, sealed=True)
    _check_runtime_caches()
    return module


# ---- Numba's cache files, checked ----
#
# Numba reads its cache files (an index *.nbi per function, a data file *.nbc per compiled
# signature) with pickle and trusts them: a truncated or garbage file makes it raise (an
# internal error for dlang), and a damaged one that still unpickles could run wrong code. The
# kernels' dispatchers get a cache whose files each carry a SHA-256 of their content, and whose
# data files also hold the key they were saved under; a file that fails either check reads as
# missing, so Numba compiles the function again and rewrites the file. Writing a cache file
# that fails (a full disk) leaves the function compiled in memory.


def _check_numba_cache(dispatcher, sealed: bool) -> None:
    cache = getattr(dispatcher, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    if cache_file is None:
        return
    checked, sealed_cls = _cache_file_classes()
    if type(cache_file) in (checked, sealed_cls):
        return
    cache_file.__class__ = sealed_cls if sealed else checked


@functools.lru_cache(maxsize=1)
def _check_runtime_caches() -> None:
    """The runtime helpers (compiled into kernels, cached by Numba beside dlang/runtime.py) keep
    Numba's file format, as other code may load them, but a damaged file reads as missing."""
    from . import runtime

    for value in list(vars(runtime).values()):
        _check_numba_cache(value, sealed=False)


_SEAL = b"dlang-numba-cache-1\n"


@functools.lru_cache(maxsize=1)
def _cache_file_classes():
    import pickle

    from numba.core.caching import IndexDataCacheFile

    class Checked(IndexDataCacheFile):
        """Numba's format; a file that cannot be read back reads as missing."""

        def _load_index(self):
            try:
                overloads = super()._load_index()
            except Exception:  # noqa: BLE001 - truncated, empty, garbage: compile again
                return {}
            return overloads if isinstance(overloads, dict) else {}

        def _load_data(self, name):
            try:
                return super()._load_data(name)
            except Exception as err:  # noqa: BLE001 - Numba's load() treats OSError as a missing file
                raise OSError(f"damaged cache file {name}") from err

        def save(self, key, data):
            try:
                super().save(key, data)
            except OSError:  # the function is compiled; only caching it failed
                pass

    class Sealed(Checked):
        """Each file: a marker, the SHA-256 of the pickle, the pickle."""

        def _write_sealed(self, path, obj):
            payload = self._dump(obj)
            with self._open_for_write(path) as f:
                f.write(_SEAL + hashlib.sha256(payload).digest() + payload)

        def _read_sealed(self, path):
            with open(path, "rb") as f:  # OSError (a missing file) goes to the caller
                raw = f.read()
            payload = raw[len(_SEAL) + 32:]
            if not raw.startswith(_SEAL) or raw[len(_SEAL):len(_SEAL) + 32] != hashlib.sha256(payload).digest():
                raise ValueError("damaged cache file")
            return pickle.loads(payload)

        def _save_index(self, overloads):
            self._write_sealed(self._index_path, (self._version, self._source_stamp, overloads))

        def _load_index(self):
            try:
                version, stamp, overloads = self._read_sealed(self._index_path)
            except Exception:  # noqa: BLE001 - missing, damaged, or another format: compile again
                return {}
            if version != self._version or stamp != self._source_stamp or not isinstance(overloads, dict):
                return {}
            return overloads

        def _save_data(self, name, data):
            self._write_sealed(self._data_path(name), data)

        def _load_data(self, name):
            try:
                return self._read_sealed(self._data_path(name))
            except OSError:
                raise
            except Exception as err:  # noqa: BLE001
                raise OSError(f"damaged cache file {name}") from err

        def save(self, key, data):
            super().save(key, (key, data))

        def load(self, key):
            got = super().load(key)
            if isinstance(got, tuple) and len(got) == 2 and got[0] == key:
                return got[1]
            return None  # missing, or saved under another key: compile again

    return Checked, Sealed
