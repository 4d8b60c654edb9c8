"""Reading data: the CSV columns a program's `data` declarations name, as one float matrix."""
from __future__ import annotations

import csv
import difflib
import io
import os
from dataclasses import dataclass

import numpy as np

from .errors import Diagnostic, InputError, Span
from .ir import Program


ARROW_MIN_BYTES = 1 << 20


def _error(path: str, message: str, span: Span | None = None, text: str | None = None) -> InputError:
    return InputError(Diagnostic(message, span, path), text)


def _cell_span(text: str, line: int, cell: int) -> Span:
    """Where cell number `cell` of a CSV line is (quotes respected), for a caret under it."""
    raw = text.split("\n", line)[line - 1] if line >= 1 else ""
    raw = raw.rstrip("\r")
    starts, quoted = [0], False
    for k, ch in enumerate(raw):
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            starts.append(k + 1)
    if cell >= len(starts):
        return Span(line, len(raw) + 1, line, len(raw) + 2)
    start = starts[cell]
    end = starts[cell + 1] - 1 if cell + 1 < len(starts) else len(raw)
    return Span(line, start + 1, line, max(end, start + 1) + 1)


def columns_for(program: Program, header: list[str], path: str, text: str | None = None) -> list[int]:
    """The index in `header` of every column the program reads, in data-matrix order."""
    where = {name: k for k, name in enumerate(header)}
    out = []
    for d in program.data:
        if d.type.shape:
            schemes = [[f"{d.name}{sep}{k}" for k in range(d.type.shape[0])] for sep in ("_", "")]
            names = next((s for s in schemes if all(c in where for c in s)), None)
            if names is None:  # name the first missing column of the naming the file comes closest to
                best = max(schemes, key=lambda s: sum(c in where for c in s))
                missing = next(c for c in best if c not in where)
                raise _error(path, f"no column '{missing}': data {d.name}[{d.type.shape[0]}] reads columns "
                                   f"{d.name}_0 ... {d.name}_{d.type.shape[0] - 1} (or {d.name}0 ...)",
                             _header_span(text), text)
        else:
            names = [d.name]
            if d.name not in where:
                close = difflib.get_close_matches(d.name, header, 1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise _error(path, f"no column '{d.name}' (data {d.name} of the program reads it){hint}",
                             _header_span(text), text)
        for c in names:
            if header.count(c) > 1:
                raise _error(path, f"the header names column '{c}' more than once")
        out += [where[c] for c in names]
    return out


def _header_span(text: str | None) -> Span | None:
    if not text:
        return None
    first = text.split("\n", 1)[0].rstrip("\r")
    return Span(1, 1, 1, max(2, len(first) + 1))


def read_text(path: str) -> str:
    return _decode(path, _read_bytes(path))


def _read_bytes(path: str) -> bytes:
    if os.path.isdir(path):
        raise _error(path, "is a directory, not a CSV file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except OSError as err:
        raise _error(path, f"cannot read the file ({err.strerror})") from None
    if b"\0" in raw:
        raise _error(path, "this is not a CSV text file (it contains NUL bytes)")
    return raw


def _decode(path: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _error(path, f"this is not a UTF-8 text file (bad byte at offset {err.start})") from None


@dataclass
class DataFile:
    """The data matrix, and the bad rows skipped to make it (only with drop_bad_rows)."""

    matrix: np.ndarray
    dropped: int = 0
    total: int = 0  # data rows in the file, bad ones included
    first_problem: str | None = None  # why the first skipped row was bad
    rows: object = None  # with skipped rows: the file's data-row number (from 1) of each row kept

    def note(self, path: str) -> str | None:
        """The line the CLI prints about skipped rows, or None."""
        if not self.dropped:
            return None
        rows = f"{self.dropped:,} bad row{'s' * (self.dropped != 1)} of {self.total:,}"
        return f"{path}: skipped {rows} (--drop-bad-rows); the first: {self.first_problem}"


def load_data(program: Program, path: str | None) -> np.ndarray:
    """A rows x columns float matrix of the data the program reads, checked cell by cell."""
    return read_data(program, path).matrix


def read_data(program: Program, path: str | None, drop_bad_rows: bool = False) -> DataFile:
    """The data the program reads. A bad row (a cell that is empty, not a number or not
    finite, or too few or too many cells) is an error naming its row and column; with
    drop_bad_rows it is skipped and counted instead."""
    if not program.data:
        if path is not None:
            read_text(path)  # a file the user named must at least exist
        return DataFile(np.zeros((1, 0)))
    if program.whole_columns and path is not None:
        return as_whole_columns(read_data(per_row_view(program), path, drop_bad_rows), program)
    if path is None:
        names = ", ".join(d.name for d in program.data)
        raise InputError(f"the program reads data ({names}); give a CSV file with --data")
    files = _data_files(path)
    if files == [path]:
        return _read_one(program, path, drop_bad_rows)
    return _joined([(f, _read_one(program, f, drop_bad_rows)) for f in files])


def read_table(program: Program, columns: dict, name: str = "the data") -> DataFile:
    """The data the program reads from an in-memory table (a dict of column name -> sequence of
    numbers, as a pandas DataFrame gives): the same column rules as a CSV file; a value that is
    not a finite number is an error naming its row (from 1) and column. A whole-column program
    (`data x[]`) must have been checked for this many rows."""
    if not program.data:
        return DataFile(np.zeros((1, 0)))
    view = per_row_view(program) if program.whole_columns else program
    header = [str(c) for c in columns]
    values = list(columns.values())
    picked = columns_for(view, header, name)
    lengths = {len(values[k]) for k in picked}
    if len(lengths) > 1:
        raise _error(name, f"the columns have different lengths ({', '.join(map(str, sorted(lengths)))})")
    out = []
    for k in picked:
        try:
            col = np.asarray(values[k], dtype=np.float64)
        except (TypeError, ValueError):
            raise _error(name, f"column '{header[k]}' holds values that are not numbers") from None
        bad = np.flatnonzero(~np.isfinite(col))
        if bad.size:
            raise _error(name, f"row {bad[0] + 1}, column '{header[k]}': {float(col[bad[0]])!r} is not a finite number")
        out.append(col)
    rows = lengths.pop() if lengths else 0
    if rows == 0:
        raise _error(name, "has no data rows")
    table = DataFile(np.column_stack(out) if out else np.zeros((rows, 0)), 0, rows)
    return as_whole_columns(table, program) if program.whole_columns else table


def per_row_view(program: Program) -> Program:
    """A whole-column program (`data x[]`) as if it read one row at a time: how its table is read."""
    from dataclasses import replace

    from .ir import F64, DataInput

    return replace(program, data=tuple(DataInput(d.name, F64) for d in program.data))


def as_whole_columns(table: DataFile, program: Program | None = None) -> DataFile:
    """A rows x columns table as the one row a whole-column program runs on: every row of the
    first column, then every row of the second, ... (the program's data arrays, in order).
    With `program`, it must have been checked for columns as long as the table."""
    if program is not None and table.matrix.shape[0] != program.data[0].type.shape[0]:
        raise ValueError(f"the program was checked for columns of {program.data[0].type.shape[0]} rows, "
                         f"but the data have {table.matrix.shape[0]}")
    matrix = np.ascontiguousarray(table.matrix.T).reshape(1, -1)
    return DataFile(matrix, table.dropped, table.total, table.first_problem, None)


DATA_SUFFIXES = (".csv", ".parquet", ".pq")


def _data_files(path: str) -> list[str]:
    """The files --data names: the file itself; or the CSV and Parquet files of a directory, or
    those among the files a glob pattern matches, in name order (read as one table)."""
    import glob

    if os.path.isdir(path):
        files = sorted(f for f in glob.glob(os.path.join(glob.escape(path), "*"))
                       if f.lower().endswith(DATA_SUFFIXES) and os.path.isfile(f))
        if not files:
            raise _error(path, "is a directory with no .csv or .parquet files in it")
        return files
    if any(ch in path for ch in "*?[") and not os.path.exists(path):
        files = sorted(f for f in glob.glob(path) if os.path.isfile(f) and f.lower().endswith(DATA_SUFFIXES))
        if not files:
            raise _error(path, "no .csv or .parquet file matches this pattern")
        return files
    return [path]


def _joined(parts: list[tuple[str, "DataFile"]]) -> "DataFile":
    """Several files' data as one table: their rows in file order (row numbers count on across
    the files)."""
    matrix = np.vstack([d.matrix for _, d in parts])
    dropped = sum(d.dropped for _, d in parts)
    total = sum(d.total or d.matrix.shape[0] for _, d in parts)
    first = next((f"{f}: {d.first_problem}" for f, d in parts if d.first_problem), None)
    rows = None
    if dropped:
        numbers, offset = [], 0
        for _, d in parts:
            n = d.total or d.matrix.shape[0]
            numbers.append((np.asarray(d.rows) if d.rows is not None else np.arange(1, n + 1)) + offset)
            offset += n
        rows = np.concatenate(numbers)
    return DataFile(matrix, dropped, total, first, rows)


def _read_one(program: Program, path: str, drop_bad_rows: bool) -> "DataFile":
    if path.lower().endswith((".parquet", ".pq")):
        return _read_parquet(program, path, drop_bad_rows)
    raw = _read_bytes(path)
    if len(raw) >= ARROW_MIN_BYTES:  # small files: the checked reader is quick, and importing Arrow is not
        fast = _read_with_arrow(program, path, raw)
        if fast is not None:
            return DataFile(fast, 0, fast.shape[0])
    return _read_checked(program, path, _decode(path, raw), drop_bad_rows)


def _read_parquet(program: Program, path: str, drop_bad_rows: bool) -> "DataFile":
    """A Parquet file: the same column rules as a CSV; numeric columns only; a null or a
    non-finite value is a bad cell, named by row and column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if os.path.isdir(path):
        raise _error(path, "is a directory, not a Parquet file")
    if not os.path.exists(path):
        raise _error(path, "no such file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise _error(path, f"cannot read the Parquet file ({str(err).splitlines()[0]})") from None
    header = list(table.column_names)
    cols = columns_for(program, header, path)
    n = table.num_rows
    if n == 0:
        raise _error(path, "the file has no data rows")
    matrix = np.empty((n, len(cols)))
    bad: dict[int, str] = {}
    for j, c in enumerate(cols):
        name, column = header[c], table.column(c)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise _error(path, f"column '{name}' holds {column.type}, not numbers")
        nulls = column.is_null().to_numpy(zero_copy_only=False)
        values = column.cast(pa.float64()).fill_null(float("nan")).to_numpy()
        matrix[:, j] = values
        for r in np.flatnonzero(nulls):
            bad.setdefault(int(r), f"row {r + 1}, column '{name}': the cell is empty")
        for r in np.flatnonzero(~nulls & ~np.isfinite(values)):
            bad.setdefault(int(r), f"row {r + 1}, column '{name}': {float(values[r])!r} is not a finite number")
    if not bad:
        return DataFile(matrix, 0, n)
    first = bad[min(bad)]
    if not drop_bad_rows:
        raise _error(path, first)
    keep = np.array([r not in bad for r in range(n)])
    if not keep.any():
        raise _error(path, f"every one of the {n:,} data rows is bad, so none is left (--drop-bad-rows); "
                           f"the first: {first}")
    return DataFile(matrix[keep], len(bad), n, first, np.flatnonzero(keep) + 1)


def _read_with_arrow(program: Program, path: str, raw: bytes) -> np.ndarray | None:
    """The fast path: Apache Arrow's CSV reader (multithreaded, correctly rounded floats) reads a
    well-formed file in a fraction of a second per million rows. Anything odd about the file
    (a bad cell, a ragged row, NaN) makes it return None, and the checked reader below finds
    and reports the problem cell by cell."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pc
    except ImportError:  # pragma: no cover - pyarrow is a dependency; the checked reader still works
        return None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        first_line = raw.split(b"\n", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        return None
    first = next(csv.reader(io.StringIO(first_line)), [])
    header = [h.strip() for h in first]
    if len(set(header)) != len(header) or any(h != raw for h, raw in zip(header, first)):
        return None  # duplicate or padded names: leave them to the checked reader
    try:
        wanted = [header[c] for c in columns_for(program, header, path)]
    except InputError:
        return None
    try:
        table = pc.read_csv(
            io.BytesIO(raw),
            parse_options=pc.ParseOptions(delimiter=","),
            convert_options=pc.ConvertOptions(
                include_columns=list(dict.fromkeys(wanted)),
                column_types={c: pa.float64() for c in wanted},
                null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowException, ValueError):
        return None
    if table.num_rows == 0:
        return None
    matrix = np.empty((table.num_rows, len(wanted)))
    for j, name in enumerate(wanted):
        column = table.column(name)
        if column.null_count:
            return None
        matrix[:, j] = column.to_numpy()
    if not np.all(np.isfinite(matrix)):
        return None
    return matrix


def _read_checked(program: Program, path: str, text: str, drop_bad_rows: bool = False) -> DataFile:
    """The careful path: Python's csv module, every cell checked, every problem named."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    table: list[list[str]] = []
    lines: list[int] = []  # the file line each row starts on, for messages
    try:
        start = 1
        for row in reader:
            if len(row) > 1 or (row and row[0].strip()):  # skip blank lines; "," is a row of empty cells
                table.append(row)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as err:
        raise _error(path, f"line {reader.line_num}: the CSV cannot be read ({err})") from None
    if not table:
        raise _error(path, "the file is empty; expected a header row naming the columns")
    header = [h.strip() for h in table[0]]
    cols = columns_for(program, header, path, text)
    body, lines = table[1:], lines[1:]
    if not body:
        raise _error(path, "the file has a header but no data rows")
    width = len(header)
    if drop_bad_rows:
        return _drop_bad_rows(path, header, cols, body, lines)
    matrix = np.empty((len(body), len(cols)))
    good = all(len(row) == width for row in body)
    for j, c in enumerate(cols):
        if not good:
            break
        cells = [row[c] for row in body]
        try:
            matrix[:, j] = np.array(cells, dtype=np.float64)
            # Python's float() reads 1_000 and Unicode digits ("\u0661"); a CSV number is ASCII
            good = not any("_" in cell or not cell.isascii() for cell in cells)
        except ValueError:
            good = False
        good = good and bool(np.all(np.isfinite(matrix[:, j])))
    if not good:  # name the first bad row of the file
        r, c, message = next(_row_problems(header, cols, body, lines))
        span = _cell_span(text, lines[r], min(len(body[r]), width) if c is None else c)
        raise _error(path, message, span, text)
    return DataFile(matrix, 0, len(body))


def _row_problems(header: list[str], cols: list[int], body: list[list[str]], lines: list[int]):
    """(row, column or None, message) for each bad row, in file order."""
    width = len(header)
    for r, row in enumerate(body):
        if len(row) != width:
            cells = f"{len(row)} cell{'s' * (len(row) != 1)}"
            yield r, None, f"row {r + 1} (line {lines[r]}) has {cells}, but the header has {width}"
            continue
        for c in cols:
            why = _cell_problem(row[c])
            if why:
                yield r, c, f"row {r + 1} (line {lines[r]}), column '{header[c]}': {why}"
                break


def _cell_problem(cell: str) -> str | None:
    """Why a cell is not a finite number, or None."""
    value = cell.strip()
    if not value:
        return "the cell is empty"
    shown = repr(value if len(value) <= 40 else value[:37] + "...")
    try:
        if "_" in value or not value.isascii():
            raise ValueError
        number = float(value)
    except ValueError:
        return f"{shown} is not a number"
    return None if np.isfinite(number) else f"{shown} is not a finite number"


def _drop_bad_rows(path: str, header: list[str], cols: list[int], body: list[list[str]],
                   lines: list[int]) -> DataFile:
    """--drop-bad-rows: keep the rows whose cells the program reads are all finite numbers."""
    problems = {r: message for r, _, message in _row_problems(header, cols, body, lines)}
    kept = [[float(row[c]) for c in cols] for r, row in enumerate(body) if r not in problems]
    numbers = np.array([r + 1 for r in range(len(body)) if r not in problems])
    first = next(iter(problems.values()), None)
    if not kept:
        raise _error(path, f"every one of the {len(body):,} data rows is bad, so none is left "
                           f"(--drop-bad-rows); the first: {first}")
    return DataFile(np.array(kept, dtype=np.float64).reshape(len(kept), len(cols)), len(problems), len(body), first,
                    numbers if problems else None)


def read_rows(prog: Program, csv_path: str) -> list[dict[str, float | np.ndarray]]:
    """The data values of every CSV row, by data name (vectors as 1-D arrays), read and
    checked by dlang.data like every command's data."""
    matrix = load_data(prog, csv_path)
    rows = []
    for line in matrix:
        row: dict[str, float | np.ndarray] = {}
        col = 0
        for d in prog.data:
            width = d.type.shape[0] if d.type.shape else 1
            row[d.name] = line[col:col + width].copy() if d.type.shape else float(line[col])
            col += width
        rows.append(row)
    return rows
