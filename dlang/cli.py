"""The command line: thin Typer commands over the library; every user error is printed here."""
from __future__ import annotations

import os
import sys
from enum import Enum
from typing import Annotated, Optional

import typer

from .errors import DlangError

from .ir import DEFAULT_MAX_ITERATIONS

app = typer.Typer(
    name="dlang",
    help="dlang: differentiable programs from the command line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    epilog="\b\nExamples:\n"
           "  dlang check programs/projectile.dl\n"
           "  dlang grad programs/projectile.dl --data programs/data/projectile.csv --check\n"
           "  dlang train programs/sir.dl --data programs/data/sir.csv --fix N --plot plots/\n"
           "  dlang COMMAND --help      # each command's options and examples",
)

ProgramArg = Annotated[str, typer.Argument(help="The .dl program file.", metavar="PROGRAM", show_default=False)]
ConstOpt = Annotated[
    Optional[list[str]],
    typer.Option("--const", metavar="NAME=VALUE",
                 help="Override a const of the program with a number; may be repeated."),
]


# What `emit` can show: the syntax tree, the IR, the adjoint IR, the kernel IR after any kernel
# pass, the kernel source, or the pipeline's stages as they run.
Stage = Enum("Stage", {name: name for name in
                       ("source", "ast", "ir", "grad", "jvp", "scalarize", "hoist", "split-sums", "reciprocals", "buffers", "kernel",
                        "pipeline")},
             type=str)


DataOpt = Annotated[Optional[str], typer.Option("--data", metavar="CSV",
                                                help="CSV file with a header row; the program's data columns are read.")]
DropOpt = Annotated[bool, typer.Option("--drop-bad-rows", help="Skip data rows with an empty, non-numeric or "
                                                             "non-finite cell (or the wrong number of cells) "
                                                             "and say how many, instead of stopping.")]
MaxIterOpt = Annotated[int, typer.Option("--max-iterations", metavar="N",
                                         help="Stop with an error when a while loop runs more than N times in "
                                              "a row (compiled code cannot be interrupted).")]
ParamsOpt = Annotated[Optional[str], typer.Option("--params", metavar="JSON",
                                                  help="Params file: a JSON object of param name -> number or nested lists.")]


# Examples shown under every command's --help ("\b" keeps click from rewrapping them).
EXAMPLES = {
    "check": [
        'dlang check programs/projectile.dl',
        'dlang check programs/sir.dl --const days=150',
    ],
    "emit": [
        'dlang emit programs/projectile.dl                  # the IR',
        'dlang emit programs/projectile.dl --stage kernel   # the generated Numba source',
        'dlang emit programs/projectile.dl --stage source   # the program, highlighted',
    ],
    "grad": [
        'dlang grad programs/projectile.dl --data programs/data/projectile.csv',
        'dlang grad programs/projectile.dl --data programs/data/projectile.csv --check',
        'dlang grad programs/mlp.dl --data programs/data/mlp.csv --params fitted.json --json',
    ],
    "hessian": [
        'dlang hessian programs/scaling.dl --data programs/data/scaling.csv',
        'dlang hessian programs/scaling.dl --data programs/data/scaling.csv --check --json',
    ],
    "train": [
        'dlang train programs/projectile_landing.dl --data programs/data/projectile_landing.csv',
        'dlang train programs/sir.dl --data programs/data/sir.csv --fix N --plot plots/ --report report.json',
        'dlang train programs/mlp.dl --data programs/data/mlp.csv --optimizer adam --epochs 200 --lr 0.05',
    ],
    "run": [
        'dlang run programs/projectile_landing.dl --data programs/data/projectile_landing.csv --params fitted.json',
        'dlang run programs/sir.dl --data programs/data/sir.csv --params fitted.json --out fitted.csv',
    ],
    "plot": [
        'dlang plot programs/sir.dl --data programs/data/sir.csv --params fitted.json --x day --y infected --fit fitted',
        'dlang plot programs/projectile_landing.dl --data programs/data/projectile_landing.csv --y dist --fit landing --out landing.png',
    ],
    "bench": [
        'dlang bench programs/projectile.dl --data programs/data/projectile.csv',
        'dlang bench programs/projectile.dl --data programs/data/projectile.csv --threads 1 --json',
    ],
}


