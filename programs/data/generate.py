"""Regenerate the example data sets of programs/: `python programs/data/generate.py [OUT_DIR]`.

Every CSV is drawn from known true params plus a little noise, with a fixed seed per data
set, so running this script reproduces the committed files byte for byte.

True params (what `dlang train` should recover, up to the noise), the programs' starting params
(in the .dl files), the number of rows and the noise:
  projectile:           drag = 0.05, angle = 0.45         start 0.1, 0.6; 200 rows; dist sd 0.05 m
  projectile_landing:   drag = 0.05, angle = 0.45         start 0.1, 0.6; 100 rows; dist sd 0.05 m
  bouncing_ball:        e = 0.8, g = 9.81                 start 0.7, 9.0; 100 rows; h_obs sd 0.01 m
  linear_regression:    w = [1.5, -2.0, 0.5, 0.0, 3.0, -1.0, 0.25, 2.0], b = 0.7
                                                          start all 0; 100 rows; y sd 0.1
  logistic_regression:  w_width = 4.0, w_weight = -5.0, bias = 0.5
                                                          start all 0; 1000 rows; labels drawn from p
  mlp:                  W1 = [[1.5, -1.0, 0.5], [0.5, 2.0, -1.0], [-1.0, 0.5, 1.5], [2.0, 0.0, -0.5]],
                        b1 = [0.1, -0.2, 0.0, 0.3], w2 = [1.5, -2.0, 1.0, -1.5], b2 = 0.1
                                                          random start; 1000 rows; label +1 with
                                                          probability sigmoid(teacher's score)
                        (hidden units can be permuted and negated: training recovers the
                        teacher's predictions, not its weights)
  oscillator:           k = 4.0, c = 0.3                  start 3.0, 0.2; 30 rows; x_obs sd 0.01 m
  image_filter:         k = [[0, -0.25, 0], [-0.25, 2, -0.25], [0, -0.25, 0]] (a sharpening filter)
                                                          start 1/9 each; 60 rows; target sd 0.01
  scaling:              scale = 2.5, offset = -0.4        start 1.0, 0.0; 200 rows; reference sd 0.02 m
  builtins_tour:        a = 1.0, theta = 0.35, b = 0.2,
                        w = [0.5, -0.3, 0.2, 0.4, -0.2, 0.3, -0.5, 0.6, 0.8, -0.4, 1.0, -0.6,
                             0.3, 0.5, -0.7]                             (y noise sd 0.01)
  soft_threshold:       threshold = 0.6, width = 0.1      start 0.2, 0.5; 1000 rows; alarm 1 with
                                                          probability sigmoid((reading - 0.6) / 0.1)
  sir:                  N = 10000 (held with --fix N), beta = 0.3, gamma = 0.1, i0 = 10
                                                          start 10000, 0.4, 0.2, 5; days 0-99, one row
                                                          each; infected drawn Poisson(the model's)
  hanging_chain:        no data.

Rows whose branches, loop trip counts or kinks lie close to a switch point are redrawn, for the
true params, the programs' starting params and the "perturbed" params the oracle tests use
(1.1 * start + 0.05), so that every evaluation there is well away from a discontinuity.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

TRUE_PARAMS: dict[str, dict[str, object]] = {
    "projectile": {"drag": 0.05, "angle": 0.45},
    "projectile_landing": {"drag": 0.05, "angle": 0.45},
    "bouncing_ball": {"e": 0.8, "g": 9.81},
    "linear_regression": {"w": [1.5, -2.0, 0.5, 0.0, 3.0, -1.0, 0.25, 2.0], "b": 0.7},
    "logistic_regression": {"w_width": 4.0, "w_weight": -5.0, "bias": 0.5},
    "mlp": {
        "W1": [[1.5, -1.0, 0.5], [0.5, 2.0, -1.0], [-1.0, 0.5, 1.5], [2.0, 0.0, -0.5]],
        "b1": [0.1, -0.2, 0.0, 0.3],
        "w2": [1.5, -2.0, 1.0, -1.5],
        "b2": 0.1,
    },
    "oscillator": {"k": 4.0, "c": 0.3},
    "image_filter": {"k": [[0.0, -0.25, 0.0], [-0.25, 2.0, -0.25], [0.0, -0.25, 0.0]]},
    "builtins_tour": {
        "a": 1.0,
        "theta": 0.35,
        "w": [0.5, -0.3, 0.2, 0.4, -0.2, 0.3, -0.5, 0.6, 0.8, -0.4, 1.0, -0.6, 0.3, 0.5, -0.7],
        "b": 0.2,
    },
    "scaling": {"scale": 2.5, "offset": -0.4},
    "soft_threshold": {"threshold": 0.6, "width": 0.1},
    "sir": {"N": 10000.0, "beta": 0.3, "gamma": 0.1, "i0": 10.0},
}


def _perturbed(start: float) -> float:
    return 1.1 * start + 0.05


def _write_csv(path: Path, header: list[str], rows: list[list[float]]) -> None:
    lines = [",".join(header)]
    for row in rows:
        assert len(row) == len(header)
        lines.append(",".join(repr(float(v)) for v in row))
    path.write_text("\n".join(lines) + "\n")


def _vector_columns(name: str, k: int) -> list[str]:
    return [f"{name}_{i}" for i in range(k)]


# ---- projectile ------------------------------------------------------------------------------

def simulate_projectile(v0: float, drag: float, angle: float,
                        interpolate: bool = False) -> tuple[float, float, float]:
    """The body of projectile.dl: (x at the end, y at the end, smallest |y| at a branch test);
    with interpolate, that of projectile_landing.dl, whose landing point goes back along the
    last step to y = 0."""
    dt, steps = 0.01, 400
    x = y = 0.0
    vx = v0 * math.cos(angle)
    vy = v0 * math.sin(angle)
    closest = math.inf
    for i in range(steps):
        if i > 0:
            closest = min(closest, abs(y))
        if y >= 0.0:
            s = math.sqrt(vx * vx + vy * vy)
            vx -= dt * drag * s * vx
            vy -= dt * (9.81 + drag * s * vy)
            x += dt * vx
            y += dt * vy
    return (x - y * vx / vy if interpolate else x), y, closest


def projectile(rng: np.random.Generator, name: str = "projectile", n: int = 200,
               interpolate: bool = False) -> tuple[list[str], list[list[float]]]:
    true = TRUE_PARAMS[name]
    settings = [(true["drag"], true["angle"]), (0.1, 0.6), (_perturbed(0.1), _perturbed(0.6))]
    rows = []
    while len(rows) < n:
        v0 = rng.uniform(8.0, 25.0)
        ends = [simulate_projectile(v0, d, a, interpolate) for d, a in settings]
        if any(y >= 0.0 or closest < 0.01 for _, y, closest in ends):
            continue  # not landed within the 400 steps, or a branch test too close to y = 0
        dist = ends[0][0] + rng.normal(0.0, 0.05)
        rows.append([v0, dist])
    return ["v0", "dist"], rows


# ---- bouncing ball ---------------------------------------------------------------------------

def bounce_times(h0: float, e: float, g: float, t_end: float) -> list[float]:
    """Impact times of bouncing_ball.dl up to t_end (at most 51)."""
    t = math.sqrt(2.0 * h0 / g)
    v = g * t
    times = [t]
    while len(times) <= 50 and t <= t_end:
        v *= e
        t += 2.0 * v / g
        times.append(t)
    return times


def simulate_ball(h0: float, t_obs: float, e: float, g: float) -> float:
    """The body of bouncing_ball.dl: the height at t_obs."""
    t = math.sqrt(2.0 * h0 / g)
    v = g * t
    n = 0
    while n < 50 and t + 2.0 * e * v / g <= t_obs:
        v *= e
        t += 2.0 * v / g
        n += 1
    up = e * v
    tau = t_obs - t
    return up * tau - 0.5 * g * tau**2


def bouncing_ball(rng: np.random.Generator) -> tuple[list[str], list[list[float]]]:
    true = TRUE_PARAMS["bouncing_ball"]
    settings = [(true["e"], true["g"]), (0.7, 9.0), (_perturbed(0.7), _perturbed(9.0))]
    rows = []
    while len(rows) < 100:
        h0 = rng.uniform(1.0, 3.0)
        t1 = math.sqrt(2.0 * h0 / true["g"])
        t_obs = t1 * rng.uniform(1.1, 5.0)
        impacts = [t for e, g in settings for t in bounce_times(h0, e, g, t_obs + 1.0)]
        if min(abs(t_obs - t) for t in impacts) < 0.02:
            continue  # seen too close to an impact: the bounce count would be fragile
        if any(t_obs < math.sqrt(2.0 * h0 / g) for _, g in settings):
            continue  # seen before the first impact, which the program does not model
        h_obs = simulate_ball(h0, t_obs, true["e"], true["g"]) + rng.normal(0.0, 0.01)
        rows.append([h0, t_obs, h_obs])
    return ["h0", "t_obs", "h_obs"], rows


# ---- linear and logistic regression ----------------------------------------------------------

def linear_regression(rng: np.random.Generator) -> tuple[list[str], list[list[float]]]:
    true = TRUE_PARAMS["linear_regression"]
    w = np.array(true["w"])
    X = rng.normal(0.0, 1.0, size=(100, 8))
    y = X @ w + true["b"] + rng.normal(0.0, 0.1, size=100)
    rows = [list(X[i]) + [y[i]] for i in range(100)]
    return _vector_columns("X", 8) + ["y"], rows


def logistic_regression(rng: np.random.Generator) -> tuple[list[str], list[list[float]]]:
    true = TRUE_PARAMS["logistic_regression"]
    rows = []
    for _ in range(1000):
        width = rng.normal(5.0, 0.5)
        weight = rng.normal(2.0, 0.3)
        z = true["w_width"] * (width - 5.0) + true["w_weight"] * (weight - 2.0) + true["bias"]
        p = 1.0 / (1.0 + math.exp(-z))
        defective = 1.0 if rng.random() < p else 0.0
        rows.append([width, weight, defective])
    return ["width", "weight", "defective"], rows


# ---- mlp -------------------------------------------------------------------------------------

def mlp(rng: np.random.Generator) -> tuple[list[str], list[list[float]]]:
    true = TRUE_PARAMS["mlp"]
    W1, b1 = np.array(true["W1"]), np.array(true["b1"])
    w2, b2 = np.array(true["w2"]), true["b2"]
    rows = []
    for _ in range(1000):
        x = rng.uniform(-1.0, 1.0, size=3)
        score = float(w2 @ np.tanh(W1 @ x + b1)) + b2
        # P(label = +1) = sigmoid(score): the model whose negative log-likelihood mlp.dl minimises
        label = 1.0 if rng.random() < 1.0 / (1.0 + math.exp(-score)) else -1.0
        rows.append(list(x) + [label])
    return _vector_columns("x", 3) + ["label"], rows


# ---- oscillator ------------------------------------------------------------------------------

def simulate_oscillator(x0: float, v0: float, k: float, c: float) -> list[float]:
    """The body of oscillator.dl: the positions at t = 1, ..., 5 s."""
    dt, mass = 1.0 / 100, 1.0
    x, v = x0, v0
    seen = []
    for _ in range(5):
        for _ in range(100):
            v += dt * (-k * x - c * v) / mass
            x += dt * v
        seen.append(x)
    return seen


def oscillator(rng: np.random.Generator) -> tuple[list[str], list[list[float]]]:
    true = TRUE_PARAMS["oscillator"]
    rows = []
    for _ in range(30):
        x0 = rng.uniform(-1.0, 1.0)
        v0 = rng.uniform(-1.0, 1.0)
        seen = simulate_oscillator(x0, v0, true["k"], true["c"])
        x_obs = [s + rng.normal(0.0, 0.01) for s in seen]
        rows.append([x0, v0] + x_obs)
    return ["x0", "v0"] + _vector_columns("x_obs", 5), rows


# ---- image filter ----------------------------------------------------------------------------

def filter_patch(patch: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Valid 3x3 cross-correlation of a 5x5 patch: the 3x3 result."""
    out = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            out[i, j] = float(np.sum(kernel * patch[i : i + 3, j : j + 3]))
    return out


