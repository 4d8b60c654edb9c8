"""Oracle tests: each example program's mean loss recomputed by hand in NumPy, against dlang.

Every program in programs/ has an oracle here: its body re-implemented in plain Python over
rows read with the csv module. dlang is used only to load the program, read its rows, give
the starting params, and compute the loss being checked.
"""
from __future__ import annotations

import csv
import importlib.util
import math
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from dlang.interp import initial_params, program_loss
from dlang.data import read_rows

from conftest import load_program

RTOL = 1e-12


def _programs_dir() -> Path:
    """programs/ at the repository root, found from this file."""
    return Path(__file__).resolve().parent.parent / "programs"


PROGRAMS = _programs_dir()
DATA = PROGRAMS / "data"

Row = dict[str, float]
Params = dict[str, "float | np.ndarray"]


def read_csv(path: Path) -> list[Row]:
    """Rows of a data file as column name -> float, read without dlang."""
    with open(path, newline="") as f:
        return [{name: float(value) for name, value in row.items()} for row in csv.DictReader(f)]


def vector(row: Row, name: str, k: int) -> np.ndarray:
    """The data vector NAME[k] of a row: columns NAME_0 ... NAME_{k-1}."""
    return np.array([row[f"{name}_{i}"] for i in range(k)])


def has_data(path: Path) -> bool:
    return re.search(r"^\s*data\b", path.read_text(), re.MULTILINE) is not None


# ---- the oracles: one per program, (rows, params, consts) -> mean loss ------------------------

def projectile(rows: list[Row], p: Params, steps: int = 400, interpolate: bool = False) -> float:
    dt, drag, angle = 0.01, p["drag"], p["angle"]
    losses = []
    for row in rows:
        v0, dist = row["v0"], row["dist"]
        x = y = 0.0
        vx = v0 * math.cos(angle)
        vy = v0 * math.sin(angle)
        for _ in range(steps):
            if y >= 0.0:
                s = math.sqrt(vx * vx + vy * vy)
                vx -= dt * drag * s * vx
                vy -= dt * (9.81 + drag * s * vy)
                x += dt * vx
                y += dt * vy
        landing = x - y * vx / vy if interpolate else x
        losses.append((landing - dist) ** 2)
    return float(np.mean(losses))


def projectile_landing(rows: list[Row], p: Params) -> float:
    return projectile(rows, p, interpolate=True)


def bouncing_ball(rows: list[Row], p: Params) -> float:
    g, e = p["g"], p["e"]
    losses = []
    for row in rows:
        t = math.sqrt(2.0 * row["h0"] / g)
        v = g * t
        n = 0
        while n < 50 and t + 2.0 * e * v / g <= row["t_obs"]:
            v *= e
            t += 2.0 * v / g
            n += 1
        tau = row["t_obs"] - t
        h = e * v * tau - 0.5 * g * tau**2
        losses.append((h - row["h_obs"]) ** 2)
    return float(np.mean(losses))


def linear_regression(rows: list[Row], p: Params, ridge: float = 1e-3) -> float:
    w, b = np.asarray(p["w"]), p["b"]
    losses = []
    for row in rows:
        pred = sum(wi * xi for wi, xi in zip(w, vector(row, "X", 8))) + b
        losses.append((pred - row["y"]) ** 2 + ridge * float(np.sum(w * w)) / 8)
    return float(np.mean(losses))


def logistic_regression(rows: list[Row], p: Params) -> float:
    losses = []
    for row in rows:
        z = p["w_width"] * (row["width"] - 5.0) + p["w_weight"] * (row["weight"] - 2.0) + p["bias"]
        prob = 1.0 / (1.0 + math.exp(-z))
        losses.append(-math.log(prob) if row["defective"] == 1.0 else -math.log1p(-prob))
    return float(np.mean(losses))


