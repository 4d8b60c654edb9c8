"""What the commands do, as library functions: the CLI only parses options and renders."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from . import pipeline
from .data import read_data
from .diagnose import non_finite_origin
from .errors import Diagnostic, DlangError, InputError
from .gradcheck import Comparison, compare, finite_differences
from .ir import DEFAULT_MAX_ITERATIONS, Program
from .kernels import Kernels
from .limits import check_array_sizes, check_tape_fits
from .params import load_params, write_params, write_text_atomically


@dataclass
class Prepared:
    program: Program
    kernels: Kernels
    data: np.ndarray
    params: dict
    rows: np.ndarray | None = None  # the file's row number of each data row, when some were skipped


@dataclass
class RunOptions:
    """Options every command that runs a program takes."""

    consts: list[str] | None = None
    max_iterations: int = DEFAULT_MAX_ITERATIONS  # --max-iterations: the cap on a while loop's trips
    drop_bad_rows: bool = False  # --drop-bad-rows: skip (and count) rows with a bad cell
    on_note: object = None  # called at once with the line saying what --drop-bad-rows skipped

    def __post_init__(self):
        if self.max_iterations < 1:
            raise InputError(f"--max-iterations must be at least 1, not {self.max_iterations}")


def _options(options: "RunOptions | list[str] | None") -> RunOptions:
    return options if isinstance(options, RunOptions) else RunOptions(options)


def load_inputs(program_path: str, data_path: str | None, options: RunOptions):
    """The checked program and its data (a DataFile); the note on skipped rows goes to on_note."""
    program = pipeline.compile_file(program_path, options.consts, stop_after="check")
    if program.whole_columns and data_path:  # checked again with the columns' length: the data's rows
        from .data import as_whole_columns, per_row_view

        table = read_data(per_row_view(program), data_path, options.drop_bad_rows)
        program = pipeline.compile_file(program_path, options.consts, stop_after="check",
                                        column_rows=table.matrix.shape[0])
        check_array_sizes(program)
        data = as_whole_columns(table)
    else:
        check_array_sizes(program)
        data = read_data(program, data_path, options.drop_bad_rows)
    note = data.note(data_path) if data_path else None
    if note and options.on_note:
        options.on_note(note)
    return program, data


def prepare(program_path: str, data_path: str | None, params_path: str | None,
            options: "RunOptions | list[str] | None" = None) -> Prepared:
    """Load a program, its data and params, and its compiled kernels."""
    options = _options(options)
    program, data = load_inputs(program_path, data_path, options)
    params = load_params(program, params_path)
    kernels = pipeline.compile_kernels(program, options.max_iterations)
    return Prepared(program, kernels, data.matrix, params, data.rows)


_VERBS = {"grad": "differentiate", "train": "fit"}


def require_loss(program: Program, command: str) -> None:
    if not program.has_loss:
        raise InputError(Diagnostic(f"the program has no loss statement, so there is nothing to {_VERBS.get(command, command)}; "
                                    "add one, for example: loss (prediction - target)^2",
                                    None, program.source_path))


@dataclass
class GradReport:
    program: Program
    loss: float
    params: dict
    grads: dict
    rows: int
    check: Comparison | None = None
    non_finite: DlangError | None = None  # where a non-finite loss or gradient came from
    events_grads: dict | None = None  # --events auto: the gradient that sees the events (what train uses)


GRAD_MODES = ("reverse", "forward")
EVENTS = ("exact", "auto")


def _check_events(events: str) -> None:
    if events not in EVENTS:
        raise InputError(f"--events must be one of {', '.join(EVENTS)}, not {events!r}")


def event_kernels(program: Program, max_iterations: int):
    """The kernels whose gradient sees the events of the program's time-stepping loops (its
    values are the program's), or None when the program has no event to correct."""
    from .events import event_program

    corrected = event_program(program)
    return None if corrected is None else pipeline.compile_kernels(corrected, max_iterations)


def _warn(program: Program, options: RunOptions) -> None:
    if options.on_note:
        for w in event_warnings(program):
            options.on_note(w.render())


