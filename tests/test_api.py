"""The Python API: a notebook-style session through dlang.compile, against the CLI's numbers."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import dlang

from conftest import PROGRAMS, ROOT

SIR = PROGRAMS / "sir.dl"
SIR_CSV = PROGRAMS / "data" / "sir.csv"
LANDING = PROGRAMS / "projectile_landing.dl"
LANDING_CSV = PROGRAMS / "data" / "projectile_landing.csv"


@pytest.fixture(scope="module")
def sir():
    return dlang.compile(SIR), pd.read_csv(SIR_CSV)


def _cli_json(run_cli, *args):
    r = run_cli(*args)
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_a_notebook_session_gives_the_cli_numbers(sir, run_cli, tmp_path, capsys):
    model, df = sir
    assert model.params == {"N": 10000.0, "beta": 0.4, "gamma": 0.2, "i0": 5.0}
    assert model.param_names == ["N", "beta", "gamma", "i0"] and model.data_names == ["day", "infected"]

    loss, grads = model.grad(model.params, df)
    cli = _cli_json(run_cli, "grad", SIR, "--data", SIR_CSV, "--json")
    assert loss == pytest.approx(cli["loss"], rel=1e-12)
    for name, g in cli["grad"].items():
        assert grads[name] == pytest.approx(g, rel=1e-10)
    assert model.loss(None, df) == pytest.approx(loss, rel=1e-12)

    fit = model.fit(df, fix=["N"])
    out, report = tmp_path / "fit.json", tmp_path / "report.json"
    r = run_cli("train", SIR, "--data", SIR_CSV, "--fix", "N", "--out", out, "--report", report)
    assert r.code == 0, r.err
    cli_params, cli_report = json.loads(out.read_text()), json.loads(report.read_text())
    for name, value in cli_params.items():
        assert fit.params[name] == pytest.approx(value, rel=1e-9)
    assert fit.params["N"] == 10000.0  # held exactly
    assert fit.stderr["N"] is None
    for name in ("beta", "gamma", "i0"):
        assert fit.stderr[name] == pytest.approx(cli_report["stderr"][name], rel=1e-6)
        assert fit.table.loc[name, "stderr"] == pytest.approx(cli_report["stderr"][name], rel=1e-6)
    assert fit.report["method"] == cli_report["method"] == "negative log-likelihood"
    assert fit.converged and fit.status == "done"
    # the true params (programs/data/generate.py) within 2%
    for name, true in {"beta": 0.3, "gamma": 0.1, "i0": 10.0}.items():
        assert abs(fit.params[name] - true) <= 0.02 * true, (name, fit.params[name])

    history = fit.history
    assert list(history.columns[:4]) == ["epoch", "loss", "grad_norm", "best_loss"]
    assert history["epoch"].iloc[0] == 0 and history["beta"].iloc[0] == 0.4
    assert history["loss"].iloc[-1] == pytest.approx(fit.loss, rel=1e-12)

    frame = model.run(fit.params, df)
    run_out = tmp_path / "run.csv"
    r = run_cli("run", SIR, "--data", SIR_CSV, "--params", out, "--out", run_out)
    assert r.code == 0, r.err
    cli_run = pd.read_csv(run_out)
    assert list(frame.columns) == list(cli_run.columns) == ["day", "infected", "fitted"]
    np.testing.assert_allclose(frame.to_numpy(), cli_run.to_numpy(), rtol=1e-9)
    assert frame.attrs["loss"] == pytest.approx(fit.loss, rel=1e-9)

    hessian = model.hessian(fit.params, df)
    assert isinstance(hessian, np.ndarray) and hessian.shape == (4, 4)
    assert model.entry_names == model.param_names
    np.testing.assert_allclose(hessian, hessian.T, rtol=1e-9)
    params_file = tmp_path / "at.json"
    params_file.write_text(json.dumps(fit.params))
    cli_h = _cli_json(run_cli, "hessian", SIR, "--data", SIR_CSV, "--params", params_file, "--json")
    assert cli_h["names"] == model.entry_names
    np.testing.assert_allclose(hessian, np.array(cli_h["hessian"]), rtol=1e-9, atol=1e-12)
    free = [1, 2, 3]  # the errors of the fitted params are sqrt(diag(H^-1)) of the run's loss
    cov = np.linalg.inv(hessian[np.ix_(free, free)])
    for k, name in zip(free, ("beta", "gamma", "i0")):
        assert np.sqrt(cov[free.index(k), free.index(k)]) == pytest.approx(fit.stderr[name], rel=1e-6)

    captured = capsys.readouterr()  # the API itself printed nothing (the CLI runs above did)
    assert "FitResult" not in captured.out


def test_the_model_pickles_and_comes_back_in_a_fresh_process(sir, tmp_path):
    model, df = sir
    params = {"N": 10000.0, "beta": 0.31, "gamma": 0.11, "i0": 9.0}
    loss, grads = model.grad(params, df)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    script = (
        "import json, pickle, sys\n"
        "import pandas as pd\n"
        "model = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "loss, grads = model.grad(json.loads(sys.argv[2]), pd.read_csv(sys.argv[3]))\n"
        "print(json.dumps({'loss': loss, 'grads': grads}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model.pkl"), json.dumps(params), str(SIR_CSV)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    there = json.loads(done.stdout)
    assert there["loss"] == pytest.approx(loss, rel=1e-12)
    for name in grads:
        assert there["grads"][name] == pytest.approx(grads[name], rel=1e-12)


def test_data_as_a_dataframe_a_dict_or_a_path_agree(sir):
    model, df = sir
    by_frame = model.loss(None, df)
    by_dict = model.loss(None, {"day": df["day"].to_numpy(), "infected": df["infected"].to_numpy()})
    by_path = model.loss(None, str(SIR_CSV))
    assert by_frame == by_dict == by_path


def test_a_per_row_program_run_and_grad_match_the_cli(run_cli, tmp_path):
    model = dlang.compile(LANDING)
    df = pd.read_csv(LANDING_CSV)
    frame = model.run(None, df)
    out = tmp_path / "run.csv"
    assert run_cli("run", LANDING, "--data", LANDING_CSV, "--out", out).code == 0
    cli_run = pd.read_csv(out)
    for column in cli_run.columns:
        np.testing.assert_allclose(frame[column].to_numpy(), cli_run[column].to_numpy(), rtol=1e-12)
    assert {"v0", "dist"} <= set(frame.columns)
    loss, grads = model.grad(None, df)
    fwd_loss, fwd = model.grad(None, df, mode="forward")
    for name in grads:
        assert fwd[name] == pytest.approx(grads[name], rel=1e-9)
    cli = _cli_json(run_cli, "grad", LANDING, "--data", LANDING_CSV, "--json")
    assert loss == pytest.approx(cli["loss"], rel=1e-12)


def test_fit_reports_each_epoch_to_a_callback_and_shows_a_bar_only_when_asked(capsys):
    model = dlang.compile_source("data x, y\nparam a = 0.0\nparam b = 0.0\nloss (a * x + b - y)^2\n")
    x = np.linspace(0, 1, 50)
    data = {"x": x, "y": 2.0 * x + 0.5}
    seen = []
    fit = model.fit(data, on_epoch=seen.append)
    assert [e.epoch for e in seen] == list(range(1, fit.epochs + 1))
    assert fit.params["a"] == pytest.approx(2.0, abs=1e-6) and fit.params["b"] == pytest.approx(0.5, abs=1e-6)
    assert capsys.readouterr().err == ""
    model.fit(data, optimizer="adam", epochs=5, progress=True)
    assert "epoch" in capsys.readouterr().err


def test_fit_with_several_starts_and_bounds():
    model = dlang.compile_source("data x\nparam k = 0.5 in (0, 10)\nloss (sin(k * x) - sin(3.0 * x))^2\n")
    x = np.linspace(0.1, 3, 40)
    fit = model.fit({"x": x}, starts=4)
    assert fit.starts["n"] == 4
    assert fit.params["k"] == pytest.approx(3.0, abs=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda m, d: m.grad({"bta": 1.0}, d), "the program has no param 'bta'; did you mean 'beta'?"),
    (lambda m, d: m.grad({"beta": "x"}, d), "param 'beta'"),
    (lambda m, d: m.grad({"beta": -1.0}, d), "param 'beta' must stay inside its bounds"),
    (lambda m, d: m.loss(None, d.rename(columns={"infected": "cases"})), "no column 'infected'"),
    (lambda m, d: m.loss(None, d.assign(infected=np.where(d["day"] == 3, np.nan, d["infected"]))),
     "row 4, column 'infected': nan is not a finite number"),
    (lambda m, d: m.loss(None, None), "the program reads data (day, infected)"),
    (lambda m, d: m.loss(None, [1, 2]), "data must be a pandas DataFrame"),
    (lambda m, d: m.fit(d, optimizer="newton"), "--optimizer 'newton'"),
    (lambda m, d: m.fit(d, fix=["M"]), "the program has no param 'M'"),
    (lambda m, d: m.grad(None, d, mode="sideways"), "mode must be one of reverse, forward"),
])
def test_user_errors_are_dlang_errors(sir, call, message):
    model, df = sir
    with pytest.raises(dlang.DlangError) as err:
        call(model, df)
    assert message in str(err.value)


def test_a_program_error_has_its_place():
    with pytest.raises(dlang.DlangError) as err:
        dlang.compile_source("param a = 1.0\nloss b * a\n", name="mine.dl")
    assert "mine.dl:2:6: error: unknown name 'b'" in str(err.value)
    with pytest.raises(dlang.DlangError) as err:
        dlang.compile(ROOT / "no_such_program.dl")
    assert "no such file" in str(err.value)


def test_consts_and_a_program_without_data():
    model = dlang.compile(PROGRAMS / "sir.dl", consts={"days": 150})
    assert model.program.consts and dict(model.program.consts)["days"] == 150
    chain = dlang.compile(PROGRAMS / "hanging_chain.dl")
    loss, grads = chain.grad()
    assert np.isfinite(loss) and set(grads) == set(chain.param_names)


def test_importing_dlang_loads_neither_numpy_numba_nor_the_parser():
    done = subprocess.run([sys.executable, "-c", "import sys, dlang; print(sorted(m for m in "
                           "('numpy', 'numba', 'lark', 'pandas', 'scipy', 'rich', 'typer') if m in sys.modules))"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