def mlp(rows: list[Row], p: Params) -> float:
    W1, b1 = np.asarray(p["W1"]), np.asarray(p["b1"])
    w2, b2 = np.asarray(p["w2"]), p["b2"]
    decay = 1e-3 * sum(W1[i, j] ** 2 for i in range(4) for j in range(3))
    losses = []
    for row in rows:
        x = vector(row, "x", 3)
        h = [math.tanh(sum(W1[i, j] * x[j] for j in range(3)) + b1[i]) for i in range(4)]
        s = sum(w2[i] * h[i] for i in range(4)) + b2
        losses.append(math.log1p(math.exp(-row["label"] * s)) + decay)
    return float(np.mean(losses))


def oscillator(rows: list[Row], p: Params) -> float:
    k, c, dt = p["k"], p["c"], 0.01
    prior = 1e-3 * (2.0 * math.pi * math.sqrt(1.0 / k) - 3.0) ** 2
    losses = []
    for row in rows:
        x, v = row["x0"], row["v0"]
        total = 0.0
        for j in range(5):
            for _ in range(100):
                v += dt * (-k * x - c * v)
                x += dt * v
            total += (x - row[f"x_obs_{j}"]) ** 2
        losses.append(total + prior)
    return float(np.mean(losses))


def image_filter(rows: list[Row], p: Params) -> float:
    k = np.asarray(p["k"])
    gain = 0.01 * (float(np.sum(k)) - 1.0) ** 2
    losses = []
    for row in rows:
        img = vector(row, "p", 25).reshape(5, 5)
        target = vector(row, "target", 9).reshape(3, 3)
        sq = 0.0
        for i in range(3):
            for j in range(3):
                out = sum(k[a, b] * img[i + a, j + b] for a in range(3) for b in range(3))
                sq += (out - target[i, j]) ** 2
        losses.append(sq / 9.0 + gain)
    return float(np.mean(losses))


def _tour_features(u: float, theta: float) -> list[float]:
    c, s = math.cos(theta), math.sin(theta)
    # (R @ R) @ (1, u) rotates by 2 theta; (1, u) @ R @ (1, u) = cos(theta) (1 + u^2)
    r0 = (c * c - s * s) - 2.0 * s * c * u
    r1 = 2.0 * s * c + (c * c - s * s) * u
    v = [u, 2.0 * u, 3.0 * u]
    if u < 0.3:
        ramp = 0.0
    elif u <= 0.6:
        ramp = u - 0.3
    else:
        ramp = 0.3
    return [
        math.tan(u),
        math.asin(u),
        math.acos(u * u),
        math.atan2(r1, r0),
        c * (1.0 + u * u),
        math.sinh(u) + 0.5 * math.cosh(u),
        u**1.5,
        math.sqrt(u),
        1.0 / (1.0 + u) ** 2,
        math.exp(-u * u),
        math.copysign(1.0, u - 0.5) * min(abs(u - 0.5), 0.2),
        min(max(u, 0.2), 0.7) + max(u - 0.4, 0.0),
        sum(min(vi, 1.0) for vi in v) - sum(max(math.sin(vi), math.cos(vi)) for vi in v) / 3.0,
        (math.floor(4.0 * u) + math.ceil(4.0 * u) + round(4.0 * u)) / 12.0,
        ramp,
    ]


def builtins_tour(rows: list[Row], p: Params) -> float:
    w = np.asarray(p["w"])
    decay = 1e-4 * float(np.sum(w * w))
    losses = []
    for row in rows:
        u = p["a"] * row["x"]
        assert 0.0 < u <= 1.0  # the domain penalty term stays zero
        f = _tour_features(u, p["theta"])
        pred = p["b"] + sum(wi * fi for wi, fi in zip(w, f))
        losses.append((pred - row["y"]) ** 2 + decay)
    return float(np.mean(losses))


def scaling(rows: list[Row], p: Params) -> float:
    losses = []
    for row in rows:
        reading = p["scale"] * row["raw"] + p["offset"]
        losses.append((reading - row["reference"]) ** 2)
    return float(np.mean(losses))


