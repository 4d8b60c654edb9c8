"""Terminal rendering for the CLI: highlighted program text, summaries and error messages."""
from __future__ import annotations

import sys

from .errors import DlangError
from .ir import Program, walk


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:  # piped: no terminal width to respect, so do not wrap tables
        console.width = 200
    return console


_IR_STYLES = [
    (r"@\d+:\d+", "dim"),
    (r"%[A-Za-z0-9_.]+", "cyan"),
    (r"\b(?:f64|i64|bool)(?:\[[0-9,]+\])?", "yellow"),
    (r"^\s*(?:const|data|param|output|loss|body)\b", "bold magenta"),
    (r"\b(?:for|while|cond|do|if|else|yield|return)\b", "bold magenta"),
    (r"= ([a-z_0-9]+)", "bold green"),
]


def show(text: str, kind: str) -> None:
    """Print program text: highlighted on a terminal, exactly as is when piped."""
    console = _console()
    if not console.is_terminal:
        sys.stdout.write(text)
        return
    if kind in ("ast", "python", "dlang"):
        from rich.syntax import Syntax

        if kind == "dlang":
            from .lexer import DlangLexer

            lexer = DlangLexer()  # dlang's own Pygments lexer (pygmentize -l dlang)
        else:
            lexer = "scheme" if kind == "ast" else "python"
        console.print(Syntax(text.rstrip("\n"), lexer, background_color="default", word_wrap=False))
        return
    from rich.text import Text

    for line in text.rstrip("\n").split("\n"):
        styled = Text(line)
        for pattern, style in _IR_STYLES:
            styled.highlight_regex(pattern, style)
        console.print(styled)


def summary(path: str, prog: Program) -> str:
    eqns = sum(1 for _ in walk(prog.body))
    parts = [f"{len(prog.params)} param{'s' * (len(prog.params) != 1)}",
             f"{len(prog.data)} data input{'s' * (len(prog.data) != 1)}",
             f"{len(prog.outputs)} output{'s' * (len(prog.outputs) != 1)}",
             f"{eqns} IR statement{'s' * (eqns != 1)}"]
    return f"{path}: ok ({', '.join(parts)})"


def print_error(err: DlangError) -> None:
    console = _console(stderr=True)
    text = err.render()
    if not console.is_terminal:
        sys.stderr.write(text + "\n")
        return
    from rich.text import Text

    styled = Text(text)
    styled.highlight_regex(r"error:", "bold red")
    styled.highlight_regex(r"note:", "bold cyan")
    styled.highlight_regex(r"\^+", "bold red")
    console.print(styled)


# ---- dlang grad ---------------------------------------------------------------------------------

SMALL_ARRAY = 12


def _num(x: float) -> str:
    return f"{x:.8g}"


def _array_text(a) -> str:
    import numpy as np

    a = np.asarray(a, float)
    if a.size <= SMALL_ARRAY:
        if a.ndim == 1:
            return "[" + ", ".join(f"{v:.6g}" for v in a) + "]"
        return "\n".join("[" + ", ".join(f"{v:.6g}" for v in row) + "]" for row in a)
    flat = np.abs(a).ravel()
    top = np.argsort(-flat, kind="stable")[:3]
    biggest = ", ".join(f"[{', '.join(map(str, np.unravel_index(k, a.shape)))}]={a.flat[k]:.4g}" for k in top)
    return f"norm {np.linalg.norm(a):.6g}; largest: {biggest}"


def _value_text(v) -> str:
    return _array_text(v) if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0 else _num(float(v))


