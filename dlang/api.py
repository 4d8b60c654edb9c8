"""The Python API: compile a program once, then evaluate, differentiate and fit it from a notebook.

    import dlang
    model = dlang.compile("programs/sir.dl", consts={"days": 150})
    loss, grads = model.grad(model.params, df)
    fit = model.fit(df, fix=["N"])

It runs the kernels the command line runs (the same compiled code and on-disk cache, and
`dlang train`'s own fit: dlang.commands.fit), raises the command line's errors (a
dlang.DlangError, whose str() has the file, line and column), and prints nothing: a fit
reports progress to a callback, and shows a progress bar only when asked.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .ir import DEFAULT_MAX_ITERATIONS


def compile(path, consts: dict | None = None, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> "Model":  # noqa: A001
    """Read and check the program at `path` (consts: {name: value} overrides, like --const)."""
    from .frontend import read_source

    path = os.fspath(path)
    return Model(read_source(path), path, consts, max_iterations)


def compile_source(text: str, consts: dict | None = None, max_iterations: int = DEFAULT_MAX_ITERATIONS,
                   name: str = "<source>") -> "Model":
    """Check a program given as text (`name` is how messages call it)."""
    return Model(text, name, consts, max_iterations)


class Model:
    """A checked program and its compiled kernels (made on first use, then kept).

    `data` arguments take a pandas DataFrame, a dict of column name -> array, or a path (CSV,
    Parquet, a directory or a glob, as --data). `params` take a dict of name -> float or array
    (a param left out keeps its starting value); None means the starting params. A Model
    pickles: what travels is the program's text and options, and the kernels come back from
    the kernel cache on first use."""

    def __init__(self, source: str, path: str, consts: dict | None = None,
                 max_iterations: int = DEFAULT_MAX_ITERATIONS):
        from .frontend import compile_source as check

        if max_iterations < 1:
            raise InputError(f"max_iterations must be at least 1, not {max_iterations}")
        self.source, self.path, self.max_iterations = source, path, max_iterations
        self.consts = dict(consts or {})
        self.program = check(source, path, _const_pairs(self.consts))
        self._programs: dict = {}  # column rows -> the program checked for them (whole columns)
        self._kernels: dict = {}   # column rows (None: per-row data) -> Kernels

    # ---- what the program declares ----------------------------------------------------------

    @property
    def params(self) -> dict:
        """The starting params: name -> float, or NumPy array for an array param."""
        from .ir import initial_params

        return initial_params(self.program)

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.program.params]

    @property
    def data_names(self) -> list[str]:
        return [d.name for d in self.program.data]

    @property
    def outputs(self) -> list[str]:
        return list(self.program.outputs)

    def __repr__(self) -> str:
        data = ", ".join(d.name + ("[]" if d.whole else "") for d in self.program.data) or "none"
        return f"<dlang.Model {self.path}: params {', '.join(self.param_names) or 'none'}; data {data}>"

    # ---- evaluating and differentiating ---------------------------------------------------------

    def loss(self, params: dict | None = None, data=None) -> float:
        """The loss: the mean over the data rows (one run's, on whole columns)."""
        kernels, table, p = self._prepare(params, data)
        return kernels.loss(table.matrix, p, table.rows)

    def grad(self, params: dict | None = None, data=None, mode: str = "reverse") -> tuple[float, dict]:
        """(loss, {param: d loss / d param}), by reverse mode or forward mode ("forward")."""
        from . import derivatives
        from .commands import GRAD_MODES, require_loss
        from .limits import check_tape_fits

        if mode not in GRAD_MODES:
            raise InputError(f"mode must be one of {', '.join(GRAD_MODES)}, not {mode!r}")
        kernels, table, p = self._prepare(params, data)
        require_loss(kernels.program, "grad")
        if mode == "forward":
            return derivatives.forward_gradient(kernels, table.matrix, p, table.rows)
        check_tape_fits(kernels.adjoint, "grad")
        return kernels.grad(table.matrix, p, table.rows)

    @property
    def entry_names(self) -> list[str]:
        """Every param entry, in the order of the Hessian's rows: drag, w_0, W_0_1, ..."""
        from .commands import param_columns

        return param_columns(self.program)

    def hessian(self, params: dict | None = None, data=None) -> np.ndarray:
        """The Hessian of the loss (forward over reverse): a NumPy matrix whose rows and columns
        are the param entries in declaration order, arrays row-major (`model.entry_names`)."""
        from . import derivatives
        from .commands import HESSIAN_MAX_ENTRIES, require_loss

        kernels, table, p = self._prepare(params, data)
        require_loss(kernels.program, "differentiate twice")
        total = derivatives.entries(kernels.program)
        if total > HESSIAN_MAX_ENTRIES:
            raise InputError(f"the program has {total:,} param entries; a Hessian of more than "
                             f"{HESSIAN_MAX_ENTRIES:,} is not formed (use hvp)")
        return derivatives.hessian(kernels, table.matrix, p, table.rows)[2]

    def hvp(self, params: dict | None, data, direction: dict) -> dict:
        """The Hessian times a direction (params-shaped; a param it leaves out has direction 0)."""
        from . import derivatives
        from .params import params_from_values

        kernels, table, p = self._prepare(params, data)
        zeros = {q.name: (np.zeros(q.type.shape) if q.type.shape else 0.0) for q in kernels.program.params}
        v = params_from_values(_unbounded(kernels.program), direction, start=zeros, what="direction")
        return derivatives.hvp(kernels, table.matrix, p, [v], table.rows)[2][0]

    def run(self, params: dict | None = None, data=None):
        """A pandas DataFrame with a row per data row: the data columns read, the loss of the
        row and the outputs (as `dlang run --out` writes them). On whole columns: the data
        columns, the outputs with one value per row, other outputs repeated; `.attrs["loss"]`
        holds the loss of the run."""
        import pandas as pd

        from .abi import data_layout
        from .commands import data_columns, output_columns, whole_column_run

        kernels, table, p = self._prepare(params, data)
        losses, outs = kernels.forward_rows(table.matrix, p, table.rows)
        program = kernels.program
        if program.whole_columns and program.data:
            report = whole_column_run(program, table.matrix, float(losses[0]), outs[0])
            frame = pd.DataFrame(report.table, columns=report.header)
            frame.attrs["loss"] = report.mean_loss
            return frame
        columns = {}
        for d, (col, _) in zip(program.data, data_layout(program)):
            for k, name in enumerate(data_columns(d)):
                columns[name] = table.matrix[:, col + k]
        columns["loss"] = losses
        for k, name in enumerate(output_columns(program)):
            columns[name] = outs[:, k]
        frame = pd.DataFrame(columns)
        frame.attrs["loss"] = float(np.mean(losses))
        return frame

    def plot_fit(self, params: dict | None, data, y: str, fit: str, x: str | None = None,
                 out: str = "fit.png") -> str:
        """Draw the data against an output of the program as a PNG (`dlang plot`): column y and
        output `fit` against column x (a fitted curve), or without x the output against y.
        Columns come from the data the program reads, its outputs, and any other numeric column
        of a data file. Returns the path written."""
        from .plot import fit_plot

        if fit not in self.outputs:
            known = ", ".join(self.outputs) or "none"
            raise InputError(f"--fit {fit}: the program has no output named '{fit}' (its outputs: {known})")
        frame = self.run(params, data)
        columns = {c: frame[c].to_numpy() for c in frame.columns}
        wanted = [c for c in (x, y) if c is not None and c not in columns]
        if wanted:
            columns.update(_extra_columns(data, wanted, len(frame)))
        title = os.path.basename(self.path)
        return fit_plot(columns, x, y, fit, os.fspath(out), title)

    # ---- fitting ----------------------------------------------------------------------------

    def fit(self, data=None, optimizer: str = "lbfgs", epochs: int | None = None, lr: float | None = None,
            batch_size: int | None = None, seed: int = 0, starts: int = 1, fix=(), init: dict | None = None,
            events: str = "auto", tol: float = 1e-10, patience: int = 20, on_epoch=None,
            progress: bool = False) -> "FitResult":
        """Fit the params, as `dlang train` does (the same optimizers, defaults and report).
        on_epoch(epoch) is called after every epoch (a dlang.train.Epoch: epoch, epochs, loss,
        best_loss, grad_norm, params); progress=True shows a progress bar on stderr."""
        from . import commands
        from .train import TrainOptions

        if isinstance(fix, str):
            fix = [fix]
        options = TrainOptions(optimizer, epochs, lr, batch_size, seed, tol, patience, fixed=tuple(fix), starts=starts)
        kernels, table, params = self._prepare(init, data, seed)
        callback = on_epoch
        bar = _ProgressBar() if progress else None
        if bar is not None:
            callback = bar.wrap(on_epoch)
        try:
            run = commands.fit(kernels.program, kernels, table, params, options, commands.RunOptions(
                max_iterations=self.max_iterations), callback, events=events)
        finally:
            if bar is not None:
                bar.close()
        return FitResult._from_run(run, kernels.program)

    # ---- the plumbing -----------------------------------------------------------------------

    def _prepare(self, params, data, seed: int = 0):
        """The kernels for this data (a whole-column program is checked for its rows), the data
        as a DataFile, and the params (checked)."""
        from .ir import initial_params
        from .params import params_from_values

        program, table = self._data(data)
        kernels = self._kernels.get(_rows_key(program))
        if kernels is None:
            from .limits import check_array_sizes
            from .pipeline import compile_kernels

            check_array_sizes(program)
            kernels = self._kernels[_rows_key(program)] = compile_kernels(program, self.max_iterations)
        start = initial_params(program, seed)
        p = start if params is None else params_from_values(program, params, start)
        return kernels, table, p

    def _data(self, data):
        from .data import DataFile, as_whole_columns, per_row_view, read_data, read_table

        program = self.program
        if not program.data:
            if data is not None and _is_path(data):
                read_data(program, os.fspath(data))  # a file named must at least exist
            return program, DataFile(np.zeros((1, 0)))
        if data is None:
            names = ", ".join(self.data_names)
            raise InputError(f"the program reads data ({names}); pass data= a DataFrame, a dict of columns or a path")
        if _is_path(data):
            path = os.fspath(data)
            if not program.whole_columns:
                return program, read_data(program, path)
            rows_table = read_data(per_row_view(program), path)
            return self._checked_for(rows_table.matrix.shape[0]), as_whole_columns(rows_table)
        columns = _columns(data)
        if program.whole_columns:
            view_table = read_table(per_row_view(program), columns)
            program = self._checked_for(view_table.matrix.shape[0])
            return program, as_whole_columns(view_table)
        return program, read_table(program, columns)

    def _checked_for(self, rows: int):
        """The whole-column program checked for columns of `rows` values."""
        from .frontend import compile_source as check

        if rows not in self._programs:
            self._programs[rows] = check(self.source, self.path, _const_pairs(self.consts), column_rows=rows)
        return self._programs[rows]

    def __getstate__(self) -> dict:
        return {"source": self.source, "path": self.path, "consts": self.consts,
                "max_iterations": self.max_iterations}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["source"], state["path"], state["consts"], state["max_iterations"])