def event_warnings(program: Program) -> list:
    """Warnings about conditions that depend on params (dlang.events.warnings)."""
    from .errors import source_text
    from .events import warnings

    found = warnings(program, program.source_path)
    return [DlangError(d, source_text(program.source_path)) for d in found]


def grad(program_path: str, data_path: str | None = None, params_path: str | None = None,
         options: "RunOptions | list[str] | None" = None, check: bool = False, mode: str = "reverse",
         events: str = "exact") -> GradReport:
    """The mean loss over the rows and its gradient, by reverse mode (one pass whatever the
    number of params) or forward mode (one pass per few param entries, no tape); with check,
    finite differences beside it."""
    from . import derivatives

    if mode not in GRAD_MODES:
        raise InputError(f"--mode must be one of {', '.join(GRAD_MODES)}, not {mode!r}")
    _check_events(events)
    p = prepare(program_path, data_path, params_path, options)
    require_loss(p.program, "grad")
    _warn(p.program, _options(options))
    if mode == "forward":
        loss, grads = derivatives.forward_gradient(p.kernels, p.data, p.params, p.rows)
    else:
        check_tape_fits(p.kernels.adjoint, "grad")
        loss, grads = p.kernels.grad(p.data, p.params, p.rows)
    origin = None
    bad = [name for name, g in grads.items() if not np.all(np.isfinite(g))]
    if not np.isfinite(loss) or bad:
        what = (f"the loss is {loss}" if not np.isfinite(loss)
                else f"the gradient is not finite (d loss / d {', '.join(bad)})")
        origin = non_finite_origin(p.kernels, p.data, p.params, what, p.rows)
    comparison = None
    if check:
        fd = finite_differences(lambda q: p.kernels.loss(p.data, q, p.rows), p.params)
        comparison = compare(grads, fd, loss)
    events_grads = None
    if events == "auto":
        corrected = event_kernels(p.program, _options(options).max_iterations)
        events_grads = grads if corrected is None else corrected.grad(p.data, p.params, p.rows)[1]
    return GradReport(p.program, loss, p.params, grads, p.data.shape[0], comparison, origin, events_grads)


HESSIAN_MAX_ENTRIES = 2000  # a full Hessian of more param entries is not printed: use --direction


@dataclass
class HessianReport:
    program: Program
    loss: float
    params: dict
    grads: dict
    rows: int
    names: list[str] | None = None       # the param entries: the Hessian's rows and columns
    hessian: np.ndarray | None = None    # entries x entries (without --direction)
    direction: dict | None = None        # --direction: the direction, params-shaped
    hvp: dict | None = None              # ... and the Hessian times it, params-shaped
    check: "HessianCheck | None" = None


@dataclass
class HessianCheck:
    fd: np.ndarray          # central differences of the gradient: the Hessian's columns, or H v
    rel_error: float        # the largest relative error
    where: str              # the entry (row, column) or param where it is
    passed: bool


HESSIAN_REL_TOL = 1e-5
HESSIAN_FLOOR = 1e-3  # an entry is compared relative to at least this fraction of the largest


