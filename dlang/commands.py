"""What the commands do, as library functions: the CLI only parses options and renders."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codegen import DEFAULT_MAX_ITERATIONS
from .data import load_data
from .errors import Diagnostic, InputError
from .frontend import load_program
from .gradcheck import Comparison, compare, finite_differences
from .ir import Program
from .kernels import Kernels, compile_kernels
from .params import load_params


@dataclass
class Prepared:
    program: Program
    kernels: Kernels
    data: np.ndarray
    params: dict


def prepare(program_path: str, data_path: str | None, params_path: str | None,
            consts: list[str] | None, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> Prepared:
    """Load a program, its data and params, and its compiled kernels."""
    program = load_program(program_path, consts)
    data = load_data(program, data_path)
    params = load_params(program, params_path)
    kernels = compile_kernels(program, max_iterations)
    return Prepared(program, kernels, data, params)


def require_loss(program: Program, command: str) -> None:
    if not program.has_loss:
        raise InputError(Diagnostic(f"the program has no loss statement, so there is nothing to {command}; "
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


def grad(program_path: str, data_path: str | None = None, params_path: str | None = None,
         consts: list[str] | None = None, check: bool = False) -> GradReport:
    """The mean loss over the rows and its gradient; with check, finite differences beside it."""
    p = prepare(program_path, data_path, params_path, consts)
    require_loss(p.program, "grad")
    loss, grads = p.kernels.grad(p.data, p.params)
    comparison = None
    if check:
        fd = finite_differences(lambda q: p.kernels.loss(p.data, q), p.params)
        comparison = compare(grads, fd, loss)
    return GradReport(p.program, loss, p.params, grads, p.data.shape[0], comparison)