@dataclass
class FitResult:
    """What a fit gives: the fitted params, their standard errors, the fit report (the dict
    `dlang train --report` writes), the history (a DataFrame, a row per epoch from 0, the start)."""

    params: dict
    loss: float
    stderr: dict | None
    report: dict | None
    history: object  # pandas.DataFrame
    epochs: int
    stopped: str
    status: str                     # "done", "interrupted", "non-finite" or "fault"
    starts: dict | None = None      # with starts > 1: how the fits from each start ended
    warnings: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return self.stopped.startswith("converged")

    @property
    def table(self):
        """A DataFrame of every param entry: its fitted value and standard error."""
        import pandas as pd

        rows = []
        for name, value in self.params.items():
            err = None if self.stderr is None else self.stderr.get(name)
            values = np.ravel(value)
            errs = np.ravel(err) if err is not None else [None] * len(values)
            for k, (v, e) in enumerate(zip(values, errs)):
                label = name if np.ndim(value) == 0 else f"{name}_{k}"
                rows.append({"param": label, "value": float(v), "stderr": None if e is None else float(e)})
        return pd.DataFrame(rows).set_index("param")

    def __repr__(self) -> str:
        lines = [f"FitResult: {self.stopped}; loss {self.loss:.8g} after {self.epochs} epochs"]
        table = self.table
        lines += ["  " + line for line in table.to_string().splitlines()]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    @classmethod
    def _from_run(cls, run, program) -> "FitResult":
        from .report import report_json

        result = run.result
        report = run.report
        history = _history_frame(program, ([run.start] if run.start is not None else []) + list(result.history))
        return cls(dict(result.params), result.loss, report.stderr if report is not None else None,
                   report_json(report) if report is not None else None, history, result.epochs, result.stopped,
                   result.status, run.starts.as_json() if run.starts is not None else None,
                   list(report.warnings) if report is not None else [])