def hanging_chain(rows: list[Row], p: Params) -> float:
    assert rows == [{}]
    h = np.array(p["y"], dtype=float)
    h[0] = h[-1] = 0.0
    dx = 2.0 / 10
    gravity = sum(0.05 * 9.81 * h[i] for i in range(1, 10)) + 0.2 * 9.81 * h[5]
    springs = sum(0.5 * 200.0 * (math.hypot(dx, h[i + 1] - h[i]) - 0.15) ** 2 for i in range(10))
    return float(gravity + springs)


def soft_threshold(rows: list[Row], p: Params) -> float:
    def soft_max(a: float, b: float, t: float) -> float:  # t log(exp(a / t) + exp(b / t))
        hi = max(a, b)
        return hi + t * math.log1p(math.exp(-abs(a - b) / t))

    losses = []
    for row in rows:
        z = (row["reading"] - p["threshold"]) / p["width"]
        prob = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
        alarm = row["alarm"]
        losses.append(-(alarm * math.log(soft_max(prob, 1e-9, 1e-3))
                        + (1.0 - alarm) * math.log(soft_max(1.0 - prob, 1e-9, 1e-3))))
    return float(np.mean(losses))


def sir(rows: list[Row], p: Params, days: int = 120, steps: int = 4) -> float:
    """Whole columns: one simulation, then the Poisson negative log-likelihood summed over the days."""
    dt = 1.0 / steps
    s, i, curve = p["N"] - p["i0"], p["i0"], []
    for _ in range(days):
        curve.append(i)
        for _ in range(steps):
            new, rec = p["beta"] * s * i / p["N"] * dt, p["gamma"] * i * dt
            s, i = s - new, i + new - rec
    total = 0.0
    for row in rows:
        mu = curve[int(row["day"])]
        total += mu - row["infected"] * math.log(mu)
    return total


ORACLES: dict[str, Callable[..., float]] = {
    "sir": sir,
    "soft_threshold": soft_threshold,
    "projectile": projectile,
    "projectile_landing": projectile_landing,
    "bouncing_ball": bouncing_ball,
    "linear_regression": linear_regression,
    "logistic_regression": logistic_regression,
    "mlp": mlp,
    "oscillator": oscillator,
    "image_filter": image_filter,
    "builtins_tour": builtins_tour,
    "scaling": scaling,
    "hanging_chain": hanging_chain,
}

NAMES = sorted(ORACLES)


# ---- helpers ---------------------------------------------------------------------------------

def _program_path(name: str) -> Path:
    return PROGRAMS / f"{name}.dl"


def _rows(prog, name: str) -> tuple[list, list[Row]]:
    """(dlang's rows, the oracle's rows) for a program; one empty row when it has no data."""
    csv_path = DATA / f"{name}.csv"
    if not has_data(_program_path(name)):
        return [{}], [{}]
    return read_rows(prog, str(csv_path)), read_csv(csv_path)


def _perturb(params: Params) -> Params:
    """Another point to compare at: every param scaled by 1.1 and shifted by 0.05."""
    out: Params = {}
    for name, value in params.items():
        if isinstance(value, np.ndarray):
            out[name] = np.asarray(value, dtype=float) * 1.1 + 0.05
        else:
            out[name] = float(value) * 1.1 + 0.05
    return out


