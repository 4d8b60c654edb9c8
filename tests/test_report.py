"""The fit report (dlang/report.py): standard errors, correlations and fit statistics at the
fitted params, against independent computations in NumPy: ordinary least squares, Gauss-Newton
with a hand-written Jacobian for a nonlinear model, and the Hessian path against the
least-squares path on a Gaussian negative log-likelihood written by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dlang.commands import prepare
from dlang.frontend import compile_source
from dlang.pipeline import compile_kernels
from dlang.report import fit_report, report_json, squared_terms

from conftest import PROGRAMS


def test_linear_least_squares_matches_ordinary_least_squares():
    p = prepare(str(PROGRAMS / "scaling.dl"), str(PROGRAMS / "data" / "scaling.csv"), None)
    raw, ref = p.data[:, 0], p.data[:, 1]
    X = np.column_stack([raw, np.ones_like(raw)])
    beta = np.linalg.lstsq(X, ref, rcond=None)[0]
    res = ref - X @ beta
    s2 = res @ res / (len(ref) - 2)
    cov = s2 * np.linalg.inv(X.T @ X)
    r = fit_report(p.kernels, p.data, {"scale": beta[0], "offset": beta[1]})
    assert r.method == "least squares" and r.residuals == 200 and r.dof == 198
    assert r.stderr["scale"] == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-9)
    assert r.stderr["offset"] == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-9)
    assert r.correlation[0, 1] == pytest.approx(cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1]), rel=1e-9)
    assert r.chi2 == pytest.approx(res @ res, rel=1e-9)
    assert r.r2 == pytest.approx(1 - res @ res / np.sum((ref - ref.mean()) ** 2), rel=1e-12)
    m = 200
    assert r.aic == pytest.approx(m * math.log(res @ res / m) + 4, rel=1e-9)
    assert r.bic == pytest.approx(m * math.log(res @ res / m) + 2 * math.log(m), rel=1e-9)


DECAY = """
data t, y
param a = 1.0
param k = 0.5
loss 2.0 * (a * exp(-k * t) - y)^2     # a constant weight: residuals sqrt(2) (model - y)
"""


def test_nonlinear_least_squares_matches_gauss_newton_by_hand():
    rng = np.random.default_rng(3)
    t = np.linspace(0, 4, 60)
    y = 2.0 * np.exp(-0.7 * t) + rng.normal(0, 0.02, t.size)
    prog = compile_source(DECAY, "decay.dl")
    kernels = compile_kernels(prog)
    data = np.column_stack([t, y])
    a, k = 2.0, 0.7  # Gauss-Newton to the optimum, with the Jacobian written by hand
    for _ in range(50):
        f = a * np.exp(-k * t)
        J = np.sqrt(2.0) * np.column_stack([np.exp(-k * t), -a * t * np.exp(-k * t)])
        r = np.sqrt(2.0) * (f - y)
        step = np.linalg.solve(J.T @ J, -J.T @ r)
        a, k = a + step[0], k + step[1]
    f = a * np.exp(-k * t)
    J = np.sqrt(2.0) * np.column_stack([np.exp(-k * t), -a * t * np.exp(-k * t)])
    r = np.sqrt(2.0) * (f - y)
    cov = (r @ r / (t.size - 2)) * np.linalg.inv(J.T @ J)
    rep = fit_report(kernels, data, {"a": a, "k": k})
    assert rep.stderr["a"] == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-6)
    assert rep.stderr["k"] == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-6)
    assert rep.sigma == pytest.approx(math.sqrt(r @ r / (t.size - 2)), rel=1e-9)
    assert rep.r2 is not None and rep.r2 > 0.99  # each residual is model - data column y


LINE_LS = "data x, y\nparam a = 0.0\nparam b = 0.0\nloss (y - a * x - b)^2\n"
LINE_NLL = ("data x, y\nparam a = 0.0\nparam b = 0.0\nconst sigma2 = SIGMA2\n"
            "e = y - a * x - b\nloss 0.5 * e * e / sigma2 + 0.5 * log(sigma2)\n")


def test_the_hessian_path_agrees_with_least_squares_on_a_gaussian_likelihood():
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 2, 80)
    y = 1.5 * x - 0.3 + rng.normal(0, 0.1, x.size)
    data = np.column_stack([x, y])
    X = np.column_stack([x, np.ones_like(x)])
    a, b = np.linalg.lstsq(X, y, rcond=None)[0]
    ls = fit_report(compile_kernels(compile_source(LINE_LS, "ls.dl")), data, {"a": a, "b": b})
    s2 = ls.chi2 / ls.dof
    nll_prog = compile_source(LINE_NLL.replace("SIGMA2", repr(float(s2))), "nll.dl")
    assert squared_terms(nll_prog) is None
    nll = fit_report(compile_kernels(nll_prog), data, {"a": a, "b": b})
    assert nll.method == "negative log-likelihood" and ls.method == "least squares"
    for name in ("a", "b"):
        assert nll.stderr[name] == pytest.approx(ls.stderr[name], rel=1e-8)
    assert nll.correlation[0, 1] == pytest.approx(ls.correlation[0, 1], rel=1e-8)


def test_unidentifiable_params_get_a_warning_and_no_errors():
    prog = compile_source("data x, y\nparam a = 1.0\nparam b = 1.0\nloss (a * b * x - y)^2\n", "ab.dl")
    data = np.column_stack([np.linspace(0, 1, 20), 2.0 * np.linspace(0, 1, 20)])
    rep = fit_report(compile_kernels(prog), data, {"a": 1.0, "b": 2.0})
    assert rep.stderr is None and rep.correlation is None
    assert any("cannot be estimated" in w and "'a'" in w and "'b'" in w for w in rep.warnings)


def test_train_prints_errors_and_writes_the_report(run_cli, tmp_path):
    out, report = tmp_path / "fit.json", tmp_path / "report.json"
    r = run_cli("train", PROGRAMS / "scaling.dl", "--data", PROGRAMS / "data" / "scaling.csv", "--out", out,
                "--report", report)
    assert r.code == 0, r.err
    assert "± stderr" in r.out and "least squares: 200 residuals, 198 degrees of freedom" in r.out
    got = json.loads(report.read_text())
    assert set(got) >= {"params", "stderr", "correlation", "loss", "rows", "residuals", "dof", "sigma", "chi2",
                        "aic", "bic", "r2", "converged", "stopped", "warnings"}
    assert got["correlation"]["names"] == ["scale", "offset"] and got["converged"] is True
    assert got["params"] == json.loads(out.read_text())
    j = run_cli("train", PROGRAMS / "scaling.dl", "--data", PROGRAMS / "data" / "scaling.csv", "--out", out,
                "--json")
    final = json.loads(j.out.strip().splitlines()[-1])
    assert final["report"]["stderr"]["scale"] == pytest.approx(got["stderr"]["scale"], rel=1e-6)


def test_a_likelihood_fit_says_where_its_errors_come_from(run_cli, tmp_path):
    r = run_cli("train", PROGRAMS / "logistic_regression.dl", "--data", PROGRAMS / "data" / "logistic_regression.csv",
                "--out", tmp_path / "fit.json")
    assert r.code == 0, r.err
    assert "negative log-likelihood" in r.out and "± stderr" in r.out


def test_report_path_must_be_writable(run_cli, tmp_path):
    r = run_cli("train", PROGRAMS / "scaling.dl", "--data", PROGRAMS / "data" / "scaling.csv", "--out",
                tmp_path / "fit.json", "--report", tmp_path / "missing" / "r.json")
    assert r.code == 1 and "--report" in r.err and "does not exist" in r.err


def test_report_json_has_no_nan():
    p = prepare(str(PROGRAMS / "scaling.dl"), str(PROGRAMS / "data" / "scaling.csv"), None)
    text = json.dumps(report_json(fit_report(p.kernels, p.data, p.params)), allow_nan=False)
    assert "stderr" in text


def test_fix_holds_a_param_at_its_start_and_the_report_counts_only_the_others(run_cli, tmp_path):
    out, report = tmp_path / "fit.json", tmp_path / "report.json"
    init = tmp_path / "init.json"
    init.write_text('{"offset": -0.25}')
    r = run_cli("train", PROGRAMS / "scaling.dl", "--data", PROGRAMS / "data" / "scaling.csv", "--out", out,
                "--init", init, "--fix", "offset", "--report", report)
    assert r.code == 0, r.err
    fitted = json.loads(out.read_text())
    assert fitted["offset"] == -0.25 and fitted["scale"] != 1.0
    got = json.loads(report.read_text())
    assert got["stderr"]["offset"] is None and got["stderr"]["scale"] > 0
    assert got["dof"] == 199 and got["correlation"]["names"] == ["scale"]
    # the free param is the least-squares fit with the other held: scale = sum(x (y - b)) / sum(x^2)
    p = prepare(str(PROGRAMS / "scaling.dl"), str(PROGRAMS / "data" / "scaling.csv"), None)
    x, y = p.data[:, 0], p.data[:, 1]
    assert fitted["scale"] == pytest.approx(np.sum(x * (y + 0.25)) / np.sum(x * x), rel=1e-6)
    assert "fixed" in r.out


def test_fix_names_a_param_of_the_program(run_cli):
    r = run_cli("train", PROGRAMS / "scaling.dl", "--data", PROGRAMS / "data" / "scaling.csv", "--fix", "ofset")
    assert r.code == 1 and "--fix ofset: the program has no param 'ofset'; did you mean 'offset'?" in r.err


# ---- predictions: dlang run on data without the loss's columns -----------------------------------------

def test_run_predicts_outputs_on_data_without_the_target_column(run_cli, tmp_path):
    csv = tmp_path / "new.csv"
    csv.write_text("v0\n20.0\n25.5\n")
    params = tmp_path / "p.json"
    params.write_text('{"drag": 0.05, "angle": 0.45}')
    r = run_cli("run", PROGRAMS / "projectile_landing.dl", "--data", csv, "--params", params)
    assert r.code == 0, r.err
    lines = r.out.strip().splitlines()
    assert lines[0] == "v0,landing"  # the input column kept, the loss left out
    assert [float(line.split(",")[0]) for line in lines[1:]] == [20.0, 25.5]
    assert "predicting: the data have no column for dist, which only the loss reads" in r.err
    # the same landing as a full run on data with a target
    full = tmp_path / "full.csv"
    full.write_text("v0,dist\n20.0,1.0\n25.5,1.0\n")
    f = run_cli("run", PROGRAMS / "projectile_landing.dl", "--data", full, "--params", params)
    want = [float(line.split(",")[1]) for line in f.out.strip().splitlines()[1:]]
    got = [float(line.split(",")[1]) for line in lines[1:]]
    assert got == pytest.approx(want, rel=1e-14)


def test_a_column_an_output_needs_is_still_an_error(run_cli, tmp_path):
    csv = tmp_path / "new.csv"
    csv.write_text("dist\n20.0\n")
    r = run_cli("run", PROGRAMS / "projectile_landing.dl", "--data", csv)
    assert r.code == 1 and "no column 'v0'" in r.err


# ---- multi-start ------------------------------------------------------------------------------------------

TWO_MINIMA = "param a = 0.8\nloss (a * a - 1.0)^2 + 0.3 * a    # minima near a = 1 (local) and a = -1 (global)\n"


def test_starts_find_the_global_minimum_and_say_how_many_reached_it(run_cli, write_program, tmp_path):
    prog = write_program(TWO_MINIMA)
    one = tmp_path / "one.json"
    assert run_cli("train", prog, "--out", one).code == 0
    assert json.loads(one.read_text())["a"] > 0  # from its start, the local minimum
    out = tmp_path / "many.json"
    r = run_cli("train", prog, "--starts", "8", "--out", out, "--json")
    assert r.code == 0, r.err
    final = json.loads(r.out.strip().splitlines()[-1])
    a = json.loads(out.read_text())["a"]
    assert a < 0 and (a * a - 1) * 4 * a + 0.3 == pytest.approx(0, abs=1e-6)  # the global minimum
    starts = final["starts"]
    assert starts["n"] == 8 and 1 <= starts["reached"] < 8 and len(starts["losses"]) == 8
    assert min(starts["losses"]) == pytest.approx(final["loss"], rel=1e-9)
    table = run_cli("train", prog, "--starts", "8", "--out", out)
    assert "8 starts: " in table.out and "reached the best loss" in table.out and "the others ended at" in table.out


def test_starts_must_be_positive(run_cli, write_program):
    r = run_cli("train", write_program(TWO_MINIMA), "--starts", "0")
    assert r.code == 1 and "--starts must be at least 1" in r.err


# ---- --optimizer lm ------------------------------------------------------------------------------------

def test_lm_fits_least_squares_to_the_exact_optimum(run_cli, tmp_path):
    out = tmp_path / "fit.json"
    r = run_cli("train", PROGRAMS / "scaling.dl", "--data", PROGRAMS / "data" / "scaling.csv", "--optimizer", "lm",
                "--out", out)
    assert r.code == 0, r.err
    p = prepare(str(PROGRAMS / "scaling.dl"), str(PROGRAMS / "data" / "scaling.csv"), None)
    X = np.column_stack([p.data[:, 0], np.ones(p.data.shape[0])])
    beta = np.linalg.lstsq(X, p.data[:, 1], rcond=None)[0]
    fitted = json.loads(out.read_text())
    assert fitted["scale"] == pytest.approx(beta[0], rel=1e-6) and fitted["offset"] == pytest.approx(beta[1], rel=1e-6)
    assert "± stderr" in r.out


def test_lm_fits_a_simulator_with_events(run_cli, tmp_path):
    """The contract's projectile: lm works on the residuals of its event program."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen", PROGRAMS / "events" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.write(tmp_path)
    out = tmp_path / "fit.json"
    r = run_cli("train", PROGRAMS / "projectile.dl", "--data", tmp_path / "projectile.csv", "--optimizer", "lm",
                "--out", out)
    assert r.code == 0, r.err
    fitted = json.loads(out.read_text())
    assert fitted["drag"] == pytest.approx(0.05, rel=0.02) and fitted["angle"] == pytest.approx(0.8, rel=0.02)