# ---- helpers ---------------------------------------------------------------------------------------

def _const_pairs(consts: dict) -> list[str]:
    return [f"{k}={v}" for k, v in consts.items()]


def _rows_key(program):
    return program.data[0].type.shape[0] if program.whole_columns and program.data else None


def _is_path(data) -> bool:
    return isinstance(data, (str, os.PathLike))


def _columns(data) -> dict:
    """A DataFrame or a dict of columns as a dict of column name -> values."""
    if hasattr(data, "columns") and hasattr(data, "__getitem__") and hasattr(data, "to_numpy"):  # a DataFrame
        return {str(c): data[c].to_numpy() for c in data.columns}
    if isinstance(data, dict):
        return {str(k): v for k, v in data.items()}
    raise InputError(f"data must be a pandas DataFrame, a dict of column name -> values, or a path, "
                     f"not {type(data).__name__}")


def _extra_columns(data, names: list[str], rows: int) -> dict:
    """Columns the program does not read, from the data itself (a file is read with pandas)."""
    import pandas as pd

    if _is_path(data):
        path = os.fspath(data)
        try:
            frame = pd.read_parquet(path) if path.lower().endswith((".parquet", ".pq")) else pd.read_csv(path)
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: cannot read the file for its columns {', '.join(names)} ({err})") from None
        columns = {str(c): frame[c] for c in frame.columns}
    else:
        columns = _columns(data)
    out = {}
    for name in names:
        if name not in columns:
            raise InputError(f"no column '{name}' in the data or the program's outputs")
        values = pd.to_numeric(pd.Series(np.asarray(columns[name])), errors="coerce").to_numpy(float)
        if len(values) != rows:
            raise InputError(f"column '{name}' has {len(values)} rows, but the program ran on {rows} "
                             "(rows were skipped?)")
        out[name] = values
    return out