def show_grad(report) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=None, show_lines=False)
    table.add_column("param", style="cyan", no_wrap=True)
    table.add_column("shape", style="yellow")
    table.add_column("value", justify="right")
    table.add_column("gradient", justify="right", style="bold")
    if report.events_grads is not None:
        table.add_column("seeing events", justify="right", style="bold")
    if report.check:
        table.add_column("finite diff", justify="right")
        table.add_column("rel. error", justify="right")
    for p in report.program.params:
        shape = "[" + ", ".join(map(str, p.type.shape)) + "]" if p.type.shape else "scalar"
        cells = [p.name, shape, _value_text(report.params[p.name]), _value_text(report.grads[p.name])]
        if report.events_grads is not None:
            cells.append(_value_text(report.events_grads[p.name]))
        if report.check:
            err = report.check.rel_error[p.name]
            cells += [_value_text(report.check.fd[p.name]), f"{err:.1e}"]
        table.add_row(*cells)
    console.print(f"loss {_num(report.loss)} {loss_scope(report.program, report.rows)}")
    if report.program.params:
        console.print(table)
    else:
        console.print("the program has no params")
    if report.check:
        from .gradcheck import REL_TOL

        worst = max(report.check.rel_error.values(), default=0.0)
        if report.check.passed:
            console.print(f"[bold green]gradient check passed[/]: largest relative error {worst:.1e} "
                          f"(tolerance {REL_TOL:.0e})", highlight=False)
        else:
            bad = [k for k, v in report.check.rel_error.items() if v > REL_TOL]
            console.print(f"[bold red]gradient check FAILED[/] for {', '.join(bad)}: largest relative error "
                          f"{worst:.1e} (tolerance {REL_TOL:.0e})", highlight=False)


def _json_value(v):
    import numpy as np

    if isinstance(v, np.ndarray):
        return [_json_value(x) for x in v] if v.ndim > 1 else [_json_number(float(x)) for x in v]
    return _json_number(float(v))


def _json_number(x: float):
    import math

    return x if math.isfinite(x) else None


def grad_json(report) -> str:
    import json

    out = {"loss": _json_number(report.loss), "grad": {k: _json_value(v) for k, v in report.grads.items()}}
    if report.events_grads is not None:
        out["events_grad"] = {k: _json_value(v) for k, v in report.events_grads.items()}
    if report.check:
        out["check"] = {"passed": report.check.passed,
                        "fd": {k: _json_value(v) for k, v in report.check.fd.items()},
                        "rel_error": {k: _json_number(v) for k, v in report.check.rel_error.items()}}
    return json.dumps(out)


# ---- dlang hessian ----------------------------------------------------------------------------

HESSIAN_SHOWN = 12  # a Hessian with more entries is summarised on the terminal (--json prints it all)


def hessian_json(report) -> str:
    """{"loss", "grad", "names", "hessian"}, or {"loss", "grad", "hvp"} with --direction; with
    --check also "check": {"passed", "rel_error", "where", "fd"}."""
    import json

    out = {"loss": _json_number(report.loss), "grad": {k: _json_value(v) for k, v in report.grads.items()}}
    if report.hvp is not None:
        out["hvp"] = {k: _json_value(v) for k, v in report.hvp.items()}
    else:
        out["names"] = list(report.names)
        out["hessian"] = _json_value(report.hessian)
    if report.check:
        fd = report.check.fd
        if report.hvp is not None:
            from .derivatives import unflatten

            fd = {k: _json_value(v) for k, v in unflatten(report.program, fd).items()}
        else:
            fd = _json_value(fd)
        out["check"] = {"passed": report.check.passed, "rel_error": _json_number(report.check.rel_error),
                        "where": report.check.where, "fd": fd}
    return json.dumps(out)