def _load_generator():
    spec = importlib.util.spec_from_file_location("dlang_example_data", DATA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- tests -----------------------------------------------------------------------------------

def test_every_program_has_an_oracle():
    on_disk = {path.stem for path in PROGRAMS.glob("*.dl")}
    assert on_disk == set(ORACLES), "add an oracle to tests/test_oracle.py for each new program"


@pytest.mark.parametrize("name", NAMES)
def test_data_file_exactly_when_program_has_data(name):
    assert has_data(_program_path(name)) == (DATA / f"{name}.csv").exists()


@pytest.mark.parametrize("name", NAMES)
def test_loss_at_starting_params(name):
    prog = load_program(str(_program_path(name)))
    dlang_rows, rows = _rows(prog, name)
    params = initial_params(prog)
    got = program_loss(prog, dlang_rows, params)
    assert got == pytest.approx(ORACLES[name](rows, params), rel=RTOL, abs=0.0)
    assert program_loss(prog, dlang_rows) == got  # params default to the starting ones


@pytest.mark.parametrize("name", NAMES)
def test_loss_at_perturbed_params(name):
    prog = load_program(str(_program_path(name)))
    dlang_rows, rows = _rows(prog, name)
    start = initial_params(prog)
    params = _perturb(start)
    got = program_loss(prog, dlang_rows, params)
    expected = ORACLES[name](rows, params)
    assert got == pytest.approx(expected, rel=RTOL, abs=0.0)
    assert expected != pytest.approx(ORACLES[name](rows, start), rel=1e-6)  # really elsewhere


def test_projectile_with_fewer_steps():
    # 120 steps (1.2 s) is too short for the longer throws: the loop ends mid-flight
    prog = load_program(str(_program_path("projectile")), {"steps": "120"})
    rows = read_csv(DATA / "projectile.csv")
    params = initial_params(prog)
    got = program_loss(prog, read_rows(prog, str(DATA / "projectile.csv")), params)
    assert got == pytest.approx(projectile(rows, params, steps=120), rel=RTOL, abs=0.0)
    assert got != pytest.approx(projectile(rows, params), rel=1e-6)


def test_linear_regression_with_another_ridge():
    prog = load_program(str(_program_path("linear_regression")), {"ridge": "0.5"})
    rows = read_csv(DATA / "linear_regression.csv")
    params = _perturb(initial_params(prog))
    got = program_loss(prog, read_rows(prog, str(DATA / "linear_regression.csv")), params)
    assert got == pytest.approx(linear_regression(rows, params, ridge=0.5), rel=RTOL, abs=0.0)


def test_starting_params_are_the_declared_ones():
    lin = initial_params(load_program(str(_program_path("linear_regression"))))
    assert set(lin) == {"w", "b"}
    assert np.asarray(lin["w"]).shape == (8,) and not np.any(lin["w"])
    k = initial_params(load_program(str(_program_path("image_filter"))))["k"]
    assert np.asarray(k).shape == (3, 3) and np.all(k == 1.0 / 9.0)
    net = initial_params(load_program(str(_program_path("mlp"))))
    assert np.asarray(net["W1"]).shape == (4, 3) and np.asarray(net["w2"]).shape == (4,)
    assert np.all(np.abs(net["w2"]) <= 0.5) and np.std(net["W1"]) > 0.0


@pytest.mark.parametrize("name", sorted(_load_generator().TRUE_PARAMS))
def test_true_params_fit_better_than_the_start(name):
    # the data and the oracle agree about what the program means: its true params (from the
    # generator) give a lower loss than where training starts
    prog = load_program(str(_program_path(name)))
    _, rows = _rows(prog, name)
    true = {k: np.asarray(v, dtype=float) if isinstance(v, list) else v
            for k, v in _load_generator().TRUE_PARAMS[name].items()}
    assert ORACLES[name](rows, true) < ORACLES[name](rows, initial_params(prog))


def _csv_table(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array([[float(x) for x in row] for row in rows[1:]])


def test_generator_reproduces_every_csv(tmp_path):
    """The data files are what programs/data/generate.py writes. Compared as numbers with a
    tolerance, never byte for byte: libm's sin, exp, ... differ in the last bit between
    processors (42 of builtins_tour's 80 y values did, by up to 4.4e-16, on an Intel Xeon)."""
    written = _load_generator().generate_all(tmp_path)
    assert {p.name for p in written} == {p.name for p in DATA.glob("*.csv")}
    for path in written:
        header, values = _csv_table(path)
        want_header, want = _csv_table(DATA / path.name)
        assert header == want_header, path.name
        assert values.shape == want.shape, path.name
        np.testing.assert_allclose(values, want, rtol=1e-12, atol=1e-12, err_msg=path.name)