def _unbounded(program):
    """The program without param bounds (a direction may point anywhere)."""
    from dataclasses import replace

    return replace(program, params=tuple(replace(p, bounds=None) for p in program.params))


def _history_frame(program, epochs: list):
    """The history as a DataFrame: epoch, loss, grad_norm, best_loss, then every param entry."""
    import pandas as pd

    from .commands import param_columns
    from .derivatives import flatten

    labels = param_columns(program)
    rows = []
    for e in epochs:
        row = {"epoch": e.epoch, "loss": e.loss, "grad_norm": e.grad_norm, "best_loss": e.best_loss}
        if e.params is not None:
            row.update(zip(labels, map(float, flatten(program, e.params))))
        rows.append(row)
    return pd.DataFrame(rows)


class _ProgressBar:
    """fit(progress=True): a rich bar on stderr."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self.progress = Progress(TextColumn("epoch {task.completed:>4}/{task.total}"), BarColumn(),
                                 TextColumn("loss {task.fields[loss]}"), console=Console(stderr=True))
        self.progress.start()
        self.task = None

    def wrap(self, inner):
        def on_epoch(e):
            if self.task is None:
                self.task = self.progress.add_task("fit", total=e.epochs, loss="")
            self.progress.update(self.task, completed=e.epoch, loss=f"{e.loss:.6g}")
            if inner is not None:
                inner(e)

        return on_epoch

    def close(self) -> None:
        self.progress.stop()