def hessian(program_path: str, data_path: str | None = None, params_path: str | None = None,
            options: "RunOptions | list[str] | None" = None, direction_path: str | None = None,
            check: bool = False) -> HessianReport:
    """The mean loss, its gradient and its Hessian (forward over reverse), or with a direction
    file the Hessian times that direction; with check, central differences of the gradient."""
    from . import derivatives

    p = prepare(program_path, data_path, params_path, options)
    require_loss(p.program, "differentiate twice")
    check_tape_fits(p.kernels.adjoint, "hessian")
    program = p.program
    total = derivatives.entries(program)
    if direction_path is not None:
        zeros = {q.name: (np.zeros(q.type.shape) if q.type.shape else 0.0) for q in program.params}
        direction = load_params(program, direction_path, start=zeros)
        loss, grads, (product,) = derivatives.hvp(p.kernels, p.data, p.params, [direction], p.rows)
        report = HessianReport(program, loss, p.params, grads, p.data.shape[0], direction=direction, hvp=product)
        if check:
            x = derivatives.flatten(program, p.params)
            v = derivatives.flatten(program, direction)
            fd = _gradient_difference(p, x, v)
            got = derivatives.flatten(program, product)
            report.check = _hessian_check(got, fd, derivatives.entry_names(program))
        return report
    if total > HESSIAN_MAX_ENTRIES:
        raise InputError(Diagnostic(f"the program has {total:,} param entries, and a Hessian of more than "
                                    f"{HESSIAN_MAX_ENTRIES:,} is not printed in full",
                                    None, program.source_path,
                                    "give --direction FILE (a params-shaped JSON file) for the Hessian times "
                                    "that direction"))
    loss, grads, h, names = derivatives.hessian(p.kernels, p.data, p.params, p.rows)
    report = HessianReport(program, loss, p.params, grads, p.data.shape[0], names, h)
    if check:
        x = derivatives.flatten(program, p.params)
        fd = np.zeros_like(h)
        for j in range(total):
            e = np.zeros(total)
            e[j] = 1.0
            fd[:, j] = _gradient_difference(p, x, e)
        labels = [f"({a}, {b})" for a in names for b in names]
        report.check = _hessian_check(h.ravel(), fd.ravel(), labels)
        report.check.fd = fd
    return report


def _gradient_difference(p: Prepared, x: np.ndarray, v: np.ndarray, step: float = 1e-5) -> np.ndarray:
    """(g(x + h v) - g(x - h v)) / 2h for the compiled gradient g: H v by central differences."""
    from . import derivatives

    h = step * max(1.0, float(np.max(np.abs(x[v != 0])))) / max(1e-300, float(np.max(np.abs(v)))) if v.any() else 0.0
    if h == 0.0:
        return np.zeros_like(x)
    plus = p.kernels.grad(p.data, derivatives.unflatten(p.program, x + h * v), p.rows)[1]
    minus = p.kernels.grad(p.data, derivatives.unflatten(p.program, x - h * v), p.rows)[1]
    return (derivatives.flatten(p.program, plus) - derivatives.flatten(p.program, minus)) / (2.0 * h)


def _hessian_check(got: np.ndarray, fd: np.ndarray, labels: list[str]) -> HessianCheck:
    """Relative errors, each entry against at least HESSIAN_FLOOR of the largest entry."""
    scale = max(float(np.max(np.abs(got), initial=0.0)), float(np.max(np.abs(fd), initial=0.0)))
    if scale == 0.0 or not np.all(np.isfinite(got)) or not np.all(np.isfinite(fd)):
        bad = ~(np.isfinite(got) & np.isfinite(fd))
        k = int(np.argmax(bad)) if bad.any() else 0
        return HessianCheck(fd, float("inf") if bad.any() else 0.0, labels[k] if labels else "", not bad.any())
    err = np.abs(got - fd) / np.maximum(np.maximum(np.abs(got), np.abs(fd)), HESSIAN_FLOOR * scale)
    k = int(np.argmax(err))
    return HessianCheck(fd, float(err[k]), labels[k], bool(err[k] <= HESSIAN_REL_TOL))


def default_out(program_path: str) -> str:
    """programs/projectile.dl -> programs/projectile.params.json"""
    base = program_path[:-3] if program_path.endswith(".dl") else program_path
    return base + ".params.json"


@dataclass
class StartsSummary:
    n: int
    losses: list[float]        # each start's best loss, in start order (the given start first)
    best: int                  # the start whose fit was best
    reached: int               # starts that ended within REACHED of the best loss

    REACHED = 1e-6             # relative

    def as_json(self) -> dict:
        import math

        return {"n": self.n, "best": self.best, "reached": self.reached,
                "losses": [x if math.isfinite(x) else None for x in self.losses]}