def image_filter(rng: np.random.Generator) -> tuple[list[str], list[list[float]]]:
    kernel = np.array(TRUE_PARAMS["image_filter"]["k"])
    rows = []
    for _ in range(60):
        patch = rng.uniform(0.0, 1.0, size=(5, 5))
        target = filter_patch(patch, kernel) + rng.normal(0.0, 0.01, size=(3, 3))
        rows.append(list(patch.ravel()) + list(target.ravel()))
    return _vector_columns("p", 25) + _vector_columns("target", 9), rows


# ---- builtins tour ---------------------------------------------------------------------------

def tour_kinks() -> list[float]:
    """The values of u = a * x where some feature of builtins_tour.dl has a kink or a step."""
    kinks = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0 / 3.0, 1.0]          # sign/abs/min/clamp/relu/ramp
    kinks += [math.pi / 4.0 / m for m in (1.0, 2.0, 3.0)]            # max(sin(v), cos(v))
    kinks += [q / 8.0 for q in range(1, 9)]                          # floor/ceil/round of 4u
    return kinks


def tour_features(u: float, theta: float) -> np.ndarray:
    """The feature vector f of builtins_tour.dl, for checking the generated y."""
    R = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    q = np.array([1.0, u])
    r = (R @ R) @ q
    v = np.array([u, 2.0 * u, 3.0 * u])
    ramp = 0.0 if u < 0.3 else (u - 0.3 if u <= 0.6 else 0.3)
    return np.array([
        math.tan(u),
        math.asin(u),
        math.acos(u * u),
        math.atan2(r[1], r[0]),
        float((q @ R) @ q),
        math.sinh(u) + 0.5 * math.cosh(u),
        u**1.5,
        u**0.5,
        (1.0 + u) ** -2,
        math.exp(-(u**2)),
        float(np.sign(u - 0.5)) * min(abs(u - 0.5), 0.2),
        min(max(u, 0.2), 0.7) + max(u - 0.4, 0.0),
        float(np.sum(np.minimum(v, 1.0)) - np.mean(np.maximum(np.sin(v), np.cos(v)))),
        (math.floor(4.0 * u) + math.ceil(4.0 * u) + float(np.round(4.0 * u))) / 12.0,
        ramp,
    ])


