"""Compiled kernels: generated source written to a content-hashed file in the kernel cache,
imported, and compiled by Numba (which caches its machine code beside the file)."""
from __future__ import annotations

import functools
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .codegen import DEFAULT_MAX_ITERATIONS, decode_fault, generate, output_width
from .errors import Diagnostic, RuntimeFault, source_text, span_at
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
    sys.stderr.write(f"dlang: warning: cannot write the kernel cache {unusable} ({reason}); "
                     f"compiling kernels in {fallback} instead\n")
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


@dataclass
class Kernels:
    """The compiled forward and adjoint kernels of one program, and how to call them."""

    program: Program
    adjoint: Program
    source: str
    path: Path
    module: object
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    row_numbers: object = None  # the file's data-row number of each row, when --drop-bad-rows skipped some

    def row_label(self, data: np.ndarray, r: int) -> int:
        """The data-row number a user sees for row r of `data` (the file's numbering)."""
        numbers = self.row_numbers
        if numbers is not None and len(numbers) == data.shape[0]:
            return int(numbers[r])
        return r + 1
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
        where = f" (data row {self.kernels.row_label(self.data, row)})" if row is not None else ""
        note = None
        if what == "index":
            message = f"an index is out of range{where}"
        elif what == "tape":
            from .limits import TAPE_ENV, human_bytes, max_tape_bytes

            message = (f"the gradient's tape for a row{where} grew past the {human_bytes(max_tape_bytes())} a row may "
                       f"use (half this machine's memory, or ${TAPE_ENV}): a while loop ran for very many steps")
            note = "run fewer steps, or lower --max-iterations to stop such a loop sooner"
        else:
            message = (f"the while loop ran more than {self.kernels.max_iterations:,} times{where}; "
                       "its condition may never become false")
            note = "raise the cap with --max-iterations if the loop really needs more steps"
        path = self.kernels.program.source_path
        span = span_at((line, col)) if line else None
        raise RuntimeFault(Diagnostic(message, span, path, note), source_text(path)) from None

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
    return Kernels(program, adjoint, source, path, module, max_iterations)


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
