"""The benchmark suite: dlang's compiled kernels against hand-written Numba (tests/benchmarks/
handwritten.py) on the same data, in the same run; JAX and PyTorch too when they import.

    python tests/benchmarks/run.py [--repeat N] [--quick] [--json OUT] [--no-load]

Not part of the test suite (pytest collects only test_*.py). For each benchmark it builds the
data (a CSV of programs/data/ tiled to the row count), loads dlang's kernels as the library does
(`dlang.commands.prepare`), first checks that the hand-written loss and gradient agree with
dlang's to 1e-9 relative, then times, after a warm-up, the median of N runs (interleaved, one
run of each in turn) of: dlang's forward (mean loss) and loss+gradient with 1 thread, the
hand-written forward and loss+gradient (serial), and dlang's two with all threads. The
projectile at 20,000 rows also gives the rows per second of dlang's loss+gradient with 1 and
with 2 threads. Last, dlang's loss+gradient with 1 and 2 threads is timed idle and while a
second process runs parallel Numba kernels (small prange kernels back to back; or dlang grad
processes compiling and running). docs/performance.md holds the table of a run and what it says.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROGRAMS = ROOT / "programs"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402

import handwritten as hw  # noqa: E402
from dlang.commands import prepare  # noqa: E402
from dlang.abi import PARALLEL_MIN_ROWS  # noqa: E402

AGREE_RTOL = 1e-9          # hand-written vs dlang: loss and every gradient element
FRAMEWORK_RTOL = 1e-6      # JAX / PyTorch vs dlang: reported, not enforced
FRAMEWORK_BUDGET_S = 20.0  # a slow framework run is repeated fewer times (at least 3, or 1 if > 20 s)

TARGET_GRAD_OVER_HAND = 1.5
TARGET_GRAD_OVER_FWD = 3.0
TARGET_FWD_OVER_HAND = 1.1
TARGET_SCALING = 1.8
TARGET_LOADED = 1.5  # under load, 2 threads at most this many times the time of 1 thread


# ---- the benchmarks -------------------------------------------------------------------------------

def _scalars(params: dict, *names: str) -> tuple:
    return tuple(float(params[n]) for n in names)


def _arrays(params: dict, *names: str) -> tuple:
    return tuple(np.ascontiguousarray(params[n], dtype=np.float64) if np.ndim(params[n]) else float(params[n])
                 for n in names)


@dataclass
class Bench:
    name: str
    program: Path
    csv: Path | None
    rows: int
    names: tuple[str, ...]                  # the params, in the hand-written kernels' order
    hand_forward: Callable                  # (data, *params) -> mean loss
    hand_grad: Callable                     # (data, *params) -> (mean loss, *grads)
    jax: Callable | None = None             # (data, params) -> Framework
    torch: Callable | None = None           # (data, params) -> Framework
    scaling: bool = False                   # time 1 vs 2 threads here
    note: str = ""


def _no_data(kernel):
    """oscillator_long has no data (one row): the hand-written kernels take only the params."""
    return lambda data, *params: kernel(*params)


def benchmarks(quick: bool) -> list[Bench]:
    scale = 4 if quick else 1
    d = PROGRAMS / "data"
    return [
        Bench("projectile", PROGRAMS / "projectile.dl", d / "projectile.csv", 1000 // scale, ("drag", "angle"),
              hw.projectile_forward, hw.projectile_grad, lambda *a: jax_projectile(*a),
              lambda *a: torch_projectile(*a)),
        Bench("projectile", PROGRAMS / "projectile.dl", d / "projectile.csv", 20000 // scale, ("drag", "angle"),
              hw.projectile_forward, hw.projectile_grad, lambda *a: jax_projectile(*a),
              lambda *a: torch_projectile(*a), scaling=True),
        Bench("bouncing_ball", PROGRAMS / "bouncing_ball.dl", d / "bouncing_ball.csv", 20000 // scale, ("e", "g"),
              hw.bouncing_ball_forward, hw.bouncing_ball_grad, lambda *a: jax_bouncing_ball(*a),
              lambda *a: torch_bouncing_ball(*a)),
        Bench("linear_regression", PROGRAMS / "linear_regression.dl", d / "linear_regression.csv",
              200000 // scale, ("w", "b"), hw.linear_regression_forward, hw.linear_regression_grad,
              lambda *a: jax_linear_regression(*a), lambda *a: torch_linear_regression(*a)),
        Bench("mlp", PROGRAMS / "mlp.dl", d / "mlp.csv", 100000 // scale, ("W1", "b1", "w2", "b2"),
              hw.mlp_forward, hw.mlp_grad, lambda *a: jax_mlp(*a), lambda *a: torch_mlp(*a)),
        Bench("oscillator_long", HERE / "oscillator_long.dl", None, 1, ("k", "c"),
              _no_data(hw.oscillator_long_forward), _no_data(hw.oscillator_long_grad),
              lambda *a: jax_oscillator_long(*a), lambda *a: torch_oscillator_long(*a)),
    ]


def tiled_csv(source: Path, rows: int, directory: str) -> str:
    """The CSV's data rows repeated (and cut) to `rows` rows, under the same header."""
    lines = source.read_text().splitlines()
    header, body = lines[0], [line for line in lines[1:] if line.strip()]
    reps = -(-rows // len(body))
    out = os.path.join(directory, f"{source.stem}_{rows}.csv")
    with open(out, "w") as f:
        f.write(header + "\n" + "\n".join((body * reps)[:rows]) + "\n")
    return out


# ---- agreement ------------------------------------------------------------------------------------

def disagreement(a, b) -> float:
    """The largest elementwise relative difference (0 where both are 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.maximum(np.abs(a), np.abs(b))
    diff = np.abs(a - b)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), 0.0)
    if not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
        return math.inf
    return float(np.max(rel)) if rel.size else 0.0


def worst(loss_a, grads_a: dict, loss_b, grads_b: dict) -> tuple[float, str]:
    """The largest relative difference over the loss and every gradient, and where it is."""
    found = [(disagreement(loss_a, loss_b), "loss")]
    found += [(disagreement(grads_a[n], grads_b[n]), f"d/d {n}") for n in grads_a]
    return max(found)


# ---- timing ---------------------------------------------------------------------------------------

def median_ms(fns: dict[str, Callable], repeat: int) -> dict[str, float]:
    """Warm each up once, then run them in turn `repeat` times: the median of each, in ms."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def median_ms_budget(fn: Callable, repeat: int, budget_s: float = FRAMEWORK_BUDGET_S) -> tuple[float, int]:
    """The median of `fn` after a warm-up (compile) and one timed probe; a slow fn is repeated
    fewer times so that it takes about budget_s. Returns (ms, number of runs)."""
    fn()
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    runs = [first]
    n = repeat if first * repeat <= budget_s else max(1 if first > budget_s else 3, int(budget_s / first))
    n = min(n, repeat)
    for _ in range(n - 1):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return 1e3 * statistics.median(runs), len(runs)


# ---- JAX and PyTorch (timed only when they import; neither is a dependency) ------------------------

@dataclass
class Framework:
    forward: Callable            # () -> None, blocks until done
    grad: Callable | None        # () -> None, blocks until done; None: not supported
    value: Callable | None       # () -> (loss, {param: grad}) as NumPy, for the agreement check
    why_not: str = ""            # when grad is None


def have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:  # an installed but broken framework is skipped like a missing one
        return False


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax
    return jax, jnp, lax


def _jax_framework(loss, params: dict, grad_ok: bool = True, why_not: str = "") -> Framework:
    jax, jnp, _ = _jax()
    p = {k: jnp.asarray(np.asarray(v, dtype=np.float64)) for k, v in params.items()}
    fwd = jax.jit(loss)
    if not grad_ok:
        return Framework(lambda: fwd(p).block_until_ready(), None, None, why_not)
    vg = jax.jit(jax.value_and_grad(loss))

    def value():
        val, g = vg(p)
        return float(val), {k: (np.asarray(v) if np.ndim(v) else float(v)) for k, v in g.items()}

    return Framework(lambda: fwd(p).block_until_ready(), lambda: jax.block_until_ready(vg(p)), value)


def jax_projectile(data: np.ndarray, params: dict) -> Framework:
    jax, jnp, lax = _jax()
    v0, dist = jnp.asarray(data[:, 0]), jnp.asarray(data[:, 1])

    def loss(p):
        drag, angle = p["drag"], p["angle"]

        def step(i, state):
            x, y, vx, vy = state
            flying = y >= 0.0
            s = jnp.sqrt(vx * vx + vy * vy)
            vx1 = vx - 0.01 * drag * s * vx
            vy1 = vy - 0.01 * (9.81 + drag * s * vy)
            return (jnp.where(flying, x + 0.01 * vx1, x), jnp.where(flying, y + 0.01 * vy1, y),
                    jnp.where(flying, vx1, vx), jnp.where(flying, vy1, vy))

        zero = jnp.zeros_like(v0)
        x, _, _, _ = lax.fori_loop(0, 400, step, (zero, zero, v0 * jnp.cos(angle), v0 * jnp.sin(angle)))
        return jnp.mean((x - dist) ** 2)

    return _jax_framework(loss, params)


def jax_bouncing_ball(data: np.ndarray, params: dict) -> Framework:
    jax, jnp, lax = _jax()
    h0, t_obs, h_obs = (jnp.asarray(data[:, i]) for i in range(3))

    def loss(p):
        e, g = p["e"], p["g"]
        t = jnp.sqrt(2.0 * h0 / g)
        v = g * t
        active = jnp.ones(h0.shape, bool)

        def cond(state):
            n, active, _, _ = state
            return (n < 50) & jnp.any(active)

        def body(state):
            n, active, t, v = state
            active = active & (t + 2.0 * e * v / g <= t_obs)
            v1 = v * e
            t1 = t + 2.0 * v1 / g
            return n + 1, active, jnp.where(active, t1, t), jnp.where(active, v1, v)

        _, _, t, v = lax.while_loop(cond, body, (jnp.array(0, jnp.int32), active, t, v))
        tau = t_obs - t
        h = e * v * tau - 0.5 * g * tau ** 2
        return jnp.mean((h - h_obs) ** 2)

    return _jax_framework(loss, params, grad_ok=False,
                          why_not="reverse mode through lax.while_loop is not supported")


def jax_linear_regression(data: np.ndarray, params: dict) -> Framework:
    jax, jnp, _ = _jax()
    X, y = jnp.asarray(data[:, :8]), jnp.asarray(data[:, 8])

    def loss(p):
        w, b = p["w"], p["b"]
        return jnp.mean((X @ w + b - y) ** 2) + 1e-3 * jnp.dot(w, w) / w.shape[0]

    return _jax_framework(loss, params)


def jax_mlp(data: np.ndarray, params: dict) -> Framework:
    jax, jnp, _ = _jax()
    X, label = jnp.asarray(data[:, :3]), jnp.asarray(data[:, 3])

    def loss(p):
        h = jnp.tanh(X @ p["W1"].T + p["b1"])
        u = -label * (h @ p["w2"] + p["b2"])
        softplus = jnp.maximum(u, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(u)))
        return jnp.mean(softplus) + 1e-3 * jnp.sum(p["W1"] * p["W1"])

    return _jax_framework(loss, params)