def builtins_tour(rng: np.random.Generator) -> tuple[list[str], list[list[float]]]:
    true = TRUE_PARAMS["builtins_tour"]
    w = np.array(true["w"])
    kinks = tour_kinks()
    rows = []
    while len(rows) < 80:
        x = rng.uniform(0.1, 0.8)
        us = [a * x for a in (true["a"], 0.9, _perturbed(0.9))]
        if min(abs(u - kink) for u in us for kink in kinks) < 0.005:
            continue
        y = float(w @ tour_features(us[0], true["theta"])) + true["b"] + rng.normal(0.0, 0.01)
        rows.append([x, y])
    return ["x", "y"], rows


# ---- scaling --------------------------------------------------------------------------------

def scaling(rng: np.random.Generator) -> tuple[list[str], list[list[float]]]:
    true = TRUE_PARAMS["scaling"]
    rows = []
    for _ in range(200):
        raw = rng.uniform(0.5, 3.0)
        reference = true["scale"] * raw + true["offset"] + rng.normal(0.0, 0.02)
        rows.append([raw, reference])
    return ["raw", "reference"], rows


def soft_threshold(rng: np.random.Generator) -> tuple[list[str], list[list[float]]]:
    t = TRUE_PARAMS["soft_threshold"]
    rows = []
    for _ in range(1000):
        reading = float(rng.uniform(0.0, 1.2))
        p = 1.0 / (1.0 + math.exp(-(reading - t["threshold"]) / t["width"]))
        rows.append([reading, float(rng.uniform() < p)])
    return ["reading", "alarm"], rows