def test_lm_needs_a_sum_of_squares(run_cli):
    r = run_cli("train", PROGRAMS / "logistic_regression.dl", "--data", PROGRAMS / "data" / "logistic_regression.csv",
                "--optimizer", "lm")
    assert r.code == 1 and "--optimizer lm needs a loss that is a square or a sum of squares" in r.err
    r = run_cli("train", PROGRAMS / "scaling.dl", "--data", PROGRAMS / "data" / "scaling.csv", "--optimizer", "lm",
                "--lr", "0.1")
    assert r.code == 1 and "--lr works with --optimizer adam or sgd" in r.err


def test_params_and_errors_agree_with_scipy_least_squares_on_a_simulator(run_cli, tmp_path):
    """An independent reference: SciPy's least_squares on the same discretized model (a damped
    spring stepped by semi-implicit Euler, written in NumPy), its Jacobian by its own finite
    differences; dlang's fitted params to 1e-6, its standard errors within 1%."""
    from scipy.optimize import least_squares

    source = """
const dt = 0.01
data t_obs, x_obs
param k = 3.0
param c = 0.2
x = 1.0
v = 0.0
for i in 0..300 {
    if dt * i < t_obs {
        v -= dt * (k * x + c * v)
        x += dt * v
    }
}
output position = x
loss (x - x_obs)^2
"""
    path = tmp_path / "spring.dl"
    path.write_text(source)

    def simulate(k, c, t_obs):
        out = []
        for t in t_obs:
            x, v = 1.0, 0.0
            for i in range(300):
                if 0.01 * i < t:
                    v -= 0.01 * (k * x + c * v)
                    x += 0.01 * v
            out.append(x)
        return np.array(out)

    rng = np.random.default_rng(11)
    t_obs = np.round(rng.uniform(0.2, 2.9, 40), 3) + 0.0005  # away from the step boundaries
    x_obs = simulate(4.0, 0.3, t_obs) + rng.normal(0, 0.01, t_obs.size)
    csv = tmp_path / "spring.csv"
    csv.write_text("t_obs,x_obs\n" + "\n".join(f"{float(a)!r},{float(b)!r}" for a, b in zip(t_obs, x_obs)) + "\n")
    ref = least_squares(lambda p: simulate(p[0], p[1], t_obs) - x_obs, [3.0, 0.2], method="trf", xtol=1e-14,
                        ftol=1e-14, gtol=1e-14, diff_step=1e-7)
    J = ref.jac
    s2 = 2 * ref.cost / (t_obs.size - 2)
    se = np.sqrt(np.diag(s2 * np.linalg.inv(J.T @ J)))
    out, report = tmp_path / "fit.json", tmp_path / "report.json"
    r = run_cli("train", path, "--data", csv, "--out", out, "--report", report, "--optimizer", "lm")
    assert r.code == 0, r.err
    fitted, rep = json.loads(out.read_text()), json.loads(report.read_text())
    assert fitted["k"] == pytest.approx(ref.x[0], rel=1e-6) and fitted["c"] == pytest.approx(ref.x[1], rel=1e-6)
    assert rep["stderr"]["k"] == pytest.approx(se[0], rel=0.01) and rep["stderr"]["c"] == pytest.approx(se[1], rel=0.01)