def jax_oscillator_long(data: np.ndarray, params: dict) -> Framework:
    jax, jnp, lax = _jax()

    def loss(p):
        k, c = p["k"], p["c"]

        def step(i, xv):
            x, v = xv
            v = v + 0.001 * (-k * x - c * v) / 1.0
            return x + 0.001 * v, v

        def sighting(j, state):
            x, v, total = state
            x, v = lax.fori_loop(0, 1000, step, (x, v))
            t = 0.001 * 1000.0 * (j + 1).astype(jnp.float64)
            return x, v, total + (x - 0.5 * jnp.cos(1.9 * t)) ** 2

        f = jnp.float64
        _, _, total = lax.fori_loop(0, 200, sighting, (f(0.5) + 0.0 * k, f(0.0) + 0.0 * k, f(0.0) + 0.0 * k))
        return total

    return _jax_framework(loss, params)


def _torch_framework(loss, params: dict) -> Framework:
    import torch

    def fresh():
        return {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in params.items()}

    fixed = {k: torch.tensor(np.asarray(v, dtype=np.float64)) for k, v in params.items()}

    def forward():
        with torch.no_grad():
            loss(fixed).item()

    def grad():
        p = fresh()
        value = loss(p)
        grads = torch.autograd.grad(value, list(p.values()))
        return value, dict(zip(p, grads))

    def value():
        val, g = grad()
        return float(val), {k: (v.numpy() if v.dim() else float(v)) for k, v in g.items()}

    return Framework(forward, grad, value)


