"""Bounds on params (`param k = 0.5 in (0, inf)`): parsed and printed, checked where a start or
a params file gives a value outside them, kept by every optimizer (training runs in an
unconstrained space: log and logit transforms), and reported in the fit report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dlang.frontend import compile_source
from dlang.ir import initial_params
from dlang.irtext import parse_program, print_program

from conftest import PROGRAMS

DECAY = """
data t, y
param k = 0.5 in (0, inf)    # a decay rate: never negative
param a = 1.0
loss (a * exp(-k * t) - y)^2
"""


def _data(tmp_path, drift=0.02):
    """Flat data that pull an unbounded rate below zero."""
    rng = np.random.default_rng(2)
    t = np.linspace(0, 3, 40)
    y = 1.0 + rng.normal(0, 0.05, 40) + drift * t
    csv = tmp_path / "d.csv"
    csv.write_text("t,y\n" + "\n".join(f"{a!r},{b!r}" for a, b in zip(t.tolist(), y.tolist())) + "\n")
    return csv


def test_bounds_parse_print_back_and_clip_random_starts():
    prog = compile_source("param k = 0.5 in (0, inf)\nparam e[3] ~ normal(0.5, 2.0) in (0, 1)\n"
                          "param m = -1.0 in (-inf, 0.0)\nloss k + sum(e) - m\n", "b.dl")
    assert [p.bounds for p in prog.params] == [(0.0, np.inf), (0.0, 1.0), (-np.inf, 0.0)]
    assert parse_program(print_program(prog)) == prog
    e = initial_params(prog, seed=4)["e"]
    assert np.all((e > 0) & (e < 1))  # draws outside the bounds are moved just inside


@pytest.mark.parametrize("source, message, where", [
    ("param k = 0.0 in (0, inf)\nloss k\n", "the starting value 0 of param k is not inside its bounds (0, inf)", "1:11"),
    ("param k = 2.0 in (3, 1)\nloss k\n", "the bounds of param k must have lo < hi, not (3, 1)", "1:15"),
])
def test_a_start_outside_its_bounds_is_a_located_error(run_cli, write_program, source, message, where):
    path = write_program(source)
    r = run_cli("check", path)
    assert r.code == 1 and f"{path}:{where}: error: {message}" in r.err


def test_a_params_file_outside_the_bounds_is_a_located_error(run_cli, write_program, tmp_path):
    path = write_program(DECAY)
    params = tmp_path / "p.json"
    params.write_text('{"a": 1.0,\n "k": -0.3}')
    r = run_cli("grad", path, "--data", _data(tmp_path), "--params", params)
    assert r.code == 1 and f"{params}:2:2: error: param 'k' must stay inside its bounds (0, inf)" in r.err


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam", "lm"])
def test_a_rate_that_wanders_negative_stays_positive_and_is_reported_at_its_bound(optimizer, run_cli,
                                                                                  write_program, tmp_path):
    csv = _data(tmp_path)
    free = write_program(DECAY.replace(" in (0, inf)", ""), "free.dl")
    out = tmp_path / "free.json"
    assert run_cli("train", free, "--data", csv, "--out", out).code == 0
    assert json.loads(out.read_text())["k"] < 0  # without its bound, the fit makes the rate negative
    bounded = write_program(DECAY, "bounded.dl")
    out, report = tmp_path / "b.json", tmp_path / "r.json"
    r = run_cli("train", bounded, "--data", csv, "--out", out, "--optimizer", optimizer, "--report", report)
    assert r.code == 0, r.err
    k = json.loads(out.read_text())["k"]
    if optimizer == "adam":  # small steps: it heads for the bound without reaching it in 300 epochs
        assert 0 < k < 0.2
    else:
        assert 0 < k < 1e-3
        assert any("'k' is at a bound" in w for w in json.loads(report.read_text())["warnings"])


def test_bounds_do_not_move_an_interior_optimum(run_cli, write_program, tmp_path):
    source = (PROGRAMS / "scaling.dl").read_text().replace("param scale = 1.0", "param scale = 1.0 in (0, 10)")
    assert "in (0, 10)" in source
    path = write_program(source)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run_cli("train", path, "--data", PROGRAMS / "data" / "scaling.csv", "--out", a).code == 0
    assert run_cli("train", PROGRAMS / "scaling.dl", "--data", PROGRAMS / "data" / "scaling.csv", "--out", b).code == 0
    fa, fb = json.loads(a.read_text()), json.loads(b.read_text())
    for k in fa:
        assert fa[k] == pytest.approx(fb[k], rel=1e-6)
