"""Training: fit a program's params with SGD (momentum), Adam or L-BFGS, driven by the
compiled gradient kernel. Library code: it reports each epoch to a callback and never prints."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import InputError, RuntimeFault
from .kernels import Kernels

OPTIMIZERS = ("lbfgs", "adam", "sgd", "lm")
DEFAULT_EPOCHS = {"lbfgs": 500, "adam": 300, "sgd": 300, "lm": 200}
DEFAULT_LR = {"adam": 0.01, "sgd": 0.01}
DEFAULT_BATCH = 32
MOMENTUM = 0.9
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass
class TrainOptions:
    optimizer: str = "lbfgs"
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    seed: int = 0
    tol: float = 1e-10  # stop when the best loss improves by less than this (relative) ...
    patience: int = 20  # ... over this many epochs (adam, sgd)
    gtol: float = 1e-10  # or when the gradient norm falls below this (relative to max(1, loss))
    fixed: tuple[str, ...] = ()  # params held at their start (--fix)
    starts: int = 1  # fits from spread-out starts (--starts); the best is kept

    def resolved(self, rows: int) -> "TrainOptions":
        """The options with defaults filled in, checked: a bad option is a user error."""
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"--optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        epochs = DEFAULT_EPOCHS[self.optimizer] if self.epochs is None else self.epochs
        if epochs < 1:
            raise InputError(f"--epochs must be at least 1, not {epochs}")
        if not (math.isfinite(self.tol) and self.tol >= 0):
            raise InputError(f"--tol must be a number at least 0, not {self.tol}")
        if self.patience < 1:
            raise InputError(f"--patience must be at least 1, not {self.patience}")
        if self.optimizer in ("lbfgs", "lm"):
            if self.batch_size is not None:
                raise InputError(f"--batch-size works with --optimizer adam or sgd; {self.optimizer} uses every "
                                 "row each step")
            if self.lr is not None:
                raise InputError(f"--lr works with --optimizer adam or sgd; {self.optimizer} chooses its own steps")
            lr, batch = None, rows
        else:
            lr = DEFAULT_LR[self.optimizer] if self.lr is None else self.lr
            if not (math.isfinite(lr) and lr > 0):
                raise InputError(f"--lr must be a positive number, not {lr}")
            batch = min(DEFAULT_BATCH, rows) if self.batch_size is None else self.batch_size
            if batch < 1:
                raise InputError(f"--batch-size must be at least 1, not {batch}")
            batch = min(batch, rows)
        if self.starts < 1:
            raise InputError(f"--starts must be at least 1, not {self.starts}")
        return TrainOptions(self.optimizer, epochs, lr, batch, self.seed, self.tol, self.patience, self.gtol,
                            self.fixed, self.starts)


@dataclass
class Epoch:
    """What one epoch did: the loss over all rows at its end, and how fast it went."""

    epoch: int
    epochs: int
    loss: float
    best_loss: float
    grad_norm: float
    rows: int  # rows processed (gradient evaluations x rows)
    seconds: float
    params: dict | None = None  # the params at the end of the epoch (for --history)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class TrainResult:
    params: dict  # the best params seen (lowest loss over all rows)
    loss: float
    epochs: int  # epochs completed
    stopped: str  # why training stopped, in words
    status: str  # "done", "interrupted" or "non-finite"
    history: list[Epoch] = field(default_factory=list)
    non_finite: list[str] = field(default_factory=list)  # params whose value or gradient went non-finite
    origin: object = None  # a DlangError naming the line where the first non-finite value appeared


class _Flat:
    """Params dict <-> one flat float vector, in the program's param order. With bounds (name ->
    (lo, hi)), the vector is in the unconstrained space the optimizers move in, as Stan does:
    x = lo + exp(u) for (lo, inf), hi - exp(u) for (-inf, hi), lo + (hi - lo) sigmoid(u) for
    (lo, hi); `grad` takes a gradient with respect to the params to one with respect to u."""

    def __init__(self, params: dict, bounds: dict | None = None):
        self.names = list(params)
        self.shapes = [np.shape(params[k]) for k in self.names]
        self.sizes = [int(np.prod(s)) if s else 1 for s in self.shapes]
        lo, hi = [], []
        for name, size in zip(self.names, self.sizes):
            b = (bounds or {}).get(name) or (-np.inf, np.inf)
            lo += [b[0]] * size
            hi += [b[1]] * size
        self.lo, self.hi = np.array(lo, float), np.array(hi, float)
        self.both = np.isfinite(self.lo) & np.isfinite(self.hi)
        self.below = np.isfinite(self.lo) & ~self.both
        self.above = np.isfinite(self.hi) & ~self.both
        self.bounded = bool(self.both.any() or self.below.any() or self.above.any())
        # the start, both ways: an entry still at its starting u (a fixed param, say) gives back
        # its starting value exactly, not exp(log(x)) a rounding away from it
        self.start_x = self._raw(params)
        self.start_u = self.pack(params)

    def _raw(self, params: dict) -> np.ndarray:
        return np.concatenate([np.ravel(np.asarray(params[k], float)) for k in self.names]) if self.names \
            else np.zeros(0)

    def pack(self, params: dict) -> np.ndarray:
        x = self._raw(params)
        if not self.bounded:
            return x
        u = x.copy()
        with np.errstate(all="ignore"):
            u[self.below] = np.log(x[self.below] - self.lo[self.below])
            u[self.above] = np.log(self.hi[self.above] - x[self.above])
            t = (x[self.both] - self.lo[self.both]) / (self.hi[self.both] - self.lo[self.both])
            u[self.both] = np.log(t) - np.log1p(-t)
        return u

    def constrained(self, u: np.ndarray) -> np.ndarray:
        if not self.bounded:
            return u
        x = u.copy()
        with np.errstate(all="ignore"):
            x[self.below] = self.lo[self.below] + np.exp(u[self.below])
            x[self.above] = self.hi[self.above] - np.exp(u[self.above])
            s = 1.0 / (1.0 + np.exp(-u[self.both]))
            x[self.both] = self.lo[self.both] + (self.hi[self.both] - self.lo[self.both]) * s
        at_start = u == self.start_u
        x[at_start] = self.start_x[at_start]
        return x

    def grad(self, grads: dict, u: np.ndarray) -> np.ndarray:
        """d loss / d u from d loss / d params, at u."""
        g = self._raw(grads)
        if not self.bounded:
            return g
        with np.errstate(all="ignore"):
            g[self.below] *= np.exp(u[self.below])
            g[self.above] *= -np.exp(u[self.above])
            s = 1.0 / (1.0 + np.exp(-u[self.both]))
            g[self.both] *= (self.hi[self.both] - self.lo[self.both]) * s * (1.0 - s)
        return g

    def unpack(self, u: np.ndarray) -> dict:
        x = self.constrained(u)
        out, k = {}, 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            out[name] = x[k:k + size].reshape(shape).copy() if shape else float(x[k])
            k += size
        return out

    def non_finite(self, x: np.ndarray) -> list[str]:
        bad, k = [], 0
        for name, size in zip(self.names, self.sizes):
            if not np.all(np.isfinite(x[k:k + size])):
                bad.append(name)
            k += size
        return bad


class _NonFinite(Exception):
    def __init__(self, names: list[str], what: str, x: np.ndarray | None = None, rows=None):
        super().__init__(what)
        self.names, self.what = names, what
        self.x, self.rows = x, rows  # where: the params and the rows of the batch (x None: a step overflowed)


class Trainer:
    """Fits params; `run` reports each epoch to on_epoch and checks should_stop between batches."""

    def __init__(self, kernels: Kernels, data: np.ndarray, params: dict, options: TrainOptions,
                 row_labels: np.ndarray | None = None, gradient: Kernels | None = None):
        self.kernels = kernels
        # what the optimizer minimizes: the program's loss, or the loss of its event program
        # (dlang.events: continuous where the program's is a staircase). Every loss reported,
        # and the choice of the best params, is the program's own.
        self.objective = kernels if gradient is None else gradient
        self.data = data
        # the row numbers a user sees (the file's), for faults: a batch's rows keep theirs
        self.row_labels = np.arange(1, data.shape[0] + 1) if row_labels is None else np.asarray(row_labels)
        self.rows = data.shape[0]
        program = kernels.program  # on whole columns one run reads every data row: rows/s counts those
        self.rows_per_run = program.data[0].type.shape[0] if program.whole_columns and program.data else 1
        self.options = options.resolved(self.rows)
        self.flat = _Flat(params, {p.name: p.bounds for p in kernels.program.params if p.bounds})
        self.x = self.flat.pack(params)
        # the entries the optimizer may move: a fixed param's gradient is taken as zero
        self.free = self.flat._raw({k: np.zeros(np.shape(v)) if k in self.options.fixed else np.ones(np.shape(v))
                                    for k, v in params.items()}) > 0
        self.best_x = self.x.copy()
        self.best_loss = math.inf
        self.best_objective = math.inf
        self.history: list[Epoch] = []
        self.bad_point = None  # (params vector, batch rows, what) where the loss or gradient went non-finite
        self.start: Epoch | None = None  # "epoch 0": the start (for --history)

    # ---- evaluation ------------------------------------------------------------------------

    def loss_and_grad(self, x: np.ndarray, rows: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        data, labels = (self.data, self.row_labels) if rows is None else (self.data[rows], self.row_labels[rows])
        loss, grads = self.objective.grad(data, self.flat.unpack(x), labels)
        g = self.flat.grad(grads, x)
        g[~self.free] = 0.0
        if not math.isfinite(loss) or not np.all(np.isfinite(g)):
            names = self.flat.non_finite(g) or self.flat.names
            what = "the loss" if not math.isfinite(loss) else "the gradient"
            raise _NonFinite(names, what, x.copy(), rows)
        return loss, g

    def full_loss(self, x: np.ndarray) -> float:
        """The program's mean loss over all rows (what is reported)."""
        return self.kernels.loss(self.data, self.flat.unpack(x), self.row_labels)

    def objective_loss(self, x: np.ndarray) -> float:
        """The mean loss the optimizer minimizes (the program's, or its event program's)."""
        return self.objective.loss(self.data, self.flat.unpack(x), self.row_labels)

    def reported(self, x: np.ndarray, objective: float) -> float:
        """The program's loss at x, given the objective's there (the same when they are one)."""
        return objective if self.objective is self.kernels else self.full_loss(x)

    def note(self, epoch: int, x: np.ndarray, loss: float, grad_norm: float, rows: int, seconds: float,
             on_epoch, objective: float | None = None) -> Epoch:
        """Record an epoch. The best params are those of the lowest objective (the loss the
        optimizer minimizes); the losses recorded are the program's own (the same, unless an
        event program is the objective: its loss is smooth where the program's is a staircase,
        whose steps would otherwise pick the best params by the noise of the step)."""
        objective = loss if objective is None else objective
        if math.isfinite(objective) and objective < self.best_objective:
            self.best_objective = objective
            self.best_loss, self.best_x = loss, x.copy()
        e = Epoch(epoch, self.options.epochs, loss, self.best_loss, grad_norm, rows * self.rows_per_run, seconds,
                  self.flat.unpack(x))
        self.history.append(e)
        if on_epoch:
            on_epoch(e)
        return e

    # ---- the loop -------------------------------------------------------------------------

    def run(self, on_epoch: Callable[[Epoch], None] | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> TrainResult:
        try:
            if self.options.optimizer == "lbfgs":
                stopped, status = self._lbfgs(on_epoch, should_stop)
            else:
                stopped, status = self._first_order(on_epoch, should_stop)
            bad: list[str] = []
        except _NonFinite as err:
            epoch = len(self.history) + 1
            stopped = f"{err.what} went non-finite in epoch {epoch} (for {', '.join(err.names)})"
            status, bad = "non-finite", err.names
            if err.x is not None:
                self.bad_point = (err.x, err.rows, f"{err.what} went non-finite (for {', '.join(err.names)})")
        if not math.isfinite(self.best_loss):  # nothing finished: keep the starting params
            self.best_x = self.x.copy()
            self.best_loss = self.full_loss(self.best_x)
        return TrainResult(self.flat.unpack(self.best_x), self.best_loss, len(self.history), stopped, status,
                           self.history, bad)

    def _converged(self, loss: float, grad_norm: float) -> str | None:
        o = self.options
        if grad_norm <= o.gtol * max(1.0, abs(loss)):
            return f"converged: the gradient norm {grad_norm:.3g} fell below the tolerance"
        if o.tol > 0 and len(self.history) > o.patience:
            before = self.history[-o.patience - 1].best_loss
            if before - self.best_loss <= o.tol * max(1.0, abs(before)):
                return f"converged: the loss stopped improving (by less than {o.tol:g} over {o.patience} epochs)"
        return None

    def _first_order(self, on_epoch, should_stop) -> tuple[str, str]:
        o = self.options
        rng = np.random.default_rng(o.seed)
        x = self.x
        start_loss = self.full_loss(x)  # the starting params are the best so far until beaten
        self.start = Epoch(0, o.epochs, start_loss, start_loss, float("nan"), self.rows, 0.0, self.flat.unpack(x))
        if math.isfinite(start_loss):
            self.best_loss, self.best_x = start_loss, x.copy()
            self.best_objective = start_loss if self.objective is self.kernels else self.objective_loss(x)
        velocity = np.zeros_like(x)
        m, v = np.zeros_like(x), np.zeros_like(x)
        step = 0
        for epoch in range(1, o.epochs + 1):
            start = time.perf_counter()
            order = rng.permutation(self.rows)
            grad_sum, batches = np.zeros_like(x), 0
            for k in range(0, self.rows, o.batch_size):
                if should_stop():
                    return "interrupted", "interrupted"
                rows = order[k:k + o.batch_size]
                _, g = self.loss_and_grad(x, rows if len(rows) < self.rows else None)
                step += 1
                if o.optimizer == "sgd":
                    velocity = MOMENTUM * velocity - o.lr * g
                    new = x + velocity
                else:
                    b1, b2 = ADAM_BETAS
                    m = b1 * m + (1 - b1) * g
                    v = b2 * v + (1 - b2) * g * g
                    mhat, vhat = m / (1 - b1 ** step), v / (1 - b2 ** step)
                    new = x - o.lr * mhat / (np.sqrt(vhat) + ADAM_EPS)
                bad = self.flat.non_finite(new)
                if bad:
                    raise _NonFinite(bad, "the params")
                x = self.x = new
                grad_sum += g
                batches += 1
            loss = self.full_loss(x)
            if not math.isfinite(loss):
                raise _NonFinite(self.flat.names, "the loss", x.copy())
            grad_norm = float(np.linalg.norm(grad_sum / max(batches, 1)))
            objective = loss if self.objective is self.kernels else self.objective_loss(x)
            self.note(epoch, x, loss, grad_norm, self.rows, time.perf_counter() - start, on_epoch, objective)
            why = self._converged(loss, grad_norm)
            if why:
                return why, "done"
        return f"finished {o.epochs} epoch{'s' * (o.epochs != 1)}", "done"

    def _lbfgs(self, on_epoch, should_stop) -> tuple[str, str]:
        """L-BFGS with a backtracking line search that treats a non-finite loss as a step too far.

        Ours rather than SciPy's L-BFGS-B: simulators often blow up (overflow to inf) when a
        trial step moves a param too far, and L-BFGS-B then stops at once at the start; here
        the step is shortened until the loss is finite and decreases enough (Armijo)."""
        o = self.options
        x = self.x
        f, g = self.loss_and_grad(x)
        self.best_loss, self.best_x = self.reported(x, f), x.copy()
        self.best_objective = f
        self.start = Epoch(0, o.epochs, self.best_loss, self.best_loss, float(np.linalg.norm(g)), self.rows, 0.0,
                           self.flat.unpack(x))
        memory: list[tuple[np.ndarray, np.ndarray, float]] = []
        stalled = 0
        for epoch in range(1, o.epochs + 1):
            start = time.perf_counter()
            if float(np.linalg.norm(g)) <= o.gtol * max(1.0, abs(f)):
                return "converged: the gradient norm fell below the tolerance", "done"
            d = self._direction(g, memory)
            slope = float(g @ d)
            if slope >= 0.0:  # not a descent direction: forget the curvature pairs
                memory.clear()
                d = self._direction(g, memory)
                slope = float(g @ d)
            step = 1.0 if memory else min(1.0, 1.0 / max(float(np.linalg.norm(g)), 1e-300))
            evaluations = 0
            for _ in range(60):  # the line search needs only losses: the forward kernel is cheaper
                if should_stop():
                    return "interrupted", "interrupted"
                trial = x + step * d
                evaluations += 1
                try:
                    f_new = self.objective_loss(trial)
                except RuntimeFault as fault:  # a while loop that never stops there: a step too far
                    if not _step_too_far(fault):
                        raise
                    f_new = math.inf
                if not math.isfinite(f_new):
                    step *= 0.25
                    continue
                if f_new <= f + 1e-4 * step * slope:
                    break
                # quadratic interpolation of the loss along d, kept within [0.1, 0.5] of the step
                denom = 2.0 * (f_new - f - slope * step)
                guess = -slope * step * step / denom if denom > 0 else 0.5 * step
                step = min(max(guess, 0.1 * step), 0.5 * step)
            else:
                return "stopped: no step along the search direction lowers the loss any further", "done"
            f_new, g_new = self.loss_and_grad(trial)
            s_vec, y_vec = trial - x, g_new - g
            sy = float(s_vec @ y_vec)
            if sy > 1e-12 * float(np.linalg.norm(s_vec) * np.linalg.norm(y_vec)):
                memory.append((s_vec, y_vec, 1.0 / sy))
                del memory[:-20]
            improvement = f - f_new
            x, f, g = trial, f_new, g_new
            self.x = x
            self.note(epoch, x, self.reported(x, f), float(np.linalg.norm(g)), evaluations * self.rows,
                      time.perf_counter() - start, on_epoch, objective=f)
            stalled = stalled + 1 if improvement <= o.tol * max(1.0, abs(f)) else 0
            if o.tol > 0 and stalled >= 3:
                return "converged: the loss stopped improving", "done"
        return f"finished {o.epochs} epoch{'s' * (o.epochs != 1)}", "done"

    @staticmethod
    def _direction(g: np.ndarray, memory) -> np.ndarray:
        """-H g by the two-loop recursion over the stored curvature pairs."""
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(memory):
            a = rho * float(s @ q)
            q -= a * y
            alphas.append(a)
        if memory:
            s, y, _ = memory[-1]
            q *= float(s @ y) / float(y @ y)
        for (s, y, rho), a in zip(memory, reversed(alphas)):
            b = rho * float(y @ q)
            q += (a - b) * s
        return -q


def _step_too_far(fault: RuntimeFault) -> bool:
    """A fault a trial point of the line search may cause (a while loop past its cap: a
    simulator whose params went where it never stops), as opposed to a bug in the program."""
    return getattr(fault, "kind", None) == "while"


def spread_starts(params: dict, n: int, seed: int, fixed=(), bounds: dict | None = None) -> list[dict]:
    """n starts: the given one, then n - 1 spread around it, each entry x moved by z * max(|x|, 1)
    with z a Latin-hypercube sample of the standard normal (every stratum of z used once per
    entry, so the starts cover both sides of the start)."""
    from statistics import NormalDist

    rng = np.random.default_rng([seed, 7919])
    flat = _Flat(params, bounds)  # spread in the unconstrained space: every start inside the bounds
    x0 = flat.pack(params)
    moved = flat._raw({k: np.zeros(np.shape(v)) if k in fixed else np.ones(np.shape(v)) for k, v in params.items()})
    m = n - 1
    out = [dict(params)]
    if m <= 0:
        return out
    z = np.empty((m, x0.size))
    for j in range(x0.size):
        strata = (np.arange(m) + rng.uniform(size=m)) / m
        z[:, j] = rng.permutation([NormalDist().inv_cdf(min(max(q, 1e-9), 1 - 1e-9)) for q in strata])
    for k in range(m):
        out.append(flat.unpack(x0 + moved * z[k] * np.maximum(np.abs(x0), 1.0)))
    return out


def fit_least_squares(residuals: Kernels, kernels: Kernels, data: np.ndarray, params: dict, options: TrainOptions,
                      rows=None, on_epoch=None) -> TrainResult:
    """Trust-region least squares (SciPy's least_squares, method "trf": Levenberg-Marquardt-like
    steps on the residuals' Jacobian, ready for bounds) on a residual program's outputs, its
    Jacobian by forward mode. An epoch is one Jacobian; every loss reported is `kernels`'s (the
    program's own)."""
    from scipy.optimize import least_squares

    from . import derivatives

    options = options.resolved(data.shape[0])
    flat = _Flat(params)
    x0 = flat.pack(params)
    free = flat.pack({k: np.zeros(np.shape(v)) if k in options.fixed else np.ones(np.shape(v))
                      for k, v in params.items()}) > 0
    box = _Flat(params, {p.name: p.bounds for p in kernels.program.params if p.bounds})
    labels = np.arange(1, data.shape[0] + 1) if rows is None else np.asarray(rows)
    history: list[Epoch] = []
    best = {"loss": math.inf, "x": x0.copy()}
    clock = [time.perf_counter()]

    def full(xf):
        x = x0.copy()
        x[free] = xf
        return x

    def fun(xf):
        _, outs = residuals.forward_rows(data, flat.unpack(full(xf)), labels)
        return outs.reshape(-1)

    def jac(xf):
        x = full(xf)
        j = derivatives.jacobian(residuals, data, flat.unpack(x), labels)
        r = j.outputs.reshape(-1)
        J = j.d_outputs.reshape(r.size, -1)[:, free]
        loss = kernels.loss(data, flat.unpack(x), labels)
        if math.isfinite(loss) and loss < best["loss"]:
            best["loss"], best["x"] = loss, x.copy()
        now = time.perf_counter()
        e = Epoch(len(history) + 1, options.epochs, loss, best["loss"], float(np.linalg.norm(J.T @ r)),
                  data.shape[0], now - clock[0])
        clock[0] = now
        history.append(e)
        if on_epoch:
            on_epoch(e)
        return J

    if not free.any():
        loss = kernels.loss(data, params, labels)
        return TrainResult(dict(params), loss, 0, "nothing to fit: every param is fixed", "done", history)
    try:
        res = least_squares(fun, x0[free], jac=jac, method="trf", max_nfev=options.epochs, x_scale="jac",
                            ftol=1e-12, xtol=1e-12, gtol=1e-12, bounds=(box.lo[free], box.hi[free]))
    except ValueError as err:  # SciPy: residuals not finite at the start
        return TrainResult(flat.unpack(best["x"]), best["loss"], len(history),
                           f"the residuals went non-finite ({err})", "non-finite", history,
                           list(flat.names))
    x = full(res.x)
    loss = kernels.loss(data, flat.unpack(x), labels)
    if not (math.isfinite(loss) and loss <= best["loss"]):
        x, loss = best["x"], best["loss"]
    why = res.message[0].lower() + res.message[1:] if res.message else ""
    stopped = f"converged: {why}" if res.status > 0 else f"stopped: {why}"
    return TrainResult(flat.unpack(x), loss, len(history), stopped, "done", history)


def fit_from(kernels: Kernels, data: np.ndarray, params: dict, options: TrainOptions, rows=None,
             gradient: Kernels | None = None) -> tuple[float, dict, str, str]:
    """One fit, without progress (a multi-start worker): (loss, params, status, why it stopped)."""
    one = TrainOptions(**{**options.__dict__, "starts": 1})
    result = Trainer(kernels, data, params, one, rows, gradient).run()
    return result.loss, result.params, result.status, result.stopped


class _Interrupted(Exception):
    pass