def torch_projectile(data: np.ndarray, params: dict) -> Framework:
    import torch

    v0, dist = torch.from_numpy(data[:, 0].copy()), torch.from_numpy(data[:, 1].copy())

    def loss(p):
        drag, angle = p["drag"], p["angle"]
        x = torch.zeros_like(v0)
        y = torch.zeros_like(v0)
        vx, vy = v0 * torch.cos(angle), v0 * torch.sin(angle)
        for _ in range(400):
            flying = y >= 0.0
            s = torch.sqrt(vx * vx + vy * vy)
            vx1 = vx - 0.01 * drag * s * vx
            vy1 = vy - 0.01 * (9.81 + drag * s * vy)
            x = torch.where(flying, x + 0.01 * vx1, x)
            y = torch.where(flying, y + 0.01 * vy1, y)
            vx, vy = torch.where(flying, vx1, vx), torch.where(flying, vy1, vy)
        return torch.mean((x - dist) ** 2)

    return _torch_framework(loss, params)


def torch_bouncing_ball(data: np.ndarray, params: dict) -> Framework:
    import torch

    h0, t_obs, h_obs = (torch.from_numpy(data[:, i].copy()) for i in range(3))

    def loss(p):
        e, g = p["e"], p["g"]
        t = torch.sqrt(2.0 * h0 / g)
        v = g * t
        active = torch.ones(h0.shape, dtype=torch.bool)
        for _ in range(50):  # max_bounces; a row stops at its own count (eager: its own trip count)
            active = active & (t + 2.0 * e * v / g <= t_obs)
            if not bool(active.any()):
                break
            v1 = v * e
            t1 = t + 2.0 * v1 / g
            t, v = torch.where(active, t1, t), torch.where(active, v1, v)
        tau = t_obs - t
        h = e * v * tau - 0.5 * g * tau ** 2
        return torch.mean((h - h_obs) ** 2)

    return _torch_framework(loss, params)