def test_a_real_data_fit_lynx_and_hare(run_cli, tmp_path):
    """programs/real: Lotka-Volterra on the Hudson's Bay pelts (docs/training.md's example)."""
    out, report = tmp_path / "lv.json", tmp_path / "lv_report.json"
    r = run_cli("train", PROGRAMS / "real" / "lotka_volterra.dl", "--data", PROGRAMS / "real" / "hudson_bay.csv",
                "--out", out, "--report", report)
    assert r.code == 0, r.err
    fitted, rep = json.loads(out.read_text()), json.loads(report.read_text())
    # near the posterior means of the Stan case study on the same data
    for k, v in {"alpha": 0.55, "beta": 0.028, "gamma": 0.80, "delta": 0.024}.items():
        assert fitted[k] == pytest.approx(v, rel=0.1), (k, fitted[k])
    assert rep["residuals"] == 42 and rep["dof"] == 36 and rep["method"] == "least squares"
    assert all(0 < rep["stderr"][k] < 0.2 * fitted[k] for k in ("alpha", "beta", "gamma", "delta"))


def test_a_likelihood_with_too_many_params_gets_no_hessian(monkeypatch):
    from dlang import report

    monkeypatch.setattr(report, "HESSIAN_MAX_ENTRIES", 10)
    p = prepare(str(PROGRAMS / "mlp.dl"), str(PROGRAMS / "data" / "mlp.csv"), None)
    rep = fit_report(p.kernels, p.data, p.params)
    assert rep.method == "negative log-likelihood" and rep.stderr is None and math.isfinite(rep.aic)
    assert any("21 params fitted: the Hessian is not formed" in w for w in rep.warnings)
