"""Events (dlang/events.py): the warnings about conditions that depend on params, the event
program (the same program with each event of a time-stepping loop moved to its time of
impact), and `train --events auto` recovering known params where the exact gradient stalls:
the contract's projectile, a bouncing ball stepped in time and a draining tank, on data drawn
from the programs themselves (programs/events/generate.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dlang.data import load_data
from dlang.events import conditions, event_program, warnings
from dlang.frontend import compile_source

from conftest import load_program
from dlang.ir import initial_params
from dlang.irtext import parse_program, print_program
from dlang.pipeline import compile_kernels
from dlang.verify import verify

from conftest import PROGRAMS

EVENTS = PROGRAMS / "events"
TANK = EVENTS / "draining_tank.dl"
BALL = EVENTS / "bouncing_ball_steps.dl"
PROJECTILE = PROGRAMS / "projectile.dl"
WITHOUT = ["hanging_chain", "image_filter", "linear_regression", "logistic_regression", "mlp", "oscillator",
           "scaling"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The examples' CSVs, made afresh by programs/events/generate.py."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_events", EVENTS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    directory = tmp_path_factory.mktemp("events")
    module.write(directory)
    return directory, module.TRUTH


# ---- warnings ---------------------------------------------------------------------------------------

def test_the_tank_warns_that_its_gradient_is_zero_at_the_while_loop(run_cli):
    r = run_cli("check", TANK)
    assert r.code == 0
    assert (f"{TANK}:7:1: warning: the gradient of 'k' is zero everywhere: 'k' reaches the loss only through "
            "the condition of the `while` loop at line 7") in r.err
    assert "   7 | while h > 0.0 {\n     | ^" in r.err


def test_the_projectile_notes_its_switching_condition(run_cli):
    r = run_cli("check", PROJECTILE)
    assert r.code == 0
    assert (f"{PROJECTILE}:14:5: warning: this `if` condition depends on 'drag', 'angle': the exact gradient does "
            "not see where it switches") in r.err
    assert "  14 |     if y >= 0.0 {\n     |     ^^" in r.err
    g = run_cli("grad", PROJECTILE, "--data", PROGRAMS / "data" / "projectile.csv", "--json")
    assert g.code == 0 and "this `if` condition depends on" in g.err
    json.loads(g.out)  # stdout stays one JSON object


@pytest.mark.parametrize("name", WITHOUT)
def test_no_warning_without_param_dependent_conditions(name, run_cli):
    prog = load_program(str(PROGRAMS / f"{name}.dl"))
    assert conditions(prog) == [] and warnings(prog) == [] and event_program(prog) is None
    r = run_cli("check", PROGRAMS / f"{name}.dl")
    assert r.code == 0 and "warning" not in r.err


def test_floor_and_a_branch_are_named_as_what_stops_the_gradient():
    prog = compile_source("data x\nparam a = 0.5\nloss (floor(a * x) - 3.0)^2\n", "f.dl")
    (w,) = warnings(prog, "f.dl")
    assert "reaches the loss only through `floor` at line 3" in w.message and w.span.line == 3
    prog = compile_source("data x\nparam a = 0.5\ny = 0.0\nif a > x { y = 1.0 }\nloss (y - x)^2\n", "g.dl")
    ws = warnings(prog, "g.dl")
    assert "the condition of the `if` at line 4" in ws[0].message


# ---- the event program ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [TANK, BALL, PROJECTILE, PROGRAMS / "projectile_landing.dl"], ids=lambda p: p.stem)
def test_the_event_program_verifies_prints_back_and_stays_near_the_program(path, data_dir):
    prog = load_program(str(path))
    ev = event_program(prog)
    assert ev is not None
    verify(ev)
    assert parse_program(print_program(ev)) == ev
    csv = data_dir[0] / f"{path.stem}.csv"
    data = load_data(prog, str(csv) if csv.exists() else str(PROGRAMS / "data" / f"{path.stem}.csv"))[:40]
    params = initial_params(prog)
    exact, moved = compile_kernels(prog), compile_kernels(ev)
    a, b = exact.forward_rows(data, params)[1][:, 0], moved.forward_rows(data, params)[1][:, 0]
    # each event moves the state by less than a step or two of the simulation
    assert np.max(np.abs(a - b)) < 0.05 * max(1.0, float(np.max(np.abs(a))))


@pytest.mark.parametrize("path, params, steps, rel", [
    (PROJECTILE, {"drag": 0.0517, "angle": 0.6007}, (1e-4, 1e-6), 2e-3),
    (TANK, {"k": 0.63}, (1e-4, 1e-6), 0.05),  # piecewise linear in time between steps: kinks
])
def test_the_event_programs_loss_is_continuous_and_its_gradient_is_its_slope(path, params, steps, rel, data_dir):
    """The program's loss is a staircase (its central differences are 0 or huge, depending on
    the step); the event program's is continuous: its gradient is its central differences'
    slope at every step size."""
    prog = load_program(str(path))
    data = load_data(prog, str(data_dir[0] / f"{path.stem if path != PROJECTILE else 'projectile'}.csv"))
    moved = compile_kernels(event_program(prog))
    _, grads = moved.grad(data, params)
    for name in params:
        for h in steps:
            up, down = dict(params), dict(params)
            up[name] += h
            down[name] -= h
            fd = (moved.loss(data, up) - moved.loss(data, down)) / (2 * h)
            assert fd == pytest.approx(grads[name], rel=rel, abs=1e-6), (name, h, fd, grads[name])


def test_grad_events_auto_shows_both_gradients(run_cli, data_dir):
    csv = data_dir[0] / "draining_tank.csv"
    r = run_cli("grad", TANK, "--data", csv, "--events", "auto", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["grad"]["k"] == 0.0 and out["events_grad"]["k"] < 0  # the tank drains later with a smaller k
    exact = json.loads(run_cli("grad", TANK, "--data", csv, "--json").out)
    assert exact["grad"] == out["grad"] and "events_grad" not in exact
    assert run_cli("grad", TANK, "--data", csv, "--events", "smooth").code == 1


# ---- training ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, path", [("draining_tank", TANK), ("bouncing_ball_steps", BALL),
                                        ("projectile", PROJECTILE)])
def test_train_recovers_the_params_where_the_exact_gradient_stalls(name, path, data_dir, run_cli, tmp_path):
    directory, truth = data_dir
    csv = directory / f"{name}.csv"
    out = tmp_path / "fit.json"
    r = run_cli("train", path, "--data", csv, "--out", out)
    assert r.code == 0, r.err
    fitted = json.loads(out.read_text())
    for k, want in truth[name].items():
        assert fitted[k] == pytest.approx(want, rel=0.02), (k, fitted)
    # the loss reported is the program's own at the fitted params
    prog = load_program(str(path))
    loss = compile_kernels(prog).loss(load_data(prog, str(csv)), fitted)
    assert f"best loss {loss:.8g}" in r.out
    exact = tmp_path / "exact.json"
    run_cli("train", path, "--data", csv, "--out", exact, "--events", "exact")
    stuck = json.loads(exact.read_text())
    assert any(abs(stuck[k] - want) > 0.02 * abs(want) for k, want in truth[name].items())


@pytest.mark.parametrize("name", ["linear_regression", "bouncing_ball"])
def test_programs_without_time_stepping_events_train_bit_for_bit_as_before(name, run_cli, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    args = ["train", PROGRAMS / f"{name}.dl", "--data", PROGRAMS / "data" / f"{name}.csv", "--epochs", "30"]
    assert run_cli(*args, "--out", a).code == 0
    assert run_cli(*args, "--out", b, "--events", "exact").code == 0
    assert json.loads(a.read_text()) == json.loads(b.read_text())  # the same kernels: the same params


# ---- the same kind of program, written otherwise --------------------------------------------------------

WHILE_PROJECTILE = """
const dt = 0.01
data v0, dist
param drag = 0.1
param angle = 0.6
x = 0.0
y = 0.0
vx = v0 * cos(angle)
vy = v0 * sin(angle)
while y >= 0.0 {
    s = sqrt(vx * vx + vy * vy)
    vx -= dt * drag * s * vx
    vy -= dt * (9.81 + drag * s * vy)
    x += dt * vx
    y += dt * vy
}
output landing = x
loss (x - dist)^2
"""

COUNTED_TANK = """
data h0, t_dry
param k = 0.5
h = h0
n = 0
while h > 0.0 {
    h = h - 0.005 * k * sqrt(h)
    n += 1
}
output drain_time = 0.005 * n
loss (0.005 * n - t_dry)^2
"""


def _fit_own_data(write_program, run_cli, tmp_path, source, inputs, truth, noise, seed):
    """Draw data from the program itself at `truth` (+ noise), train from its start."""
    path = write_program(source, "p.dl")
    prog = load_program(str(path))
    kernels = compile_kernels(prog)
    rng = np.random.default_rng(seed)
    data = np.column_stack([inputs, np.zeros(len(inputs))])
    target = kernels.forward_rows(data, truth)[1][:, 0] + rng.normal(0, noise, len(inputs))
    csv = tmp_path / "data.csv"
    names = [d.name for d in prog.data]
    csv.write_text(",".join(names) + "\n" + "\n".join(f"{float(a)!r},{float(b)!r}" for a, b in zip(inputs, target)) + "\n")
    out = tmp_path / "fit.json"
    r = run_cli("train", path, "--data", csv, "--out", out)
    assert r.code == 0, r.err
    return json.loads(out.read_text())


def test_a_projectile_written_with_a_while_loop_fits(write_program, run_cli, tmp_path):
    v0 = np.loadtxt(PROGRAMS / "data" / "projectile.csv", delimiter=",", skiprows=1)[:, 0]
    truth = {"drag": 0.05, "angle": 0.8}
    fitted = _fit_own_data(write_program, run_cli, tmp_path, WHILE_PROJECTILE, v0, truth, 0.05, 5)
    for k, want in truth.items():
        assert fitted[k] == pytest.approx(want, rel=0.02), fitted


def test_a_tank_that_counts_its_steps_with_an_int_fits(write_program, run_cli, tmp_path):
    h0 = np.random.default_rng(6).uniform(0.5, 3, 100)
    fitted = _fit_own_data(write_program, run_cli, tmp_path, COUNTED_TANK, h0, {"k": 0.8}, 0.02, 7)
    assert fitted["k"] == pytest.approx(0.8, rel=0.02), fitted


GUARDED_TANK = """
const dt = 0.01
data h0, t_dry
param k = 0.5
h = h0
t = 0.0
n = 0
while h > 0.0 and n < 100000 {    # a guard on the trips: a compound condition
    h -= dt * k * sqrt(h)
    t += dt
    n += 1
}
output drain_time = t
loss (t - t_dry)^2
"""


def test_a_while_loop_with_a_guard_in_its_condition_fits(write_program, run_cli, tmp_path):
    h0 = np.random.default_rng(8).uniform(0.5, 3, 100)
    fitted = _fit_own_data(write_program, run_cli, tmp_path, GUARDED_TANK, h0, {"k": 0.8}, 0.02, 9)
    assert fitted["k"] == pytest.approx(0.8, rel=0.02), fitted


def test_a_loop_that_jumps_from_event_to_event_stays_exact():
    """The gallery's bouncing ball computes bounce after bounce in closed form (no time step):
    its results are continuous across events and it is left as written."""
    prog = load_program(str(PROGRAMS / "bouncing_ball.dl"))
    assert [c.kind for c in conditions(prog)] == ["while"] and event_program(prog) is None