def torch_linear_regression(data: np.ndarray, params: dict) -> Framework:
    import torch

    X, y = torch.from_numpy(data[:, :8].copy()), torch.from_numpy(data[:, 8].copy())

    def loss(p):
        w, b = p["w"], p["b"]
        return torch.mean((X @ w + b - y) ** 2) + 1e-3 * torch.dot(w, w) / w.shape[0]

    return _torch_framework(loss, params)


def torch_mlp(data: np.ndarray, params: dict) -> Framework:
    import torch

    X, label = torch.from_numpy(data[:, :3].copy()), torch.from_numpy(data[:, 3].copy())

    def loss(p):
        h = torch.tanh(X @ p["W1"].T + p["b1"])
        u = -label * (h @ p["w2"] + p["b2"])
        softplus = torch.clamp(u, min=0.0) + torch.log1p(torch.exp(-torch.abs(u)))
        return torch.mean(softplus) + 1e-3 * torch.sum(p["W1"] * p["W1"])

    return _torch_framework(loss, params)


def torch_oscillator_long(data: np.ndarray, params: dict) -> Framework:
    import torch

    def loss(p):
        k, c = p["k"], p["c"]
        x = torch.tensor(0.5, dtype=torch.float64)
        v = torch.tensor(0.0, dtype=torch.float64)
        total = torch.tensor(0.0, dtype=torch.float64)
        for j in range(200):
            for _ in range(1000):
                v = v + 0.001 * (-k * x - c * v) / 1.0
                x = x + 0.001 * v
            total = total + (x - 0.5 * math.cos(1.9 * (0.001 * 1000.0 * (j + 1)))) ** 2
        return total

    return _torch_framework(loss, params)