def show_hessian(report) -> None:
    import numpy as np
    from rich.table import Table

    console = _console()
    console.print(f"loss {_num(report.loss)} {loss_scope(report.program, report.rows)}")
    if not report.program.params:
        console.print("the program has no params")
        return
    if report.hvp is not None:
        table = Table()
        for col, style in (("param", "cyan"), ("value", None), ("gradient", None), ("direction", None),
                           ("Hessian x direction", "bold")):
            table.add_column(col, style=style, justify="left" if col == "param" else "right")
        for p in report.program.params:
            table.add_row(p.name, _value_text(report.params[p.name]), _value_text(report.grads[p.name]),
                          _value_text(report.direction[p.name]), _value_text(report.hvp[p.name]))
        console.print(table)
    else:
        h, names = report.hessian, report.names
        if len(names) <= HESSIAN_SHOWN:
            table = Table(title="Hessian: d2 loss / d row d column")
            table.add_column("", style="cyan", no_wrap=True)
            for name in names:
                table.add_column(name, justify="right")
            for name, row in zip(names, h):
                table.add_row(name, *(f"{v:.6g}" for v in row))
            console.print(table)
        else:
            console.print(f"Hessian of {len(names):,} x {len(names):,} param entries (--json prints it in full)")
        if np.all(np.isfinite(h)) and h.size:
            sym = (h + h.T) / 2
            eig = np.linalg.eigvalsh(sym)
            asym = float(np.max(np.abs(h - h.T))) / max(1e-300, float(np.max(np.abs(h))))
            console.print(f"eigenvalues from {eig[0]:.6g} to {eig[-1]:.6g}"
                          + ("" if eig[0] > 0 else " (not positive definite)")
                          + f"; largest asymmetry {asym:.1e} of the largest entry", highlight=False)
    if report.check:
        from .commands import HESSIAN_REL_TOL

        c = report.check
        if c.passed:
            console.print(f"[bold green]Hessian check passed[/]: largest relative error {c.rel_error:.1e} at "
                          f"{c.where} (tolerance {HESSIAN_REL_TOL:.0e}, against central differences of the gradient)",
                          highlight=False)
        else:
            console.print(f"[bold red]Hessian check FAILED[/]: relative error {c.rel_error:.1e} at {c.where} "
                          f"(tolerance {HESSIAN_REL_TOL:.0e}, against central differences of the gradient)",
                          highlight=False)


# ---- dlang train ------------------------------------------------------------------------------

_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 24) -> str:
    """The recent history of a loss as a row of block characters (log scale when positive)."""
    import math

    vals = [v for v in values[-width:] if math.isfinite(v)]
    if not vals:
        return ""
    if all(v > 0 for v in vals):
        vals = [math.log10(v) for v in vals]
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        return _BLOCKS[0] * len(vals)
    return "".join(_BLOCKS[min(7, int((v - lo) / (hi - lo) * 7.999))] for v in vals)


class TrainProgress:
    """Live progress: a rich bar on a terminal, a plain line every few seconds otherwise,
    or one JSON object per epoch with --json. Progress goes to stderr (JSON to stdout)."""

    PLAIN_EVERY = 2.0
    WIDE = 120  # columns from which the line also shows |grad|, rows/s and the loss's sparkline

    def __init__(self, json_lines: bool, eta: bool = True, console=None):
        self.json_lines = json_lines
        # eta: whether the epoch count is the plan (adam, sgd), so the time left can be
        # estimated; for lbfgs and lm it is only a cap, and the time so far is shown instead
        self.eta = eta
        self.console = console or _console(stderr=True)
        self.losses: list[float] = []
        self.progress = None
        self.last_plain = 0.0
        self.last = None

    def __enter__(self):
        if not self.json_lines and self.console.is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            wide = self.console.width >= self.WIDE
            clock = TimeRemainingColumn() if self.eta else TimeElapsedColumn()
            details = ("loss {task.fields[loss]}  best {task.fields[best]}  |grad| {task.fields[gnorm]}  "
                       "{task.fields[rate]} rows/s  {task.fields[spark]}") if wide else \
                "loss {task.fields[loss]}  best {task.fields[best]}"
            # the count, the bar and the clock keep their width; the details take what is left
            self.progress = Progress(
                TextColumn("epoch {task.completed:>4}/{task.total}"), BarColumn(bar_width=None if wide else 16),
                clock, TextColumn(details),
                console=self.console, transient=False)
            self.progress.__enter__()
            self.task = None
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        elif not self.json_lines and self.last is not None:
            self._plain(self.last)  # the last epoch, whenever the previous line was
        return False

    def update(self, e) -> None:
        import json
        import time

        self.losses.append(e.loss)
        self.last = e
        if self.json_lines:
            print(json.dumps({"epoch": e.epoch, "loss": _json_number(e.loss),
                              "grad_norm": _json_number(e.grad_norm)}), flush=True)
        elif self.progress is not None:
            fields = dict(loss=f"{e.loss:.6g}", best=f"{e.best_loss:.6g}", gnorm=f"{e.grad_norm:.3g}",
                          rate=f"{e.rows_per_second:,.0f}", spark=sparkline(self.losses))
            if self.task is None:
                self.task = self.progress.add_task("train", total=e.epochs, **fields)
            self.progress.update(self.task, completed=e.epoch, **fields)
        else:
            now = time.monotonic()
            if now - self.last_plain >= self.PLAIN_EVERY:
                self._plain(e)
                self.last_plain = now
                self.last = None

    def _plain(self, e) -> None:
        import sys

        sys.stderr.write(f"epoch {e.epoch}/{e.epochs}  loss {e.loss:.6g}  best {e.best_loss:.6g}  "
                         f"|grad| {e.grad_norm:.3g}  {e.rows_per_second:,.0f} rows/s\n")
        sys.stderr.flush()