def _multi_start(kernels, gradient, data, params, options, rows) -> tuple[dict, StartsSummary]:
    """Fits from options.starts spread-out starts, in parallel over the cores (processes: the
    kernels pickle and load from the kernel cache): the best params and how the starts ended."""
    import math
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from .train import fit_from, spread_starts

    starts = spread_starts(params, options.starts, options.seed, options.fixed,
                           {p.name: p.bounds for p in kernels.program.params if p.bounds})
    workers = max(1, min(len(starts), os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(fit_from, kernels, data, s, options, rows, gradient) for s in starts]
        ended = []
        for f in futures:
            try:
                ended.append(f.result())
            except DlangError:  # a start where the program faults: it does not count
                ended.append((math.inf, None, "fault", ""))
    losses = [loss if status == "done" and math.isfinite(loss) else math.inf for loss, _, status, _ in ended]
    best = min(range(len(losses)), key=lambda k: losses[k])
    if not math.isfinite(losses[best]):
        return params, StartsSummary(len(starts), losses, 0, 0)
    tol = StartsSummary.REACHED * max(1.0, abs(losses[best]))
    reached = sum(1 for x in losses if x <= losses[best] + tol)
    return ended[best][1], StartsSummary(len(starts), losses, best, reached)


@dataclass
class TrainRun:
    prepared: Prepared
    result: object  # train.TrainResult
    out: str | None
    written: bool = True  # whether the params were saved (written to `out`)
    report: object = None  # report.FitReport at the fitted params (a fit that finished)
    starts: "StartsSummary | None" = None  # --starts N: how the fits from the other starts ended
    report_error: str | None = None  # why there is no report, when computing it failed
    start: object = None  # train.Epoch: "epoch 0", the start (for --history)
    plots: list = field(default_factory=list)  # the PNG files --plot wrote


def train(program_path: str, data_path: str | None, init_path: str | None,
          run_options: "RunOptions | list[str] | None", options, out_path: str | None, history_path: str | None,
          on_epoch=None, should_stop=lambda: False, events: str = "auto", report_path: str | None = None,
          plot_dir: str | None = None) -> TrainRun:
    """`dlang train`: the files around `fit`. The best params are written to out_path
    (atomically) however training ends; then the history, the report and the plots (loss.png
    and params.png in plot_dir), when asked for."""
    run_options = _options(run_options)
    program, datafile = load_inputs(program_path, data_path, run_options)
    params = load_params(program, init_path, options.seed)
    out = out_path or default_out(program_path)
    _check_writable(out, "--out")
    if history_path:
        _check_writable(history_path, "--history")
    if report_path:
        _check_writable(report_path, "--report")
    if plot_dir:
        _check_plot_dir(plot_dir)
    kernels = pipeline.compile_kernels(program, run_options.max_iterations)
    def save(best: dict, moved: bool) -> bool:  # a fit that never moved keeps a file already there
        if not moved and os.path.exists(out):
            return False
        write_params(out, best)
        return True

    run = fit(program, kernels, datafile, params, options, run_options, on_epoch, should_stop, events, save)
    run.out = out
    if history_path:
        write_history(history_path, run.result.history, run.start, program)
    if report_path and run.report is not None:
        import json

        from .report import report_json

        write_text_atomically(report_path, json.dumps(report_json(run.report), indent=2) + "\n")
    if plot_dir:
        run.plots = plot_history(plot_dir, run, program, os.path.basename(program_path))
    return run


def _check_plot_dir(path: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"--plot {path}: is a file, not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise InputError(f"--plot {path}: cannot make the directory ({err.strerror or err})") from None
    if not os.access(path, os.W_OK):
        raise InputError(f"--plot {path}: cannot write to the directory")


def plot_history(out_dir: str, run: "TrainRun", program: Program, title: str) -> list[str]:
    """loss.png and params.png of a fit in out_dir (dlang.plot.history_plots)."""
    from .plot import history_plots

    epochs = ([run.start] if run.start is not None else []) + list(run.result.history)
    if not epochs:
        return []
    names = param_columns(program)
    values = None
    if names and all(e.params is not None for e in epochs):
        from .derivatives import flatten

        values = np.array([flatten(program, e.params) for e in epochs])
    return history_plots(epochs, names, values, out_dir, title)


def param_columns(program: Program) -> list[str]:
    """Every param entry named as `dlang run` names output columns: drag, w_0, W_0_1."""
    return output_columns(_replace_outputs(program)) if program.params else []


def fit(program: Program, kernels: Kernels, datafile, params: dict, options,
        run_options: "RunOptions | None" = None, on_epoch=None, should_stop=lambda: False, events: str = "auto",
        save=None) -> TrainRun:
    """Fit the params of a checked program on its data (a data.DataFile), from `params`: what
    `dlang train` and the Python API's Model.fit both do. save(best params) is called however
    training ends, once some epoch finished (so what was learnt is kept); with events "auto",
    the optimizer's gradient sees the events of time-stepping loops (dlang.events) where the
    program has any; every loss it reports is the program's. save(best, moved) returns whether
    it saved them (moved: whether some epoch ran)."""
    from .train import Trainer

    run_options = run_options or RunOptions()
    data = datafile.matrix
    require_loss(program, "train")
    _warn(program, run_options)
    _check_fixed(program, getattr(options, "fixed", ()))
    check_tape_fits(kernels.adjoint, "train")
    _check_events(events)
    gradient = event_kernels(program, run_options.max_iterations) if events == "auto" else None
    if gradient is not None:
        check_tape_fits(gradient.adjoint, "train")
    starts = None
    if options.starts > 1:  # the best of several fits; then the fit below polishes it, with progress
        options.resolved(data.shape[0])  # a bad option is said before any fit starts
        params, starts = _multi_start(kernels, gradient, data, params, options, datafile.rows)
    if options.optimizer == "lm":
        return _fit_lm(program, kernels, gradient, data, params, options, datafile, on_epoch, run_options, save)
    trainer = Trainer(kernels, data, params, options, datafile.rows, gradient)
    finished = written = False
    try:
        result = trainer.run(on_epoch, should_stop)
        finished = True
    finally:  # even on an error (a fault in some row), what was learnt so far is kept
        moved = bool(trainer.history) or starts is not None
        if save is not None and (moved or finished):
            written = save(trainer.flat.unpack(trainer.best_x), moved)
    if result.status == "non-finite" and trainer.bad_point is not None:
        x, rows, what = trainer.bad_point
        at, labels = (data, trainer.row_labels) if rows is None else (data[rows], trainer.row_labels[rows])
        result.origin = non_finite_origin(kernels, at, trainer.flat.unpack(x), what, labels)
    run = TrainRun(Prepared(program, kernels, data, params, datafile.rows), result, None, written, starts=starts,
                   start=trainer.start)
    _attach_report(run, kernels, data, result, options, datafile)
    return run


def _fit_lm(program, kernels, gradient, data, params, options, datafile, on_epoch, run_options, save) -> TrainRun:
    """--optimizer lm: least squares on the residuals of the loss's squared terms (those of the
    event program where it has events: its residuals move with the events' times)."""
    from .report import residual_program, squared_terms
    from .train import fit_least_squares

    objective = gradient.program if gradient is not None else program
    terms = squared_terms(objective)
    if terms is None:
        raise InputError(Diagnostic("--optimizer lm needs a loss that is a square or a sum of squares at the top "
                                    "level of the program, such as loss (prediction - target)^2; use lbfgs",
                                    None, program.source_path))
    residuals = pipeline.compile_kernels(residual_program(objective, terms), run_options.max_iterations)
    result = fit_least_squares(residuals, kernels, data, params, options, datafile.rows, on_epoch)
    written = save(result.params, True) if save is not None else False
    run = TrainRun(Prepared(program, kernels, data, params, datafile.rows), result, None, written)
    _attach_report(run, kernels, data, result, options, datafile)
    return run


def _attach_report(run, kernels, data, result, options, datafile) -> None:
    if result.status != "done":
        return
    from .report import fit_report

    try:
        run.report = fit_report(kernels, data, result.params, result.stopped.startswith("converged"),
                                result.stopped, datafile.rows, fixed=tuple(options.fixed))
    except DlangError as err:  # a fault where the fit ended: the fit stands, the report is left out
        run.report_error = err.diagnostics[0].message


def _check_fixed(program: Program, fixed) -> None:
    import difflib

    names = [p.name for p in program.params]
    for name in fixed:
        if name not in names:
            close = difflib.get_close_matches(name, names, 1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise InputError(f"--fix {name}: the program has no param '{name}'{hint} (its params: "
                             f"{', '.join(names) or 'none'})")


def _check_writable(path: str, option: str) -> None:
    if os.path.islink(path) and not os.path.exists(path):  # a dangling link: where it points
        path = os.path.realpath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InputError(f"{option} {path}: is a directory")
    if not os.path.isdir(directory):
        raise InputError(f"{option} {path}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise InputError(f"{option} {path}: cannot write to {directory}")


def write_history(path: str, history, start=None, program: Program | None = None) -> None:
    """epoch, loss, gradient norm, best loss, then every param entry's value (columns named as
    `dlang run` names output columns: w_0, W_0_1), one row per epoch, epoch 0 the start."""
    epochs = ([start] if start is not None else []) + list(history)
    columns: list[str] = []
    if program is not None and all(e.params is not None for e in epochs):
        columns = param_columns(program)
    lines = [",".join(["epoch", "loss", "grad_norm", "best_loss"] + columns)]
    for e in epochs:
        cells = [str(e.epoch), repr(e.loss), repr(e.grad_norm), repr(e.best_loss)]
        if columns:
            from .derivatives import flatten

            cells += [repr(float(v)) for v in flatten(program, e.params)]
        lines.append(",".join(cells))
    write_text_atomically(path, "\n".join(lines) + "\n")


def _replace_outputs(program: Program) -> Program:
    """The program as if its params were its outputs (to name their columns as outputs are)."""
    from dataclasses import replace as _r

    from .ir import Block

    body = Block(program.body.params, (), (program.body.results[0], *program.param_vars))
    return _r(program, outputs=tuple(p.name for p in program.params), body=body)


@dataclass
class RunReport:
    header: list[str]
    table: np.ndarray  # rows x columns: loss, outputs (predicting: the data columns read, outputs)
    mean_loss: float | None  # None when predicting (the loss's columns are not in the data)
    whole_columns: bool = False  # one run on whole columns: the loss is that run's, not a mean


def run(program_path: str, data_path: str | None, params_path: str | None,
        options: "RunOptions | list[str] | None" = None, out_path: str | None = None) -> RunReport:
    """Every row's loss and outputs; or, on data without the columns only the loss reads, the
    outputs predicted, beside the data columns read (so rows can be matched)."""
    if out_path:
        _check_writable(out_path, "--out")
    options = _options(options)
    program = pipeline.compile_file(program_path, options.consts, stop_after="check")
    missing = _loss_only_missing(program, data_path)
    if missing:
        return _predict(program, data_path, params_path, options, missing)
    p = prepare(program_path, data_path, params_path, options)
    losses, outs = p.kernels.forward_rows(p.data, p.params, p.rows)
    if p.program.whole_columns and p.program.data:
        return whole_column_run(p.program, p.data, float(losses[0]), outs[0])
    header = ["loss"] + output_columns(p.program)
    return RunReport(header, np.column_stack([losses, outs]), float(np.mean(losses)))


def whole_column_run(program: Program, data: np.ndarray, loss: float, outs: np.ndarray) -> RunReport:
    """A whole-column program's one run as a table of its data rows: the data columns, then each
    output that has one value per row as a column; other outputs (scalars, other shapes) are
    repeated on every row."""
    n = program.data[0].type.shape[0]
    header = [d.name for d in program.data]
    columns = [data[0, k * n:(k + 1) * n] for k in range(len(program.data))]
    at = 0
    for name, r in zip(program.outputs, program.body.results[1:]):
        width = int(np.prod(r.type.shape)) if r.type.shape else 1
        values = outs[at:at + width]
        at += width
        if r.type.shape == (n,):
            header.append(name)
            columns.append(values)
        else:
            names = ([name + "".join(f"_{i}" for i in idx) for idx in np.ndindex(r.type.shape)]
                     if r.type.shape else [name])
            header += names
            columns += [np.full(n, v) for v in values]
    return RunReport(header, np.column_stack(columns), loss, whole_columns=True)


def data_columns(d) -> list[str]:
    """The data file's columns a data input reads: x, or X_0 ... X_{K-1}."""
    return [f"{d.name}_{k}" for k in range(d.type.shape[0])] if d.type.shape else [d.name]


def _loss_only_missing(program: Program, data_path: str | None) -> list[str]:
    """The data inputs the CSV lacks, when every one of them is read only by the loss (no output
    depends on it) and the program has outputs to predict; else []."""
    import csv
    import io

    from dataclasses import replace as _replace

    from .data import columns_for, read_text
    from .events import depends

    if (not data_path or not program.data or not program.outputs or program.whole_columns
            or not data_path.lower().endswith(".csv")):
        return []
    text = read_text(data_path)
    header = [h.strip() for h in next(csv.reader(io.StringIO(text.lstrip("\ufeff").split("\n", 1)[0])), [])]

    def lacks(d) -> bool:  # by the reader's own column rules
        try:
            columns_for(_replace(program, data=(d,)), header, data_path)
            return False
        except InputError:
            return True

    absent = [d for d in program.data if lacks(d)]
    if not absent:
        return []
    outputs = program.body.results[1:1 + len(program.outputs)]
    ids = {a.id for a in outputs if hasattr(a, "id")}
    for d, v in zip(program.data, program.data_vars):
        if d in absent and depends(program, {v.id}) & ids:
            return []  # an output needs it: the usual error about the missing column follows
    return [d.name for d in absent]


def _predict(program: Program, data_path: str, params_path: str | None, options: RunOptions,
             missing: list[str]) -> RunReport:
    from dataclasses import replace as _replace

    from .abi import data_layout

    present = tuple(d for d in program.data if d.name not in missing)
    view = _replace(program, data=present)
    datafile = read_data(view, data_path, options.drop_bad_rows)
    note = datafile.note(data_path)
    if note and options.on_note:
        options.on_note(note)
    if options.on_note:
        options.on_note(f"predicting: the data have no column for {', '.join(missing)}, which only the loss reads; "
                        "the loss is left out")
    rows = datafile.matrix.shape[0]
    full = np.full((rows, sum(w for _, w in data_layout(program))), np.nan)
    read = dict(zip([d.name for d in present], data_layout(view)))
    for d, (col, width) in zip(program.data, data_layout(program)):
        if d.name in read:
            src, _ = read[d.name]
            full[:, col:col + width] = datafile.matrix[:, src:src + width]
    params = load_params(program, params_path)
    kernels = pipeline.compile_kernels(program, options.max_iterations)
    _, outs = kernels.forward_rows(full, params, datafile.rows)
    header = [c for d in present for c in data_columns(d)] + output_columns(program)
    return RunReport(header, np.column_stack([datafile.matrix, outs]), None)


def output_columns(program: Program) -> list[str]:
    names = []
    for name, r in zip(program.outputs, program.body.results[1:]):
        if r.type.shape:
            names += [name + "".join(f"_{i}" for i in idx) for idx in np.ndindex(r.type.shape)]
        else:
            names.append(name)
    return names


@dataclass
class BenchReport:
    compile_cold_s: float
    compile_cached_s: float
    forward_ms: float
    grad_ms: float
    rows: int
    threads: int
    tape_bytes_per_row: float
    repeat: int
    jvp_ms: float | None = None  # the loss and its derivative along one direction (forward mode)
    hvp_ms: float | None = None  # the loss, its gradient and one Hessian-vector product

    @property
    def grad_over_forward(self) -> float:
        return self.grad_ms / self.forward_ms if self.forward_ms > 0 else float("inf")

    def as_json(self) -> dict:
        return {"compile_cold_s": self.compile_cold_s, "compile_cached_s": self.compile_cached_s,
                "forward_ms": self.forward_ms, "grad_ms": self.grad_ms,
                "grad_over_forward": self.grad_over_forward, "jvp_ms": self.jvp_ms, "hvp_ms": self.hvp_ms,
                "rows": self.rows, "threads": self.threads, "tape_bytes_per_row": self.tape_bytes_per_row}


_COMPILE_PROBE = """
import sys, time
from dlang.commands import prepare_inputs
from dlang.pipeline import compile_kernels
program, data, params, max_iterations = prepare_inputs(*sys.argv[1:7])
start = time.perf_counter()
kernels = compile_kernels(program, max_iterations)
kernels.loss(data, params)  # the kernels a first run on this data uses (serial or parallel)
kernels.grad(data, params)
print(time.perf_counter() - start)
"""


def prepare_inputs(program_path, data_path, params_path, consts_text, max_iterations, drop_bad_rows):
    """For the compile probe: the program, its data and params, without compiling."""
    consts = [c for c in consts_text.split("\n") if c] if consts_text else None
    options = RunOptions(consts, int(max_iterations), drop_bad_rows == "1")
    program, data = load_inputs(program_path, data_path or None, options)
    return program, data.matrix, load_params(program, params_path or None), options.max_iterations


def _compile_seconds(args: list[str], env: dict) -> float:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _COMPILE_PROBE, *args], env=env, capture_output=True,
                          text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"the compile probe failed: {done.stderr.strip()[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def bench(program_path: str, data_path: str | None, params_path: str | None,
          options: "RunOptions | list[str] | None" = None, repeat: int = 5, threads: int | None = None) -> BenchReport:
    """Compile time (cold and cached, each in a fresh process: compiling, or loading from the
    cache, the kernels this data needs and running each once) and the median time of the
    forward and the loss+gradient kernels over all rows, after a warm-up."""
    import statistics
    import tempfile
    import time

    if repeat < 1:
        raise InputError(f"--repeat must be at least 1, not {repeat}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, not {threads}")
    import numba

    from .abi import parallel_min_rows

    if threads is not None:
        if threads > numba.config.NUMBA_NUM_THREADS:
            raise InputError(f"--threads {threads}: this machine runs at most {numba.config.NUMBA_NUM_THREADS}")
        numba.set_num_threads(threads)
    options = _options(options)
    p = prepare(program_path, data_path, params_path, options)
    check_tape_fits(p.kernels.adjoint, "bench")
    used = numba.get_num_threads() if p.data.shape[0] >= parallel_min_rows() else 1
    p.kernels.loss(p.data, p.params, p.rows)  # a fault in the program shows here, as a user error
    p.kernels.grad(p.data, p.params, p.rows)
    with tempfile.TemporaryDirectory(prefix="dlang-bench-") as fresh:
        env = dict(os.environ, DLANG_CACHE_DIR=os.path.join(fresh, "kernels"),
                   NUMBA_CACHE_DIR=os.path.join(fresh, "numba"))
        args = [program_path, data_path or "", params_path or "", "\n".join(options.consts or []),
                str(options.max_iterations), "1" if options.drop_bad_rows else "0"]
        cold = _compile_seconds(args, env)
        cached = _compile_seconds(args, env)
    from . import derivatives

    direction = {name: np.ones_like(v) if np.ndim(v) else 1.0 for name, v in p.params.items()}
    tangent = derivatives.derived(p.kernels, "forward", 1)
    jvp_args = {**p.params, **derivatives.direction_args(tangent, p.program, [derivatives.flatten(p.program, direction)])}
    timed = {"forward": lambda: p.kernels.loss(p.data, p.params),
             "grad": lambda: p.kernels.gradient(p.data, p.params),
             "jvp": lambda: tangent.gradient(p.data, jvp_args),
             "hvp": lambda: derivatives.hvp(p.kernels, p.data, p.params, [direction])}
    seconds: dict = {name: [] for name in timed}
    for fn in timed.values():  # warm-up (and compiling the derived kernels)
        fn()
    for _ in range(repeat):
        for name, fn in timed.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    result = p.kernels.gradient(p.data, p.params)
    ms = {name: 1e3 * statistics.median(s) for name, s in seconds.items()}
    rows = p.program.data[0].type.shape[0] if p.program.whole_columns and p.program.data else p.data.shape[0]
    return BenchReport(cold, cached, ms["forward"], ms["grad"], rows, used, result.tape_bytes_per_row,
                       repeat, ms["jvp"], ms["hvp"])