# ---- one benchmark --------------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    rows: int
    threads_all: int                       # the threads dlang's all-threads figures used
    dlang_fwd_ms: float                    # 1 thread
    dlang_grad_ms: float                   # 1 thread
    hand_fwd_ms: float
    hand_grad_ms: float
    dlang_fwd_ms_all: float
    dlang_grad_ms_all: float
    agreement: float                       # largest relative difference, hand vs dlang
    agreement_where: str
    tape_bytes_per_row: float
    frameworks: dict = field(default_factory=dict)

    @property
    def grad_over_hand(self) -> float:
        return self.dlang_grad_ms / self.hand_grad_ms

    @property
    def grad_over_fwd(self) -> float:
        return self.dlang_grad_ms / self.dlang_fwd_ms

    def as_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items()}
        out["grad_over_hand"] = self.grad_over_hand
        out["grad_over_fwd"] = self.grad_over_fwd
        return out


def run_one(b: Bench, directory: str, repeat: int, max_threads: int, log) -> tuple[Result, dict | None]:
    csv = tiled_csv(b.csv, b.rows, directory) if b.csv else None
    p = prepare(str(b.program), csv, None, None)
    data = p.data
    assert data.shape[0] == b.rows, (data.shape, b.rows)
    args = _arrays(p.params, *b.names)

    # 1. agreement: the hand-written kernels compute what dlang computes
    numba.set_num_threads(1)
    d_loss, d_grads = p.kernels.grad(data, p.params)
    d_fwd = p.kernels.loss(data, p.params)
    h_fwd = b.hand_forward(data, *args)
    h_loss, *h_grads = b.hand_grad(data, *args)
    h = dict(zip(b.names, h_grads))
    gap, where = worst(h_loss, h, d_loss, d_grads)
    gap = max(gap, disagreement(h_fwd, d_fwd), disagreement(d_fwd, d_loss))
    if not gap <= AGREE_RTOL:
        raise SystemExit(f"{b.name} ({b.rows} rows): the hand-written kernels disagree with dlang: "
                         f"relative difference {gap:.2e} ({where}) > {AGREE_RTOL:g}\n"
                         f"  dlang: loss {d_loss!r} {d_grads}\n  hand:  loss {h_loss!r} {h}")

    # 2. timing, 1 thread: dlang and hand-written, interleaved
    def dlang_fwd():
        p.kernels.loss(data, p.params)

    def dlang_grad():
        p.kernels.grad(data, p.params)

    serial = median_ms({"dlang_fwd": dlang_fwd, "dlang_grad": dlang_grad,
                        "hand_fwd": lambda: b.hand_forward(data, *args),
                        "hand_grad": lambda: b.hand_grad(data, *args)}, repeat)
    tape = p.kernels.gradient(data, p.params).tape_bytes_per_row
    # 3. dlang with all threads (the same kernels below PARALLEL_MIN_ROWS rows: 1 thread is used)
    numba.set_num_threads(max_threads)
    full = median_ms({"dlang_fwd": dlang_fwd, "dlang_grad": dlang_grad}, repeat)
    used = max_threads if b.rows >= PARALLEL_MIN_ROWS else 1
    result = Result(b.name, b.rows, used, serial["dlang_fwd"], serial["dlang_grad"], serial["hand_fwd"],
                    serial["hand_grad"], full["dlang_fwd"], full["dlang_grad"], gap, where, tape)

    # 4. thread scaling of dlang's loss+gradient: 1 against 2 threads
    scaling = None
    if b.scaling:
        if max_threads >= 2 and b.rows >= PARALLEL_MIN_ROWS:
            ms = {}
            for n in (1, 2):
                numba.set_num_threads(n)
                ms[n] = median_ms({"grad": dlang_grad}, repeat)["grad"]
            scaling = {"name": b.name, "rows": b.rows, "grad_ms_1_thread": ms[1], "grad_ms_2_threads": ms[2],
                       "rows_per_s_1_thread": b.rows / (ms[1] / 1e3),
                       "rows_per_s_2_threads": b.rows / (ms[2] / 1e3), "speedup": ms[1] / ms[2]}
        else:
            scaling = {"name": b.name, "rows": b.rows, "speedup": None,
                       "why_not": f"{max_threads} thread(s) available" if max_threads < 2
                       else f"below {PARALLEL_MIN_ROWS} rows dlang runs serially"}
        numba.set_num_threads(max_threads)

    # 5. JAX and PyTorch, when installed
    for fw, factory in (("jax", b.jax), ("torch", b.torch)):
        if factory is None or not have(fw):
            continue
        try:
            result.frameworks[fw] = time_framework(factory(data, p.params), d_loss, d_grads, repeat)
        except Exception as err:  # a framework failing is reported, not fatal
            result.frameworks[fw] = {"error": f"{type(err).__name__}: {err}"[:300]}
            log(f"  {fw}: failed: {result.frameworks[fw]['error']}")
    return result, scaling