def show_trained(run, json_out: bool) -> None:
    import json

    from rich.table import Table

    result = run.result
    if json_out:
        from .report import report_json

        final = {"params": {k: _json_value(v) for k, v in result.params.items()},
                 "loss": _json_number(result.loss), "epochs": result.epochs,
                 "stopped": result.stopped, "status": result.status, "out": run.out}
        if run.report is not None:
            final["report"] = report_json(run.report)
        if run.starts is not None:
            final["starts"] = run.starts.as_json()
        print(json.dumps(final))
        if result.status != "done":
            _console(stderr=True).print(f"{_headline(run)}", highlight=False)
        return
    console = _console()
    table = Table()
    table.add_column("param", style="cyan", no_wrap=True)
    table.add_column("shape", style="yellow")
    table.add_column("fitted value", justify="right", style="bold")
    report = run.report
    errors = report is not None and report.stderr is not None
    if errors:
        table.add_column("± stderr", justify="right")
    for p in run.prepared.program.params:
        shape = "[" + ", ".join(map(str, p.type.shape)) + "]" if p.type.shape else "scalar"
        cells = [p.name, shape, _value_text(result.params[p.name])]
        if errors:
            sd = report.stderr[p.name]
            cells.append("fixed" if sd is None else _value_text(sd))
        table.add_row(*cells)
    if run.prepared.program.params:
        console.print(table)
    err = _console(stderr=True)
    target = err if result.status != "done" else console
    target.print(_headline(run), highlight=False)
    if run.starts is not None:
        console.print(starts_line(run.starts), highlight=False)
    if report is not None:
        for line in report_lines(report):
            console.print(line, highlight=False)
    elif run.report_error:
        err.print(f"no fit report: {run.report_error}", highlight=False)


def starts_line(starts) -> str:
    import math

    best = starts.losses[starts.best]
    others = [x for x in starts.losses if not (x <= best + starts.REACHED * max(1.0, abs(best)))]
    finite = [x for x in others if math.isfinite(x)]
    line = (f"{starts.n} starts: {starts.reached} reached the best loss {_num(best)} (start {starts.best + 1}; "
            f"within {starts.REACHED:g} relative)")
    if finite:
        line += f"; the others ended at losses {_num(min(finite))} to {_num(max(finite))}"
    if len(finite) < len(others):
        line += f"; {len(others) - len(finite)} failed (a fault or a non-finite loss)"
    return line