def simulate_sir(N: float, beta: float, gamma: float, i0: float, days: int = 120, steps: int = 4) -> np.ndarray:
    """The simulation of sir.dl: the infected at the start of each day."""
    dt = 1.0 / steps
    s, i, curve = N - i0, i0, []
    for _ in range(days):
        curve.append(i)
        for _ in range(steps):
            infections = beta * s * i / N * dt
            recoveries = gamma * i * dt
            s -= infections
            i += infections - recoveries
    return np.array(curve)


def sir(rng: np.random.Generator) -> tuple[list[str], list[list[float]]]:
    curve = simulate_sir(**TRUE_PARAMS["sir"])
    return ["day", "infected"], [[float(d), float(rng.poisson(curve[d]))] for d in range(100)]


# ---- all of them -----------------------------------------------------------------------------

GENERATORS = {
    "projectile": (1, projectile),
    "projectile_landing": (1, lambda rng: projectile(rng, "projectile_landing", 100, interpolate=True)),
    "bouncing_ball": (2, bouncing_ball),
    "linear_regression": (3, linear_regression),
    "logistic_regression": (4, logistic_regression),
    "mlp": (5, mlp),
    "oscillator": (6, oscillator),
    "image_filter": (7, image_filter),
    "builtins_tour": (8, builtins_tour),
    "scaling": (9, scaling),
    "soft_threshold": (10, soft_threshold),
    "sir": (11, sir),
}


def generate_all(out_dir: Path = HERE) -> list[Path]:
    """Write every data set as OUT_DIR/<program>.csv; return the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (seed, make) in GENERATORS.items():
        header, rows = make(np.random.default_rng(seed))
        path = out_dir / f"{name}.csv"
        _write_csv(path, header, rows)
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in generate_all(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(written_path)