def time_framework(f: Framework, d_loss: float, d_grads: dict, repeat: int) -> dict:
    out: dict = {}
    out["fwd_ms"], out["fwd_runs"] = median_ms_budget(f.forward, repeat)
    if f.grad is None:
        out["grad_ms"] = None
        out["grad_note"] = f.why_not
        return out
    out["grad_ms"], out["grad_runs"] = median_ms_budget(f.grad, repeat)
    loss, grads = f.value()
    out["agreement"], out["agreement_where"] = worst(loss, grads, d_loss, d_grads)
    return out


# ---- under load: another process running parallel Numba kernels ----------------------------------

LOADS = {
    # small parallel kernels back to back, as a second dlang, a parallel test run or Dask workers do
    "numba": """
import sys, time
import numpy as np
from numba import njit, prange
@njit(parallel=True)
def work(x):
    s = 0.0
    for i in prange(x.shape[0]):
        s += np.sin(x[i])
    return s
x = np.random.default_rng(0).normal(size=20_000)
work(x)
print("ready", flush=True)
while True:
    work(x)
""",
    # other dlang processes compiling and running: `dlang grad` on 50,000 rows, a fresh cache each time
    "dlang": """
import os, subprocess, sys, tempfile
program, csv = sys.argv[1], sys.argv[2]
print("ready", flush=True)
while True:
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, DLANG_CACHE_DIR=os.path.join(d, "k"), NUMBA_CACHE_DIR=os.path.join(d, "n"))
        subprocess.run([sys.executable, "-m", "dlang.cli", "grad", program, "--data", csv], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
""",
}
LOADED_CASES = (("linear_regression", 1_000_000), ("projectile", 20_000), ("bouncing_ball", 20_000))


