"""The pipeline: every stage from a program file to its compiled kernels, in order.

`compile_file` is the one place that lists them, one line each; `dlang emit --stage NAME`
stops after any stage and prints what it made, and `dlang emit --stage pipeline` prints the
stages as they run. The kernel passes run on the program (for the forward kernel) and on its
adjoint (for the gradient kernel).

The same stages make the kernels of derived programs (dlang.forward), `mode` saying which:
"forward" runs the tangent program along K direction params (the Jacobian, K columns a call)
and the gradient by forward mode; "hvp" the tangent program and, in the gradient kernel's
place, forward over reverse (the gradient and K Hessian-vector products).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from . import codegen, forward, frontend, passes
from .ir import DEFAULT_MAX_ITERATIONS, Program
from .limits import check_nesting
from .reverse import reverse_ad
from .verify import verify

STAGES: list[tuple[str, str]] = [
    ("read", "the program's text (frontend.read_source)"),
    ("parse", "text to syntax tree (syntax.parse)"),
    ("check", "names, types and shapes checked, functions inlined, lowered to IR (check.check)"),
    ("verify", "the IR's invariants (verify.verify)"),
    ("reverse", "the adjoint program: forward pass, sweep, reverse sweep (reverse.reverse_ad)"),
    *((name, f"{what} (passes.{fn.__name__})") for name, fn, what in passes.KERNEL_PASSES),
    ("generate", "Python source of the kernels (codegen.generate)"),
    ("load", "the source through the kernel cache into Numba kernels (kernels.load_kernels)"),
]


class Stop(Exception):
    """Raised by a stage callback to stop the pipeline after that stage (emit --stage)."""

    def __init__(self, value):
        super().__init__("stopped")
        self.value = value


@dataclass
class KernelIR:
    """What the kernels are made of, after the kernel passes: the program (each row's loss and
    outputs), the program without its outputs (the loss summed over rows) and its adjoint."""

    forward: Program
    adjoint: Program
    loss: Program
    checked: Program | None = None  # the forward kernel's program before the passes (the checked
    # program, or in a derived mode its tangent program): how the kernels are called

    def each(self, fn) -> "KernelIR":
        return KernelIR(fn(self.forward), fn(self.adjoint), fn(self.loss), self.checked)


def compile_file(path: str, consts=None, max_iterations: int = DEFAULT_MAX_ITERATIONS, on_stage=None,
                 stop_after: str | None = None, column_rows: int | None = None):
    """Every stage, in order; gives the compiled kernels (or, with stop_after, what that stage
    made). on_stage(name, seconds, result) is called after each stage; column_rows is the
    length of whole data columns (the data's rows)."""
    frontend.parse_overrides(frontend.as_pairs(consts))  # a bad --const is reported first
    run = _Runner(on_stage, stop_after)
    try:
        with frontend.deep_recursion():
            text = run("read", frontend.read_source, path)
            tree = run("parse", frontend.parse_source, text, path)
            program = run("check", frontend.check_tree, tree, consts, path, text, column_rows)
            return _backend(run, program, max_iterations)
    except Stop as stop:
        return stop.value


MODES = ("reverse", "forward", "hvp")


def compile_kernels(program: Program, max_iterations: int = DEFAULT_MAX_ITERATIONS, on_stage=None,
                    mode: str = "reverse", directions: int = 1):
    """The stages after checking: a checked program to its compiled kernels (with a derived
    mode, those of its derived programs along `directions` direction params)."""
    with frontend.deep_recursion():
        return _backend(_Runner(on_stage, None), program, max_iterations, mode, directions)


def kernel_ir(program: Program, mode: str = "reverse", directions: int = 1) -> KernelIR:
    """The program and its adjoint after every kernel pass (what `generate` renders)."""
    run = _Runner(None, None)
    with frontend.deep_recursion():
        return _kernel_ir(run, program, mode, directions)


def kernel_source(program: Program, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> str:
    """The generated source of a program's kernels (`dlang emit --stage kernel`)."""
    ir = kernel_ir(program)
    return codegen.generate(ir.forward, ir.adjoint, ir.loss, max_iterations)


def _backend(run, program: Program, max_iterations: int, mode: str = "reverse", directions: int = 1):
    from .kernels import load_kernels  # NumPy and Numba: only when kernels are made

    ir = _kernel_ir(run, program, mode, directions)
    source = run("generate", codegen.generate, ir.forward, ir.adjoint, ir.loss, max_iterations)
    return run("load", load_kernels, ir.checked, ir.forward, ir.adjoint, source, max_iterations)


def _kernel_ir(run, program: Program, mode: str = "reverse", directions: int = 1) -> KernelIR:
    run("verify", _verified, program)
    if mode == "reverse":
        adjoint = run("reverse", reverse_ad, program)
        ir = KernelIR(program, adjoint, passes.without_outputs(program))
    elif mode in ("forward", "hvp"):
        tangent = run("jvp", forward.jvp_program, program, directions)
        make = forward.forward_gradient_program if mode == "forward" else forward.hvp_program
        adjoint = run(mode, make, program, directions)
        ir = KernelIR(tangent, adjoint, passes.without_outputs(tangent))
    else:
        raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    checked = ir.forward
    for name, fn, _ in passes.KERNEL_PASSES:
        ir = run(name, lambda ir: ir.each(fn), ir)
    ir.checked = checked
    return ir


def _verified(program: Program) -> Program:
    verify(program)
    check_nesting(program)
    return program


class _Runner:
    def __init__(self, on_stage, stop_after: str | None):
        self.on_stage = on_stage
        self.stop_after = stop_after

    def __call__(self, name: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        if self.on_stage is not None:
            self.on_stage(name, time.perf_counter() - start, result)
        if name == self.stop_after:
            raise Stop(result)
        return result


def describe(name: str, result) -> str:
    """A few words on what a stage made, for `dlang emit --stage pipeline`."""
    from .ir import walk

    def count(p: Program) -> int:
        return len(p.prelude) + sum(1 for _ in walk(p.body))

    if isinstance(result, str):
        return f"{len(result.splitlines())} lines"
    if isinstance(result, KernelIR):
        return (f"forward {count(result.forward)} statements, adjoint {count(result.adjoint)}, "
                f"loss {count(result.loss)}")
    if isinstance(result, Program):
        return f"{count(result)} statements"
    if hasattr(result, "items"):  # the syntax tree
        return f"syntax tree of {len(result.items)} items"
    path = getattr(result, "path", None)
    return path.name if path is not None else type(result).__name__