def _examples(command: str) -> str:
    return "\b\nExamples:\n" + "\n".join("  " + line for line in EXAMPLES[command])


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"dlang {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print dlang's version and exit.")] = False,
) -> None:
    """dlang: differentiable programs from the command line."""


@app.command(epilog=_examples("check"))
def check(program: ProgramArg, const: ConstOpt = None) -> None:
    """Parse and check PROGRAM; print every problem found, or a one-line summary."""
    from .frontend import load_program
    from .render import summary

    from .commands import event_warnings

    prog = load_program(program, const)
    typer.echo(summary(program, prog))
    if not prog.has_loss:
        typer.echo(f"{program}: warning: no loss statement, so grad and train have nothing to fit", err=True)
    for warning in event_warnings(prog):
        typer.echo(warning.render(), err=True)


@app.command(epilog=_examples("emit"))
def emit(
    program: ProgramArg,
    stage: Annotated[Stage, typer.Option(help="What to print: the program's text, highlighted by dlang's Pygments "
                                              "lexer (source), the parsed program (ast), the IR (ir), the adjoint "
                                              "IR (grad), the tangent IR of forward mode along one direction per "
                                              "param, dot1_NAME (jvp), the program and its adjoint after a kernel pass (scalarize, "
                                              "hoist, split-sums, reciprocals, buffers), the generated kernel source "
                                              "(kernel), or each stage of the pipeline as it runs (pipeline).")] = Stage("ir"),
    const: ConstOpt = None,
) -> None:
    """Print PROGRAM at a stage of compilation, syntax-highlighted on a terminal."""
    from . import render

    stage = Stage(stage).value
    if stage == "source":
        from .frontend import read_source, load_program

        load_program(program, const)  # a program with errors says so, as every stage does
        render.show(read_source(program), "dlang")
        return
    if stage == "ast":
        from .frontend import dump_ast

        render.show(dump_ast(program), "ast")
        return
    from . import pipeline
    from .irtext import print_program

    if stage == "pipeline":
        lines = []

        def note(name, seconds, result):
            lines.append(f"{name:<12} {1e3 * seconds:9.1f} ms  {pipeline.describe(name, result)}")

        pipeline.compile_file(program, const, on_stage=note)
        render.show("\n".join(lines) + "\n", "text")
        return
    stop = {"ir": "check", "jvp": "check", "grad": "dce", "kernel": "generate"}.get(stage, stage)
    result = pipeline.compile_file(program, const, stop_after=stop)
    if stage == "jvp":
        from .forward import jvp_program

        render.show(print_program(jvp_program(result, 1)), "ir")
    elif stage == "kernel":
        render.show(result, "python")
    elif stage == "ir":
        render.show(print_program(result), "ir")
    elif stage == "grad":
        render.show(print_program(result.adjoint), "ir")
    else:
        text = ("# the forward kernel's program\n" + print_program(result.forward)
                + "\n# the adjoint kernel's program\n" + print_program(result.adjoint))
        render.show(text, "ir")


class Mode(str, Enum):
    reverse = "reverse"
    forward = "forward"


class Events(str, Enum):
    exact = "exact"
    auto = "auto"


