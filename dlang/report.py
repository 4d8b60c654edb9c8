"""The fit report: how sure each fitted param is, and how good the fit is.

Two ways, as SciPy, lmfit and Stan do:

- **Least squares**, when the program's loss is a square or a sum of squares at the top level of
  its body (`(e)^2`, `pow(e, 2)`, `(a - b)^2 + (c - d)^2`, each optionally times a positive
  constant weight w): each row's squared terms are residuals r = sqrt(w) e, and with J the
  Jacobian of all residuals (forward mode), m residuals and p params,
  s^2 = SSR / (m - p) and cov = s^2 (J^T J)^-1 (curve_fit's absolute_sigma=False).
- Otherwise the loss **summed over the rows** is taken as a negative log-likelihood, and
  cov = H^-1, H its Hessian (forward over reverse).

Statistics follow lmfit: chi2 = SSR, reduced chi2 = SSR / (m - p), AIC = m ln(SSR/m) + 2p,
BIC = m ln(SSR/m) + p ln(m), R^2 = 1 - SSR / SST when each residual is a difference with a data
column (SST about that column's mean); for a likelihood AIC = 2 NLL + 2p, BIC = 2 NLL + p ln(n).
Errors are left out, with a warning naming the params, when the matrix is singular or
ill-conditioned; a correlation above 0.95 in magnitude is warned about.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from . import derivatives, pipeline
from .ir import F64, Block, Eqn, Lit, Program, Var, renumber
from .kernels import Kernels

HESSIAN_MAX_ENTRIES = 2000  # past this, the likelihood path does not form the Hessian (one pass per 8)
ILL_CONDITIONED = 1e12  # the largest eigenvalue over the smallest, past which errors are left out
HIGH_CORRELATION = 0.95


@dataclass
class FitReport:
    method: str                   # "least squares" or "negative log-likelihood"
    params: dict
    names: list[str]              # the param entries, as the correlation matrix orders them
    stderr: dict | None           # params-shaped; None when the errors cannot be estimated
    correlation: np.ndarray | None
    loss: float                   # the program's mean loss at the params
    rows: int
    residuals: int                # m: residuals (least squares), or rows
    dof: int                      # m - p
    sigma: float | None           # sqrt(SSR / dof) (least squares)
    chi2: float | None            # SSR (least squares)
    aic: float
    bic: float
    r2: float | None
    converged: bool
    stopped: str
    warnings: list[str] = field(default_factory=list)
    whole_columns: bool = False   # one run on whole columns of `rows` rows (`data x[]`)

    @property
    def reduced_chi2(self) -> float | None:
        return None if self.chi2 is None or self.dof <= 0 else self.chi2 / self.dof


# ---- least squares: the residuals of a program ---------------------------------------------------

@dataclass
class _Term:
    value: object                 # the atom squared
    weight: float


def squared_terms(program: Program) -> list[_Term] | None:
    """The squared terms whose sum is each row's loss, when the loss is a (weighted) sum of
    squares computed at the top level of the body; else None."""
    if not program.has_loss:
        return None
    defs = {s.outs[0].id: s for s in program.body.eqns if isinstance(s, Eqn) and s.outs}
    terms: list[_Term] = []

    def square(a) -> object | None:
        e = defs.get(a.id) if isinstance(a, Var) else None
        if e is not None and e.op == "pow" and e.ins[1] == Lit(2.0, F64) and e.ins[0].type == F64:
            return e.ins[0]
        if e is not None and e.op == "mul" and e.ins[0] == e.ins[1] and e.ins[0].type == F64:
            return e.ins[0]
        return None

    def walk(a) -> bool:
        if a == Lit(0.0, F64):
            return True
        base = square(a)
        if base is not None:
            terms.append(_Term(base, 1.0))
            return True
        e = defs.get(a.id) if isinstance(a, Var) else None
        if e is None:
            return False
        if e.op == "add":
            return walk(e.ins[0]) and walk(e.ins[1])
        if e.op == "mul":
            for c, x in (e.ins, e.ins[::-1]):
                base = square(x)
                if isinstance(c, Lit) and c.value > 0 and base is not None:
                    terms.append(_Term(base, float(c.value)))
                    return True
        return False

    return terms if walk(program.body.results[0]) and terms else None


def residual_program(program: Program, terms: list[_Term]) -> Program:
    """The program with the residuals sqrt(w) e as its outputs (the loss unchanged)."""
    next_id = max([v.id for v in program.body.params] + [v.id for s in program.body.eqns for v in s.outs]
                  + [0]) + 1
    eqns = list(program.body.eqns)
    outs = []
    for t in terms:
        if t.weight == 1.0:
            outs.append(t.value)
            continue
        v = Var(next_id, F64, "residual")
        next_id += 1
        eqns.append(Eqn((v,), "mul", (), (Lit(math.sqrt(t.weight), F64), t.value), None))
        outs.append(v)
    names = tuple(f"residual_{k}" for k in range(len(outs)))
    body = Block(program.body.params, tuple(eqns), (program.body.results[0], *outs))
    return renumber(replace(program, outputs=names, body=body))


def _data_sides(program: Program, terms: list[_Term]) -> list[tuple[int, float] | None]:
    """For each residual a - b (or b - a) with b a scalar data input: (its column, the sign of
    the model's side), else None."""
    from .abi import data_layout

    defs = {s.outs[0].id: s for s in program.body.eqns if isinstance(s, Eqn) and s.outs}
    columns = {v.id: col for d, v, (col, _) in zip(program.data, program.data_vars, data_layout(program))
               if not d.type.shape}
    out = []
    for t in terms:
        e = defs.get(t.value.id) if isinstance(t.value, Var) else None
        side = None
        if e is not None and e.op == "sub":
            a, b = e.ins
            if isinstance(b, Var) and b.id in columns:
                side = (columns[b.id], 1.0)
            elif isinstance(a, Var) and a.id in columns:
                side = (columns[a.id], -1.0)
        out.append(side)
    return out


# ---- the report ------------------------------------------------------------------------------------

def fit_report(kernels: Kernels, data: np.ndarray, params: dict, converged: bool = True, stopped: str = "",
               rows=None, fixed: tuple[str, ...] = ()) -> FitReport:
    """The report at params (the fitted ones); params in `fixed` were held (no error, and not
    counted among the params fitted)."""
    program = kernels.program
    free = derivatives.flatten(program, {q.name: np.full(q.type.shape, q.name not in fixed, float) if q.type.shape
                                         else float(q.name not in fixed) for q in program.params}) > 0
    names = [name for name, f in zip(derivatives.entry_names(program), free) if f]
    p = len(names)
    n = data.shape[0]
    loss = kernels.loss(data, params, rows)
    terms = squared_terms(program)
    warnings: list[str] = []
    if terms is not None:
        residuals = pipeline.compile_kernels(residual_program(program, terms), kernels.max_iterations)
        jac = derivatives.jacobian(residuals, data, params, rows)
        r = jac.outputs.reshape(-1)
        J = jac.d_outputs.reshape(r.size, -1)[:, free]
        m = r.size
        ssr = float(r @ r)
        dof = m - p
        s2 = ssr / dof if dof > 0 else float("nan")
        info = J.T @ J
        cov = _inverse(info, names, warnings)
        if cov is not None:
            cov = cov * s2
        aic = m * math.log(ssr / m) + 2 * p if ssr > 0 else -math.inf
        bic = m * math.log(ssr / m) + p * math.log(m) if ssr > 0 else -math.inf
        r2 = _r_squared(program, terms, data, jac.outputs, ssr)
        method, sigma, chi2 = "least squares", (math.sqrt(s2) if dof > 0 else None), ssr
        if dof <= 0:
            warnings.append(f"{m} residuals for {p} params leave no degrees of freedom: the errors cannot be estimated")
            cov = None
    else:
        if p > HESSIAN_MAX_ENTRIES:
            warnings.append(f"{p:,} params fitted: the Hessian is not formed (more than {HESSIAN_MAX_ENTRIES:,}), so "
                            "the errors are not estimated")
            cov = None
        else:
            _, _, h, _ = derivatives.hessian(kernels, data, params, rows)
            cov = _inverse(h[np.ix_(free, free)] * n, names, warnings)  # of the loss summed over the rows
        nll = loss * n
        observed = _observations(program, n)
        m, dof, sigma, chi2, r2 = observed, observed - p, None, None, None
        aic, bic = 2 * nll + 2 * p, 2 * nll + p * math.log(max(observed, 1))
        method = "negative log-likelihood"
    on_bound = _on_bounds(program, params, fixed)
    if on_bound:
        warnings.append(f"{', '.join(repr(x) for x in on_bound)} {'is' if len(on_bound) == 1 else 'are'} at a bound: "
                        "the errors cannot be estimated there")
        cov = None
    stderr = corr = None
    if cov is not None:
        var = np.diag(cov).copy()
        if np.all(np.isfinite(var)) and np.all(var >= 0):
            sd = np.sqrt(var)
            full = np.full(free.size, np.nan)
            full[free] = sd
            stderr = {k: (None if k in fixed else v) for k, v in derivatives.unflatten(program, full).items()}
            with np.errstate(all="ignore"):
                corr = cov / np.outer(sd, sd)
            np.fill_diagonal(corr, 1.0)
            for i in range(p):
                for j in range(i + 1, p):
                    if abs(corr[i, j]) > HIGH_CORRELATION:
                        warnings.append(f"'{names[i]}' and '{names[j]}' are correlated {corr[i, j]:+.3f}: the data "
                                        "hardly tell them apart")
        else:
            warnings.append("the covariance has negative or non-finite variances: the errors cannot be estimated "
                            "(the fit may not be at a minimum)")
    return FitReport(method, dict(params), names, stderr, corr, loss, _observations(program, n), m, dof, sigma, chi2,
                     aic, bic, r2, converged, stopped, warnings, program.whole_columns)


def _observations(program: Program, rows: int) -> int:
    """The data rows: a whole-column program runs once on all of them (its BIC counts them all)."""
    return program.data[0].type.shape[0] if program.whole_columns and program.data else rows


ON_BOUND = 1e-6  # relative: a param this close to a bound is at it


def _on_bounds(program: Program, params: dict, fixed) -> list[str]:
    """The param entries (names) at one of their bounds."""
    out = []
    names = iter(derivatives.entry_names(program))
    for p in program.params:
        values = np.ravel(np.asarray(params[p.name], float))
        for v in values:
            name = next(names)
            if p.bounds is None or p.name in fixed:
                continue
            if any(np.isfinite(b) and abs(v - b) <= ON_BOUND * max(1.0, abs(b)) for b in p.bounds):
                out.append(name)
    return out


def _inverse(a: np.ndarray, names: list[str], warnings: list[str]) -> np.ndarray | None:
    """a^-1, or None with a warning naming the params involved when a is singular or
    ill-conditioned (or not positive definite: not a minimum)."""
    if a.size == 0:
        return np.zeros((0, 0))
    if not np.all(np.isfinite(a)):
        warnings.append("the curvature is not finite: the errors cannot be estimated")
        return None
    sym = (a + a.T) / 2
    eig, vec = np.linalg.eigh(sym)
    top = max(abs(eig[-1]), 1e-300)
    if eig[0] <= top / ILL_CONDITIONED:
        weak = vec[:, 0]
        involved = [names[k] for k in np.argsort(-np.abs(weak)) if abs(weak[k]) > 0.3] or [names[int(np.argmax(np.abs(weak)))]]
        what = "singular or ill-conditioned" if eig[0] > -top * 1e-8 else "not positive definite (not a minimum)"
        warnings.append(f"the curvature is {what} along {', '.join(repr(x) for x in involved)}: the errors cannot be "
                        "estimated")
        return None
    return np.linalg.inv(sym)


def _r_squared(program: Program, terms: list[_Term], data: np.ndarray, residuals: np.ndarray,
               ssr: float) -> float | None:
    sides = _data_sides(program, terms)
    if not sides or any(s is None for s in sides) or data.shape[0] == 0:
        return None
    observed = np.concatenate([data[:, col] for col, _ in sides])
    sst = float(np.sum((observed - observed.mean()) ** 2))
    return 1.0 - ssr / sst if sst > 0 else None


def report_json(report: FitReport) -> dict:
    """The report as the JSON object `dlang train --report` writes."""
    def value(v):
        if v is None:
            return None
        if isinstance(v, np.ndarray):
            return [value(x) for x in v.tolist()] if v.ndim else value(float(v))
        if isinstance(v, list):
            return [value(x) for x in v]
        v = float(v)
        return v if math.isfinite(v) else None

    out = {
        "method": report.method,
        "params": {k: value(np.asarray(v)) for k, v in report.params.items()},
        "stderr": None if report.stderr is None else {k: None if v is None else value(np.asarray(v))
                                                      for k, v in report.stderr.items()},
        "correlation": None if report.correlation is None else {"names": report.names,
                                                                 "matrix": value(report.correlation)},
        "loss": value(report.loss), "rows": report.rows, "residuals": report.residuals, "dof": report.dof,
        "sigma": value(report.sigma), "chi2": value(report.chi2), "reduced_chi2": value(report.reduced_chi2),
        "aic": value(report.aic), "bic": value(report.bic), "r2": value(report.r2),
        "converged": report.converged, "stopped": report.stopped, "warnings": list(report.warnings),
    }
    return out
