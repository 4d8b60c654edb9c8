"""dlang train and dlang run: optimizers, stopping, files written, Ctrl-C, non-finite losses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

ROSENBROCK = "param x = -1.2\nparam y = 1.0\nloss (1.0 - x)^2 + 100.0 * (y - x^2)^2\n"

LINREG = """
data X[4], y
param w[4] = 0.0
param b = 0.0
pred = dot(w, X) + b
output pred = pred
loss (pred - y)^2
"""
TRUE_W = np.array([1.5, -2.0, 0.5, 3.0])
TRUE_B = 0.7


@pytest.fixture(scope="module")
def linreg(tmp_path_factory):
    d = tmp_path_factory.mktemp("linreg")
    rng = np.random.default_rng(5)
    X = rng.normal(size=(256, 4))
    y = X @ TRUE_W + TRUE_B + rng.normal(0.0, 0.01, 256)
    lines = ["X_0,X_1,X_2,X_3,y"] + [",".join(repr(float(v)) for v in (*row, t)) for row, t in zip(X, y)]
    (d / "linreg.csv").write_text("\n".join(lines) + "\n")
    (d / "linreg.dl").write_text(LINREG)
    return d / "linreg.dl", d / "linreg.csv"


def read_params(path) -> dict:
    return json.loads(open(path).read())


def test_lbfgs_takes_rosenbrock_to_its_minimum(run_cli, write_program, tmp_path):
    prog = write_program(ROSENBROCK, "rosen.dl")
    out = tmp_path / "rosen.json"
    r = run_cli("train", prog, "--out", out)
    assert r.code == 0, r.err
    p = read_params(out)
    assert abs(p["x"] - 1.0) < 1e-6 and abs(p["y"] - 1.0) < 1e-6, p
    assert "converged" in r.out and str(out) in r.out


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_first_order_optimizers_fit_linear_regression(run_cli, linreg, tmp_path, optimizer):
    prog, csv = linreg
    out = tmp_path / "fit.json"
    r = run_cli("train", prog, "--data", csv, "--optimizer", optimizer, "--out", out)
    assert r.code == 0, r.err
    p = read_params(out)
    assert np.max(np.abs(np.array(p["w"]) - TRUE_W)) < 1e-2, p
    assert abs(p["b"] - TRUE_B) < 1e-2, p


def test_tol_zero_runs_every_epoch(run_cli, linreg, tmp_path):
    prog, csv = linreg
    r = run_cli("train", prog, "--data", csv, "--optimizer", "adam", "--epochs", "30", "--patience", "2",
                "--tol", "0", "--json", "--out", tmp_path / "t.json")
    assert r.code == 0, r.err
    final = json.loads(r.out.strip().splitlines()[-1])
    assert final["epochs"] == 30 and final["stopped"] == "finished 30 epochs"


def test_same_seed_gives_identical_params_files(run_cli, linreg, tmp_path):
    prog, csv = linreg
    files = []
    for k, seed in enumerate(["3", "3", "4"]):
        out = tmp_path / f"s{k}.json"
        r = run_cli("train", prog, "--data", csv, "--optimizer", "adam", "--epochs", "5", "--seed", seed,
                    "--out", out)
        assert r.code == 0, r.err
        files.append(json.loads(out.read_text()))
    # the same run twice in one process: the same numbers (a reproducibility check, not a
    # comparison with numbers computed on another machine)
    assert files[0].keys() == files[1].keys()
    assert all(np.array_equal(files[0][k], files[1][k]) for k in files[0])
    assert any(not np.allclose(files[0][k], files[2][k], rtol=1e-12) for k in files[0])  # the seed drives the shuffle


def test_json_lines_history_and_default_out_path(run_cli, linreg, tmp_path):
    prog, csv = linreg
    local = tmp_path / "model.dl"
    local.write_text(LINREG)
    history = tmp_path / "h.csv"
    r = run_cli("train", local, "--data", csv, "--optimizer", "adam", "--epochs", "4", "--json",
                "--history", history)
    assert r.code == 0, r.err
    lines = [json.loads(line) for line in r.out.strip().splitlines()]
    assert [e["epoch"] for e in lines[:-1]] == [1, 2, 3, 4]
    assert all(set(e) == {"epoch", "loss", "grad_norm"} for e in lines[:-1])
    final = lines[-1]
    assert set(final["params"]) == {"w", "b"} and final["out"] == str(tmp_path / "model.params.json")
    assert read_params(tmp_path / "model.params.json") == final["params"]
    rows = history.read_text().strip().splitlines()
    # epoch 0 (the start) and 4 epochs; each param entry's value per epoch (named as run names outputs)
    assert rows[0] == "epoch,loss,grad_norm,best_loss,w_0,w_1,w_2,w_3,b" and len(rows) == 6
    assert rows[1].split(",")[0] == "0" and [float(x) for x in rows[1].split(",")[4:]] == [0.0] * 5
    assert float(rows[-1].split(",")[1]) == pytest.approx(lines[-2]["loss"], rel=1e-12)
    last = [float(x) for x in rows[-1].split(",")[4:]]
    assert all(x != 0.0 for x in last)  # adam moved every entry from its start


def test_init_starts_from_a_params_file(run_cli, linreg, tmp_path):
    prog, csv = linreg
    init = tmp_path / "init.json"
    init.write_text(json.dumps({"w": TRUE_W.tolist(), "b": TRUE_B}))
    r = run_cli("train", prog, "--data", csv, "--optimizer", "sgd", "--lr", "1e-9", "--epochs", "1",
                "--init", init, "--out", tmp_path / "o.json", "--json")
    assert r.code == 0, r.err
    first = json.loads(r.out.splitlines()[0])
    assert first["loss"] < 1e-3  # started at the truth, so the loss is at the noise floor


@pytest.mark.parametrize("args, words", [
    (["--optimizer", "newton"], ["newton"]),
    (["--epochs", "0"], ["--epochs", "at least 1"]),
    (["--optimizer", "adam", "--lr", "-1"], ["--lr", "positive"]),
    (["--batch-size", "8"], ["--batch-size", "lbfgs"]),
    (["--optimizer", "adam", "--batch-size", "0"], ["--batch-size", "at least 1"]),
    (["--out", "/nonexistent-dir/p.json"], ["--out", "does not exist"]),
    (["--tol", "-1"], ["--tol", "at least 0"]),
    (["--optimizer", "adam", "--patience", "0"], ["--patience", "at least 1"]),
])
def test_bad_options_are_user_errors(run_cli, linreg, args, words):
    prog, csv = linreg
    r = run_cli("train", prog, "--data", csv, *args)
    assert r.code == 1, (r.out, r.err)
    assert "Traceback" not in r.err
    for w in words:
        assert w in r.err


OVERFLOW = """
param w = 1.0
loss exp(-w) + 1e-300 * exp(exp(w))
"""


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_params(run_cli, write_program, tmp_path):
    prog = write_program(OVERFLOW, "overflow.dl")
    out = tmp_path / "o.json"
    r = run_cli("train", prog, "--optimizer", "adam", "--lr", "1.0", "--epochs", "50", "--out", out)
    assert r.code == 1
    assert "non-finite" in r.err and "epoch" in r.err and "w" in r.err, r.err
    assert "last good params" in r.err and str(out) in r.err
    w = read_params(out)["w"]
    assert np.isfinite(w) and np.isfinite(np.exp(np.exp(w)))  # the saved params still give a finite loss
    assert w > 1.0  # training did move before it overflowed


def test_sigint_saves_the_best_params_and_exits_130(tmp_path, linreg):
    prog, csv = linreg
    out = tmp_path / "best.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlang.cli", "train", str(prog), "--data", str(csv), "--optimizer", "sgd",
         "--lr", "1e-4", "--batch-size", "1", "--epochs", "100000", "--json", "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    losses = []
    deadline = time.time() + 120
    while len(losses) < 3 and time.time() < deadline:  # wait until it is really training
        line = proc.stdout.readline()
        if line.startswith("{"):
            losses.append(json.loads(line)["loss"])
    assert losses, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and str(out) in stderr
    assert "Traceback" not in stderr
    for line in stdout.splitlines():
        if line.startswith('{"epoch"'):
            losses.append(json.loads(line)["loss"])
    saved = read_params(out)  # a valid params file ...
    final = json.loads(stdout.strip().splitlines()[-1])
    assert final["params"] == saved and final["status"] == "interrupted"
    assert final["loss"] == pytest.approx(min(losses), rel=1e-12)  # ... holding the best params seen
    # and they really give that loss
    from dlang.commands import prepare
    p = prepare(str(prog), str(csv), str(out), None)
    assert p.kernels.loss(p.data, p.params) == pytest.approx(min(losses), rel=1e-9)


def test_run_prints_each_rows_loss_and_outputs(run_cli, linreg, tmp_path):
    prog, csv = linreg
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"w": TRUE_W.tolist(), "b": TRUE_B}))
    r = run_cli("run", prog, "--data", csv, "--params", params)
    assert r.code == 0, r.err
    lines = r.out.strip().splitlines()
    assert lines[0] == "loss,pred" and len(lines) == 257
    data = np.loadtxt(csv, delimiter=",", skiprows=1)
    table = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    pred = data[:, :4] @ TRUE_W + TRUE_B
    np.testing.assert_allclose(table[:, 1], pred, rtol=1e-12)
    np.testing.assert_allclose(table[:, 0], (pred - data[:, 4]) ** 2, rtol=1e-9, atol=1e-15)
    assert r.err.startswith("mean loss ") and "over 256 rows" in r.err
    assert float(r.err.split()[2]) == pytest.approx(np.mean((pred - data[:, 4]) ** 2), rel=1e-9)
    out = tmp_path / "rows.csv"
    r2 = run_cli("run", prog, "--data", csv, "--params", params, "--out", out)
    assert r2.code == 0 and r2.out == "" and out.read_text() == r.out


def test_run_expands_array_outputs_into_columns(run_cli, write_program):
    prog = write_program("param a = 2.0\nv = zeros(2) + a\nM = zeros(2, 2)\nM[1, 0] = 3.0\n"
                         "output v = v\noutput M = M\nloss a\n", "arr.dl")
    r = run_cli("run", prog)
    assert r.code == 0, r.err
    assert r.out.splitlines() == ["loss,v_0,v_1,M_0_0,M_0_1,M_1_0,M_1_1", "2.0,2.0,2.0,0.0,0.0,3.0,0.0"]