def report_lines(report) -> list[str]:
    """The fit report's summary lines under the table of fitted params."""
    lines = []
    if report.method == "least squares":
        lines.append(f"least squares: {report.residuals:,} residuals, {report.dof:,} degrees of freedom, "
                     f"chi2 {_num(report.chi2)}, reduced chi2 {_num(report.reduced_chi2) if report.reduced_chi2 is not None else 'n/a'}"
                     + (f", R2 {report.r2:.6f}" if report.r2 is not None else ""))
    else:
        over = (f"of one run on whole columns of {report.rows:,} rows" if report.whole_columns
                else f"summed over {report.rows:,} rows")
        lines.append(f"errors from the Hessian of the loss {over}, taken as a negative "
                     "log-likelihood (the loss is not a sum of squares)")
    lines.append(f"AIC {_num(report.aic)}, BIC {_num(report.bic)}")
    lines += [f"warning: {w}" for w in report.warnings]
    return lines


def _headline(run) -> str:
    r = run.result
    loss = f"{r.loss:.8g}" if r.loss == r.loss and r.loss != float("inf") else "not finite"
    if r.status == "interrupted":
        if not run.written:
            return f"interrupted after {_count(r.epochs, 'epoch')}: no params were written to {run.out}"
        return (f"interrupted after {_count(r.epochs, 'epoch')}: saved the best params so far (loss {loss}) "
                f"to {run.out}")
    if r.status == "non-finite":
        saved = (f"saved the last good params (loss {loss}) to {run.out}" if run.written
                 else f"no epoch finished, so no params were written to {run.out}")
        return f"stopped: {r.stopped}; {saved}"
    if r.stopped.startswith("finished"):
        return f"{r.stopped}; best loss {loss}; params written to {run.out}"
    return f"{r.stopped} after {_count(r.epochs, 'epoch')}; best loss {loss}; params written to {run.out}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' * (n != 1)}"


# ---- dlang run --------------------------------------------------------------------------------

def loss_scope(program, rows: int) -> str:
    """What the loss is taken over: "(mean over 20 rows)", or one run on whole columns."""
    if program.whole_columns and program.data:
        return f"(one run on whole columns of {program.data[0].type.shape[0]:,} rows)"
    return f"(mean over {rows} row{'s' * (rows != 1)})"


def write_run(report, out: str | None) -> None:
    import sys

    lines = [",".join(report.header)]
    for row in report.table:
        lines.append(",".join(repr(float(v)) for v in row))
    text = "\n".join(lines) + "\n"
    if out:
        from .params import write_text_atomically

        write_text_atomically(out, text)
    else:
        sys.stdout.write(text)
    if report.whole_columns:
        sys.stderr.write(f"loss {report.mean_loss:.10g} (one run on whole columns of {report.table.shape[0]:,} rows)\n")
    elif report.mean_loss is not None:
        sys.stderr.write(f"mean loss {report.mean_loss:.10g} over {report.table.shape[0]} "
                         f"row{'s' * (report.table.shape[0] != 1)}\n")


# ---- dlang bench --------------------------------------------------------------------------------

def show_bench(report) -> None:
    from rich.table import Table

    table = Table(title=None)
    table.add_column("measure", style="cyan")
    table.add_column("value", justify="right", style="bold")
    rows_per_s = report.rows / (report.grad_ms / 1e3) if report.grad_ms > 0 else float("inf")
    for name, value in [
        ("compile, cold cache", f"{report.compile_cold_s:.2f} s"),
        ("compile, from cache", f"{report.compile_cached_s:.2f} s"),
        (f"forward, {_count(report.rows, 'row')} (median of {report.repeat})", f"{report.forward_ms:.3f} ms"),
        (f"loss + gradient, {_count(report.rows, 'row')}", f"{report.grad_ms:.3f} ms"),
        ("gradient / forward", f"{report.grad_over_forward:.2f}x"),
        ("derivative along one direction (forward mode)", f"{report.jvp_ms:.3f} ms"),
        ("Hessian-vector product (forward over reverse)", f"{report.hvp_ms:.3f} ms"),
        ("rows per second (gradient)", f"{rows_per_s:,.0f}"),
        ("threads", str(report.threads)),
        ("tape per row", f"{report.tape_bytes_per_row:,.0f} bytes"),
    ]:
        table.add_row(name, value)
    _console().print(table)
