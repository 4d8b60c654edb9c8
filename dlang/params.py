"""Params files: JSON mapping each param's name to a number or nested lists of its shape."""
from __future__ import annotations

import difflib
import json
import math
import os
import tempfile

import numpy as np

from .errors import Diagnostic, InputError, Span
from .ir import Program, initial_params


def _error(path: str, message: str, span: Span | None = None, source: str | None = None) -> InputError:
    return InputError(Diagnostic(message, span, path), source)


def load_params(program: Program, path: str | None, seed: int = 0, start: dict | None = None) -> dict:
    """The starting params, with the values the file gives (a param it omits keeps its start:
    `start`'s value, else its declared init)."""
    params = initial_params(program, seed) if start is None else dict(start)
    if path is None:
        return params
    if os.path.isdir(path):
        raise _error(path, "is a directory, not a params file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except OSError as err:
        raise _error(path, f"cannot read the params file ({err.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise _error(path, f"cannot read the params file as UTF-8 text: byte 0x{raw[err.start]:02x} is not UTF-8",
                     Span(line, col, line, col + 1), raw.decode("utf-8", errors="replace")) from None
    try:
        values = json.loads(text, parse_constant=_JsonConstant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        span = Span(err.lineno, err.colno, err.lineno, err.colno + 1)
        raise _error(path, f"this is not valid JSON: {err.msg[0].lower() + err.msg[1:]}", span, text) from None
    except ValueError as err:
        raise _error(path, str(err)) from None
    if not isinstance(values, dict):
        raise _error(path, "a params file must be a JSON object mapping param names to values")
    shapes = {p.name: p.type.shape for p in program.params}
    for name, value in values.items():
        if name not in shapes:
            close = difflib.get_close_matches(name, list(shapes), 1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            known = ", ".join(shapes) or "none"
            raise _error(path, f"the program has no param '{name}'{hint} (its params: {known})",
                         _key_span(text, name), text)
        try:
            params[name] = _convert(path, name, value, shapes[name])
        except InputError as err:  # point at the param's entry in the file
            d = err.diagnostics[0]
            raise _error(path, d.message, _key_span(text, name), text) from None
        bounds = next(p.bounds for p in program.params if p.name == name)
        if bounds is not None and not np.all((np.asarray(params[name]) > bounds[0]) & (np.asarray(params[name]) < bounds[1])):
            raise _error(path, f"param '{name}' must stay inside its bounds ({bounds[0]:g}, {bounds[1]:g}), but the "
                               "file gives a value outside them", _key_span(text, name), text)
    return params


class _JsonConstant(float):
    """NaN, Infinity or -Infinity as written in the file (JSON has no such numbers)."""

    def __new__(cls, word: str):
        value = super().__new__(cls, word.replace("Infinity", "inf"))
        value.word = word
        return value


def _first_non_number(value) -> tuple[bool, object]:
    """(True, leaf) for the first leaf of nested lists that is not a number, else (False, None)."""
    stack = [value]
    while stack:
        x = stack.pop(0)
        if isinstance(x, list):
            stack = x + stack
        elif isinstance(x, bool) or not isinstance(x, (int, float)):
            return True, x
    return False, None


def _key_span(text: str, name: str) -> Span | None:
    """Where `"name":` stands in the JSON text (the first time), for a caret under it."""
    import re

    m = re.search(re.escape(json.dumps(name)) + r"\s*:", text)
    if not m:
        return None
    line = text.count("\n", 0, m.start()) + 1
    col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
    return Span(line, col, line, col + len(json.dumps(name)))


def _unique_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"param '{key}' is given twice")
        seen[key] = value
    return seen


def _shape_of(value) -> tuple[int, ...] | None:
    """The shape of nested lists; None when ragged or when something is not a list or number."""
    if isinstance(value, list):
        if not value:
            return (0,)
        inner = [_shape_of(v) for v in value]
        if any(s is None or s != inner[0] for s in inner):
            return None
        return (len(value),) + inner[0]
    if isinstance(value, (dict, str)) or value is None:
        return None
    return ()


def _describe(shape: tuple[int, ...]) -> str:
    return "a number" if not shape else "an array of shape [" + ", ".join(map(str, shape)) + "]"


def params_from_values(program: Program, values: dict, start: dict | None = None, what: str = "params") -> dict:
    """Params given in Python (a dict of floats, lists or NumPy arrays), checked as a params file
    is: a name the program lacks, a wrong shape, a value that is not a finite number or is outside
    the param's bounds is a user error. A param left out keeps its start (`start`, else its
    declared init)."""
    params = initial_params(program) if start is None else dict(start)
    if not hasattr(values, "items"):
        raise InputError(f"{what} must be a dict of param name -> value, not {type(values).__name__}")
    shapes = {p.name: p.type.shape for p in program.params}
    for name, value in values.items():
        if name not in shapes:
            close = difflib.get_close_matches(str(name), list(shapes), 1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise InputError(f"{what}: the program has no param '{name}'{hint} (its params: "
                             f"{', '.join(shapes) or 'none'})")
        plain = value.tolist() if isinstance(value, np.ndarray) else (float(value) if isinstance(value, np.generic)
                                                                        else value)
        params[name] = _convert(what, name, plain, shapes[name])
        bounds = next(p.bounds for p in program.params if p.name == name)
        if bounds is not None and not np.all((np.asarray(params[name]) > bounds[0]) & (np.asarray(params[name]) < bounds[1])):
            raise InputError(f"{what}: param '{name}' must stay inside its bounds ({bounds[0]:g}, {bounds[1]:g})")
    return params


def _convert(path: str, name: str, value, shape: tuple[int, ...]):
    found, bad = _first_non_number(value)
    if found and (not shape or isinstance(value, list)):
        raise _error(path, f"param '{name}': {json.dumps(bad)[:40]} is not a number")
    got = _shape_of(value)
    if got is None:
        what = _json_kind(value)
        if what and not shape:
            raise _error(path, f"param '{name}': {json.dumps(value)[:40]} is not a number")
        if what:
            raise _error(path, f"param '{name}' should be {_describe(shape)}, but the file gives {what}")
        raise _error(path, f"param '{name}': the nested lists are ragged or hold something that is not "
                           f"a number; expected {_describe(shape)}")
    if got != shape:
        raise _error(path, f"param '{name}' should be {_describe(shape)}, but the file gives {_describe(got)}")
    flat = np.array(value, dtype=object).ravel() if shape else [value]
    for x in flat:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise _error(path, f"param '{name}': {json.dumps(x)} is not a number")
        if isinstance(x, int) and abs(x) > 1e308 or not math.isfinite(x):
            shown = getattr(x, "word", x) if isinstance(x, float) else "a huge integer"
            raise _error(path, f"param '{name}': {shown} is not a finite number")
    return np.array(value, dtype=np.float64) if shape else float(value)


def _json_kind(value) -> str | None:
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return None


def params_to_json(params: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else float(v)) for k, v in params.items()}


def write_params(path: str, params: dict) -> None:
    """Write a params file atomically: a temporary file beside it, then a rename."""
    write_text_atomically(path, json.dumps(params_to_json(params), indent=2) + "\n")


def write_text_atomically(path: str, text: str) -> None:
    """write_bytes_atomically of the text as UTF-8."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: str, data: bytes) -> None:
    """A temporary file in the same directory, flushed to disk, then renamed over `path`:
    a reader sees the old file or the new one, never half of one. A symlink is followed (the
    file it points to is replaced); a path that is not a regular file (a FIFO, /dev/stdout) is
    written directly. A failed write (a full disk) is a user error; the old file stays whole."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as err:
            raise InputError(f"cannot write {path}: {err.strerror or err}") from None
        return
    if os.path.islink(path):  # replace the file the link points to, not the link
        path = os.path.realpath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual mode
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise InputError(f"cannot write {path}: {err.strerror or err}; the file there before "
                             "(if any) is unchanged") from None
        raise