@app.command(epilog=_examples("grad"))
def grad(
    program: ProgramArg,
    data: DataOpt = None,
    params: ParamsOpt = None,
    check: Annotated[bool, typer.Option("--check", help="Compare with central finite differences; "
                                                         "exit 1 if they disagree.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")] = False,
    mode: Annotated[Mode, typer.Option(help="reverse: one pass over the data whatever the number of params; "
                                            "forward: one pass per few param entries and no tape, faster for "
                                            "long loops with few params (see docs/modes.md).")] = Mode.reverse,
    events: Annotated[Events, typer.Option(help="exact: the gradient of the program as written; auto: also the "
                                                "gradient that sees where conditions of time-stepping loops switch "
                                                "(what train uses; see docs/events.md).")] = Events.exact,
    const: ConstOpt = None,
    drop_bad_rows: DropOpt = False,
    max_iterations: MaxIterOpt = DEFAULT_MAX_ITERATIONS,
) -> None:
    """Print the loss (mean over the data rows) and d(loss)/d(param) for every param."""
    from . import commands, render

    report = commands.grad(program, data, params, commands.RunOptions(const, max_iterations, drop_bad_rows, _note),
                           check, Mode(mode).value, Events(events).value)
    if json_out:
        typer.echo(render.grad_json(report))
    else:
        render.show_grad(report)
    if report.non_finite is not None:  # the values are shown; then where the first NaN or inf came from
        render.print_error(report.non_finite)
        raise typer.Exit(1)
    if report.check and not report.check.passed:
        raise typer.Exit(1)


@app.command(epilog=_examples("hessian"))
def hessian(
    program: ProgramArg,
    data: DataOpt = None,
    params: ParamsOpt = None,
    direction: Annotated[Optional[str], typer.Option("--direction", metavar="JSON",
                                                     help="Print the Hessian times this direction instead of the "
                                                          "Hessian: a params-shaped JSON file (a param it leaves out "
                                                          "has direction 0).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Compare with central differences of the gradient; "
                                                         "exit 1 if they disagree.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")] = False,
    const: ConstOpt = None,
    drop_bad_rows: DropOpt = False,
    max_iterations: MaxIterOpt = DEFAULT_MAX_ITERATIONS,
) -> None:
    """Print the loss, its gradient and its Hessian (second derivatives, by forward over reverse
    mode): rows and columns are the param entries, params in declaration order, arrays row-major."""
    from . import commands, render

    report = commands.hessian(program, data, params, commands.RunOptions(const, max_iterations, drop_bad_rows, _note),
                              direction, check)
    if json_out:
        typer.echo(render.hessian_json(report))
    else:
        render.show_hessian(report)
    if report.check and not report.check.passed:
        raise typer.Exit(1)


class Optimizer(str, Enum):
    lbfgs = "lbfgs"
    adam = "adam"
    sgd = "sgd"
    lm = "lm"