def _load_env() -> dict:
    """The load's environment: OpenMP's defaults (threads that spin while they wait), whatever
    this process was given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_loaded(directory: str, repeat: int, log) -> list[dict]:
    """dlang's loss+gradient with 1 and with 2 threads, idle and while another process runs
    parallel Numba kernels (each load in turn), interleaved."""
    import subprocess

    if numba.config.NUMBA_NUM_THREADS < 2:
        return []
    cases = []
    for name, rows in LOADED_CASES:
        b = next(x for x in benchmarks(False) if x.name == name)
        p = prepare(str(b.program), tiled_csv(b.csv, rows, directory), None, None)
        cases.append((name, rows, p))
    lin = next(x for x in benchmarks(False) if x.name == "linear_regression")
    load_args = {"numba": [], "dlang": [str(lin.program), tiled_csv(lin.csv, 50_000, directory)]}
    out = []
    for load in ("none", *LOADS):
        proc = None
        if load != "none":
            proc = subprocess.Popen([sys.executable, "-c", LOADS[load], *load_args[load]], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True, cwd=str(ROOT), start_new_session=True,
                                    env=_load_env())
            proc.stdout.readline()  # compiled and running
            time.sleep(1.0)
        try:
            for name, rows, p in cases:
                log(f"  {name} ({rows:,} rows), load: {load}")
                ms = {}
                for n in (1, 2):
                    numba.set_num_threads(n)
                    ms[n] = median_ms({"grad": lambda: p.kernels.grad(p.data, p.params)}, repeat)["grad"]
                out.append({"name": name, "rows": rows, "load": load, "grad_ms_1_thread": ms[1],
                            "grad_ms_2_threads": ms[2], "two_over_one": ms[2] / ms[1]})
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
            if proc is not None:  # the load and the processes it started
                import signal

                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return out


# ---- report ---------------------------------------------------------------------------------------

def busy_cores(seconds: float = 1.0) -> float | None:
    """How many cores other processes keep busy (from /proc/stat over `seconds`; None if unknown)."""
    def sample():
        fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # total, idle + iowait
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (1.0 - (idle1 - idle0) / (total1 - total0))


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "numba_threads": numba.config.NUMBA_NUM_THREADS,
            "busy_cores_at_start": busy_cores(),
            "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "platform": platform.platform()}


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits - 1}f}" if x >= 1 else f"{x:.{digits}f}"


def targets(results: list[Result], scaling: list[dict], loaded: list[dict]) -> list[dict]:
    out = []
    for r in results:
        label = f"{r.name} ({r.rows:,} row{'s' if r.rows != 1 else ''})"
        out.append({"target": f"{label}: dlang grad <= {TARGET_GRAD_OVER_HAND}x hand-written grad",
                    "value": r.grad_over_hand, "met": r.grad_over_hand <= TARGET_GRAD_OVER_HAND})
        out.append({"target": f"{label}: dlang grad <= {TARGET_GRAD_OVER_FWD}x dlang forward",
                    "value": r.grad_over_fwd, "met": r.grad_over_fwd <= TARGET_GRAD_OVER_FWD})
        fwd_over_hand = r.dlang_fwd_ms / r.hand_fwd_ms
        out.append({"target": f"{label}: dlang forward <= {TARGET_FWD_OVER_HAND}x hand-written forward",
                    "value": fwd_over_hand, "met": fwd_over_hand <= TARGET_FWD_OVER_HAND})
        out.append({"target": f"{label}: dlang forward <= dlang grad", "value": r.dlang_fwd_ms / r.dlang_grad_ms,
                    "met": r.dlang_fwd_ms <= r.dlang_grad_ms})
    for c in loaded:
        if c["load"] != "none":
            out.append({"target": f"{c['name']} ({c['rows']:,} rows), load {c['load']}: 2 threads <= "
                                  f"{TARGET_LOADED}x the time of 1 thread", "value": c["two_over_one"],
                        "met": c["two_over_one"] <= TARGET_LOADED})
    for s in scaling:
        out.append({"target": f"{s['name']} ({s['rows']:,} rows): 2 threads >= {TARGET_SCALING}x the rows/s "
                              "of 1 thread", "value": s["speedup"],
                    "met": s["speedup"] is not None and s["speedup"] >= TARGET_SCALING})
    return out


def show(results: list[Result], scaling: list[dict], loaded: list[dict], goals: list[dict], info: dict,
         repeat: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    console.print(f"[bold]dlang vs hand-written Numba[/bold]: {info['cpu']}, {info['cores']} cores, "
                  f"Numba {info['numba']}; medians of {repeat} runs, ms")
    t = Table()
    for col in ("benchmark", "rows", "dlang fwd", "dlang grad", "hand fwd", "hand grad",
                "dlang grad / hand grad", "dlang grad / dlang fwd", "agree (rel)"):
        t.add_column(col, justify="left" if col == "benchmark" else "right", no_wrap=col == "benchmark")
    for r in results:
        over = r.grad_over_hand
        t.add_row(r.name, f"{r.rows:,}", fmt(r.dlang_fwd_ms), fmt(r.dlang_grad_ms), fmt(r.hand_fwd_ms),
                  fmt(r.hand_grad_ms), ("[red]" if over > TARGET_GRAD_OVER_HAND else "") + f"{over:.2f}",
                  ("[red]" if r.grad_over_fwd > TARGET_GRAD_OVER_FWD else "") + f"{r.grad_over_fwd:.2f}",
                  f"{r.agreement:.0e}")
    console.print(t)
    console.print("dlang with 1 thread (numba.set_num_threads(1)); the hand-written kernels are serial.")

    t = Table(title="dlang with all threads; JAX and PyTorch (their default threading)")
    for col in ("benchmark", "rows", "threads", "dlang fwd", "dlang grad", "grad: 1 thread / all",
                "JAX fwd", "JAX grad", "PyTorch fwd", "PyTorch grad"):
        t.add_column(col, justify="left" if col == "benchmark" else "right", no_wrap=col == "benchmark")
    missing = [label for fw, label in (("jax", "JAX"), ("torch", "PyTorch"))
               if not any(fw in r.frameworks for r in results)]
    for r in results:
        cells = []
        for fw in ("jax", "torch"):
            f = r.frameworks.get(fw)
            if f is None:
                cells += ["-", "-"]
            elif "error" in f:
                cells += ["failed", ""]
            else:
                cells += [fmt(f["fwd_ms"]), fmt(f["grad_ms"])]
        t.add_row(r.name, f"{r.rows:,}", str(r.threads_all), fmt(r.dlang_fwd_ms_all), fmt(r.dlang_grad_ms_all),
                  f"{r.dlang_grad_ms / r.dlang_grad_ms_all:.2f}x", *cells)
    console.print(t)
    if missing:
        console.print(f"{' and '.join(missing)}: not installed (timed when they import)")
    for s in scaling:
        if s["speedup"] is None:
            console.print(f"thread scaling, {s['name']} at {s['rows']:,} rows: n/a ({s['why_not']})")
        else:
            console.print(f"thread scaling, {s['name']} at {s['rows']:,} rows, dlang loss+grad: "
                          f"1 thread {s['rows_per_s_1_thread']:,.0f} rows/s ({fmt(s['grad_ms_1_thread'])} ms), "
                          f"2 threads {s['rows_per_s_2_threads']:,.0f} rows/s ({fmt(s['grad_ms_2_threads'])} ms): "
                          f"{s['speedup']:.2f}x")
    for r in results:
        for fw, f in r.frameworks.items():
            if "error" in f:
                console.print(f"{fw} on {r.name}: {f['error']}")
            elif f.get("grad_note"):
                console.print(f"{fw} on {r.name}: gradient n/a ({f['grad_note']})")
            elif f.get("agreement", 0.0) > FRAMEWORK_RTOL:
                console.print(f"[yellow]{fw} on {r.name}: differs from dlang by {f['agreement']:.1e} relative "
                              f"({f['agreement_where']})")
    if loaded:
        t = Table(title="dlang loss+grad under load: another process running parallel Numba kernels (numba: small "
                        "prange kernels back to back; dlang: dlang grad processes compiling and running)")
        for col in ("benchmark", "rows", "load", "1 thread", "2 threads", "2 threads / 1 thread"):
            t.add_column(col, justify="left" if col in ("benchmark", "load") else "right")
        for c in loaded:
            t.add_row(c["name"], f"{c['rows']:,}", c["load"], fmt(c["grad_ms_1_thread"]), fmt(c["grad_ms_2_threads"]),
                      f"{c['two_over_one']:.2f}x")
        console.print(t)
    console.print("[bold]targets[/bold]")
    for g in goals:
        value = "n/a" if g["value"] is None else f"{g['value']:.2f}"
        console.print(f"  {'[green]met[/green]    ' if g['met'] else '[red]not met[/red]'} {g['target']}: {value}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per figure (the median is reported)")
    ap.add_argument("--quick", action="store_true", help="a quarter of the rows and 3 runs per figure")
    ap.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    ap.add_argument("--only", metavar="NAME", action="append", help="run only this benchmark (repeatable)")
    ap.add_argument("--no-load", action="store_true", help="skip the timings under load (another process busy)")
    args = ap.parse_args(argv)
    repeat = 3 if args.quick and args.repeat == 7 else args.repeat
    if repeat < 1:
        ap.error("--repeat must be at least 1")
    max_threads = numba.config.NUMBA_NUM_THREADS
    info = machine()
    busy = info["busy_cores_at_start"]
    if busy is not None and busy > 0.25:
        print(f"warning: other processes keep {busy:.1f} of {info['cores']} cores busy: the figures "
              "(the thread scaling above all) will be off", file=sys.stderr)
    results, scaling = [], []

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="dlang-benchmarks-") as directory:
        for b in benchmarks(args.quick):
            if args.only and b.name not in args.only:
                continue
            log(f"{b.name}: {b.rows:,} rows ...")
            r, s = run_one(b, directory, repeat, max_threads, log)
            results.append(r)
            if s is not None:
                scaling.append(s)
        loaded = [] if args.no_load or args.only else run_loaded(directory, max(3, repeat // 2), log)
    goals = targets(results, scaling, loaded)
    info["busy_cores_at_end"] = busy_cores()
    show(results, scaling, loaded, goals, info, repeat)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "repeat": repeat, "quick": args.quick,
                       "benchmarks": [r.as_json() for r in results], "thread_scaling": scaling, "loaded": loaded,
                       "targets": goals}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