@app.command(epilog=_examples("train"))
def train(
    program: ProgramArg,
    data: DataOpt = None,
    epochs: Annotated[Optional[int], typer.Option(help="Most epochs to run (default: 500 for lbfgs, 300 for "
                                                       "adam and sgd); training stops earlier once it converges.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate for adam and sgd (default 0.01).")] = None,
    optimizer: Annotated[Optimizer, typer.Option(help="lbfgs (full batch, the default), adam or sgd "
                                                      "(with momentum 0.9), or lm (trust-region least squares, "
                                                      "for a loss that is a sum of squares).")] = Optimizer.lbfgs,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Rows per step for adam and sgd "
                                                                           "(default 32).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the shuffle and of random param starts.")] = 0,
    init: Annotated[Optional[str], typer.Option(metavar="JSON", help="Start from this params file.")] = None,
    out: Annotated[Optional[str], typer.Option(metavar="JSON", help="Where to write the fitted params "
                                                                    "(default: PROGRAM with .params.json).")] = None,
    history: Annotated[Optional[str], typer.Option(metavar="CSV", help="Write epoch, loss and gradient norm "
                                                                       "to this CSV file.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per epoch, then one with the "
                                                          "fitted params (and the fit report).")] = False,
    starts: Annotated[int, typer.Option("--starts", metavar="N",
                                        help="Fit from N spread-out starts (the given one and N - 1 around it), "
                                             "in parallel over the cores; keep the best and say how many "
                                             "reached it.")] = 1,
    fix: Annotated[Optional[list[str]], typer.Option("--fix", metavar="NAME",
                                                     help="Hold this param at its start (or --init) value; "
                                                          "may be repeated.")] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", metavar="DIR",
                                                help="Draw the fit in this directory (made if missing): "
                                                     "loss.png, the loss by epoch, and params.png, each "
                                                     "param's value by epoch.")] = None,
    report: Annotated[Optional[str], typer.Option(metavar="JSON", help="Write the fit report (values, standard "
                                                                        "errors, correlations, chi2, AIC, BIC, R2, "
                                                                        "warnings) to this JSON file.")] = None,
    events: Annotated[Events, typer.Option(help="auto: where a condition of a time-stepping loop depends on "
                                                "params (a landing, a bounce, a loop that stops), the optimizer's "
                                                "gradient sees where it switches; exact: the gradient of the "
                                                "program as written. Losses and params are the program's either "
                                                "way (see docs/events.md).")] = Events.auto,
    tol: Annotated[float, typer.Option(help="Stop once the best loss improves by less than this (relative) "
                                            "over --patience epochs; 0 never stops early.")] = 1e-10,
    patience: Annotated[int, typer.Option(help="Epochs over which --tol is judged (adam and sgd).")] = 20,
    const: ConstOpt = None,
    drop_bad_rows: DropOpt = False,
    max_iterations: MaxIterOpt = DEFAULT_MAX_ITERATIONS,
) -> None:
    """Fit the params of PROGRAM to its data, with live progress; write the best params found."""
    import signal

    from . import commands, render
    from .train import TrainOptions

    options = TrainOptions(optimizer.value, epochs, lr, batch_size, seed, tol, patience, fixed=tuple(fix or ()),
                           starts=starts)
    run_options = commands.RunOptions(const, max_iterations, drop_bad_rows, _note)
    interrupted = {"count": 0}

    def on_sigint(signum, frame):  # stop between batches: a compiled kernel cannot be interrupted
        interrupted["count"] += 1
        if interrupted["count"] > 1:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with render.TrainProgress(json_out, eta=optimizer.value in ("adam", "sgd")) as progress:
            run = commands.train(program, data, init, run_options, options, out, history, progress.update,
                                 lambda: interrupted["count"] > 0, Events(events).value, report, plot)
    finally:
        signal.signal(signal.SIGINT, previous)
    render.show_trained(run, json_out)
    for path in run.plots:
        typer.echo(f"wrote {path}", err=True)
    if run.result.origin is not None:
        render.print_error(run.result.origin)
    if run.result.status == "interrupted":
        raise typer.Exit(130)
    if run.result.status == "non-finite":
        raise typer.Exit(1)


@app.command(epilog=_examples("run"))
def run(
    program: ProgramArg,
    data: DataOpt = None,
    params: ParamsOpt = None,
    out: Annotated[Optional[str], typer.Option(metavar="CSV", help="Write the CSV here instead of stdout.")] = None,
    const: ConstOpt = None,
    drop_bad_rows: DropOpt = False,
    max_iterations: MaxIterOpt = DEFAULT_MAX_ITERATIONS,
) -> None:
    """Evaluate PROGRAM on every data row: each row's loss and outputs as CSV; the mean loss on stderr."""
    from . import commands, render

    report = commands.run(program, data, params, commands.RunOptions(const, max_iterations, drop_bad_rows, _note),
                          out)
    render.write_run(report, out)


@app.command(epilog=_examples("plot"))
def plot(
    program: ProgramArg,
    data: DataOpt = None,
    params: ParamsOpt = None,
    x: Annotated[Optional[str], typer.Option("--x", metavar="COLUMN",
                                             help="The column across (time, day, ...): draws the data and the "
                                                  "program's output against it. Without it: the output against "
                                                  "the observed values.")] = None,
    y: Annotated[str, typer.Option("--y", metavar="COLUMN", help="The observed data column.")] = ...,
    fit: Annotated[str, typer.Option("--fit", metavar="OUTPUT", help="The program's output to draw "
                                                                     "(an `output` name).")] = ...,
    out: Annotated[Optional[str], typer.Option(metavar="PNG", help="Where to write the picture "
                                                                   "(default: fit.png).")] = None,
    const: ConstOpt = None,
    max_iterations: MaxIterOpt = DEFAULT_MAX_ITERATIONS,
) -> None:
    """Draw the data against PROGRAM's output at the given params, as a PNG: the fitted curve of a
    time series (--x), or observed against predicted."""
    from .api import compile as compile_model
    from .params import load_params

    model = compile_model(program, _const_dict(const), max_iterations)
    values = load_params(model.program, params) if params else None
    path = model.plot_fit(values, data, x=x, y=y, fit=fit, out=out or "fit.png")
    typer.echo(f"wrote {path}", err=True)


def _const_dict(const: list[str] | None) -> dict:
    from .frontend import parse_overrides

    return dict(parse_overrides(const or []))


@app.command(epilog=_examples("bench"))
def bench(
    program: ProgramArg,
    data: DataOpt = None,
    params: ParamsOpt = None,
    repeat: Annotated[int, typer.Option(help="Timed runs of each kernel (the median is reported).")] = 5,
    threads: Annotated[Optional[int], typer.Option(help="Threads for the kernels (default: every core). "
                                                         "Kernels run in parallel over rows from 2048 rows on.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object and nothing else.")] = False,
    const: ConstOpt = None,
    drop_bad_rows: DropOpt = False,
    max_iterations: MaxIterOpt = DEFAULT_MAX_ITERATIONS,
) -> None:
    """Measure PROGRAM: compile time cold and from cache; forward, gradient, one-direction
    derivative (forward mode) and Hessian-vector product times over all rows."""
    import json

    from . import commands, render

    report = commands.bench(program, data, params,
                            commands.RunOptions(const, max_iterations, drop_bad_rows, _note), repeat, threads)
    if json_out:
        typer.echo(json.dumps(report.as_json()))
    else:
        render.show_bench(report)


def _caused_by(err: BaseException, kind: type) -> bool:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _note(text: str | None) -> None:
    """A line for the user on stderr (what --drop-bad-rows skipped, say)."""
    if text:
        typer.echo(text, err=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """dlang's own warnings (DlangWarning) as one line on stderr; others as Python shows them."""
    from .errors import DlangWarning

    if issubclass(category, DlangWarning):
        sys.stderr.write(f"dlang: warning: {message}\n")
    else:
        import warnings

        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; user errors exit 1 with a message and never a traceback."""
    import signal
    import warnings

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # NumPy's overflow notes: dlang says it in words
    warnings.showwarning = _show_warning
    interrupted = []

    def on_sigint(signum, frame):  # noted: a Ctrl-C that lands inside a C callback (Numba compiling
        interrupted.append(signum)  # in LLVM) is swallowed there and surfaces as another error
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_sigint)
    default_unraisable = sys.unraisablehook

    def unraisable(info) -> None:  # Python would print the swallowed Ctrl-C's traceback
        if not isinstance(info.exc_value, KeyboardInterrupt):
            default_unraisable(info)

    sys.unraisablehook = unraisable
    try:
        app(args=argv)
    except SystemExit as ex:
        # Typer exits 2 on a bad option or argument (after printing why); a bad option is a
        # user error like any other, so it exits 1.
        if ex.code == 130 and _caused_by(ex, KeyboardInterrupt):  # Typer turned Ctrl-C into exit 130
            sys.stderr.write("dlang: interrupted\n")
        sys.exit(1 if ex.code == 2 else ex.code)
    except DlangError as err:
        from .render import print_error

        print_error(err)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("dlang: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as err:  # noqa: BLE001 - a bug of ours: say so plainly, without a traceback
        if interrupted:  # the interrupt broke what it landed in
            sys.stderr.write("dlang: interrupted\n")
            sys.exit(130)
        sys.stderr.write(f"dlang: internal error ({type(err).__name__}: {err}); this is a bug in dlang, "
                         "please report it with the program that caused it\n")
        sys.exit(3)
    finally:
        sys.unraisablehook = default_unraisable
        if previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous)


def script() -> None:
    """The `dlang` command: main(), then a fast exit. Tearing down an interpreter that has
    loaded Numba takes about 0.3 s (a third of a warm `dlang grad`); everything dlang writes
    is closed (and renamed into place) before main returns, so only the streams need a flush."""
    code = 0
    try:
        main()
    except SystemExit as ex:
        if isinstance(ex.code, str):
            sys.stderr.write(ex.code + "\n")
        code = ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    script()
