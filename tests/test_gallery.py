"""The training gallery: every gallery program, trained by `dlang train` with its default options
from its starting params, recovers the params its data set was drawn from.

The true params are TRUE_PARAMS in programs/data/generate.py, which writes each CSV from them
plus seeded noise. Each tolerance below is stated with the standard error (SE) that the noise
allows: the SE of the best fit, from the curvature of the loss at the optimum and the noise
level, and the error of the exact optimum of the committed data set, found with L-BFGS. Every
tolerance is several SEs wide, so that it also leaves room for an optimizer that stops a little
short of the exact optimum, but narrow enough that a fit stuck on the way from the start fails
(`test_the_start_is_outside_every_tolerance` checks that the start is not already a pass).

builtins_tour is not in the gallery: its fifteen features are smooth functions of one input
over a short range, so their weights are not identifiable. hanging_chain has no data.

projectile (the program of the language contract, kept as written): its landing distance is x
at the first step below ground, so its exact derivative with respect to the angle leaves out
the change of the flight time; `dlang train` follows the event-aware gradient by default
(docs/events.md) and recovers both params. projectile_landing interpolates to y = 0 itself.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass

import numpy as np
import pytest

from dlang.frontend import load_program
from dlang.interp import initial_params

from conftest import PROGRAMS

DATA = PROGRAMS / "data"


def _load_generator():
    spec = importlib.util.spec_from_file_location("dlang_gallery_data", DATA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRUE_PARAMS = _load_generator().TRUE_PARAMS


@dataclass(frozen=True)
class Tol:
    """|fitted - true| <= abs + rel * |true|, for every element."""
    abs: float = 0.0
    rel: float = 0.0


TOLERANCES: dict[str, dict[str, Tol]] = {
    # 100 landing distances, noise sd 0.05 m. SE: drag 0.00013 (0.26%), angle 0.0014 (0.32%);
    # the exact optimum is off by 0.2% and 0.15%. The issue asks for 2% (7 SE or more).
    "projectile_landing": {"drag": Tol(rel=0.02), "angle": Tol(rel=0.02)},
    # 100 sightings, noise sd 0.01 m. SE: e 0.00026, g 0.009; the optimum is off by 0.0002 and
    # 0.004. 1% of each (e 0.008, g 0.098) is 30 and 11 SE: room for a fit stopped early.
    "bouncing_ball": {"e": Tol(rel=0.01), "g": Tol(rel=0.01)},
    # 100 rows, 8 unit-variance features, noise sd 0.1: SE about 0.011 for every weight and the
    # bias (sd / sqrt(rows)); the optimum's largest error is 0.020 (w[4], 2.2 SE); the ridge
    # penalty (1e-3 / 8) shrinks the weights by about 1e-4, nothing. 0.05 is 4.5 SE.
    "linear_regression": {"w": Tol(abs=0.05), "b": Tol(abs=0.05)},
    # 1000 labels drawn with probability sigmoid(z): 0/1 labels carry little information, so even
    # 1000 rows give SE 0.27 (w_width), 0.40 (w_weight), 0.09 (bias); the optimum is off by
    # 0.22, 0.02 and 0.12. The tolerances are about 3.7 SE.
    "logistic_regression": {
        "w_width": Tol(abs=1.0), "w_weight": Tol(abs=1.5), "bias": Tol(abs=0.35),
    },
    # 30 runs seen 5 times each, noise sd 0.01 m. SE: k 0.0038, c 0.0019; the optimum is off by
    # 0.003 and 0.0005 (the weak prior on the period moves it by far less). 1% of k (10 SE) and
    # 0.01 on c (5 SE).
    "oscillator": {"k": Tol(rel=0.01), "c": Tol(abs=0.01)},
    # 60 patches, 9 targets each, noise sd 0.01: SE 0.0014 for every tap; the optimum's largest
    # error is 0.0011. 0.01 is 7 SE. (The true filter sums to 1, so the brightness penalty
    # does not bias it.)
    "image_filter": {"k": Tol(abs=0.01)},
    # 200 readings over 0.5-3 V, noise sd 0.02 m. SE: scale 0.002, offset 0.0039 (strongly
    # correlated); the optimum is off by 0.004 and 0.010 (2 and 2.5 SE, one draw of the pair).
    # 0.02 and 0.04 are 10 SE.
    "scaling": {"scale": Tol(abs=0.02), "offset": Tol(abs=0.04)},
    # 200 landing distances, noise sd 0.05 m, the program's loss a staircase in the params: the
    # event-aware fit is within 0.6% (drag) and 1% (angle); the issue asks for 2%.
    "projectile": {"drag": Tol(rel=0.02), "angle": Tol(rel=0.02)},
    # 1000 alarms drawn with probability sigmoid((reading - 0.6) / 0.1): the exact optimum of the
    # committed data is off by 0.008 (threshold) and 0.016 (width), about 1 SE each (0/1 labels
    # carry little information). 0.03 and 0.04 leave room for a fit stopped early.
    "soft_threshold": {"threshold": Tol(abs=0.03), "width": Tol(abs=0.04)},
    # 100 daily counts of the infected, drawn Poisson around the model's (peak about 3,000), the
    # data read as whole columns (the body runs once). With the population N known (--fix N),
    # SE: beta 0.0009 (0.3%), gamma 0.00027 (0.3%), i0 0.25 (2.5%); the optimum is off by 0.13%,
    # 0.39% and 0.87%. The issue asks for 2% (for i0 only 0.8 SE: it holds for this draw).
    "sir": {"beta": Tol(rel=0.02), "gamma": Tol(rel=0.02), "i0": Tol(rel=0.02)},
    # mlp: see MLP below; a network's weights are not identifiable, its predictions are.
}

# Params a gallery program's fit holds at their (true) starting values, as a user who knows them would.
FIXED = {"sir": ["N"]}


# ---- mlp: judged by its loss and its predictions ---------------------------------------------

# The hidden units of a network can be permuted and negated (tanh is odd) without changing what
# it computes, so its weights are not identifiable and the mlp is judged on what it computes.
# Its labels are +1 with probability sigmoid(teacher's score), the model whose negative
# log-likelihood mlp.dl minimises, so the teacher's loss on the data is the noise floor:
#   - the trained loss must reach it: at most 0.01 above the loss at the true params. The exact
#     optimum is 0.026 below it (a fit to this draw of the noise); the start is 0.35 above it.
#   - and not fall absurdly far below it (0.06: twice the optimum's overfit), a sanity check.
#   - on 20,000 fresh points the predicted probability is within 0.1 of the teacher's on average
#     (the exact optimum: 0.05; the start: 0.38), and the predicted class (the sign of the score)
#     agrees with the teacher's on at least 90% of them (the optimum: 95%; the start: 24%).
MLP = {"loss_above_floor": 0.01, "loss_below_floor": 0.06, "mean_prob_error": 0.1,
       "sign_agreement": 0.9}
MLP_DECAY = 1e-3  # the program's weight decay on W1


def _mlp_score(p: dict, x: np.ndarray) -> np.ndarray:
    W1, b1 = np.asarray(p["W1"], float), np.asarray(p["b1"], float)
    w2, b2 = np.asarray(p["w2"], float), float(p["b2"])
    return np.tanh(x @ W1.T + b1) @ w2 + b2


def _mlp_loss(p: dict) -> float:
    """mlp.dl's mean loss on its data, computed here with NumPy."""
    rows = np.loadtxt(DATA / "mlp.csv", delimiter=",", skiprows=1)
    x, label = rows[:, :3], rows[:, 3]
    margin = label * _mlp_score(p, x)
    decay = MLP_DECAY * float(np.sum(np.asarray(p["W1"], float) ** 2))
    return float(np.mean(np.logaddexp(0.0, -margin))) + decay


def _mlp_problems(p: dict) -> list[str]:
    """What is wrong with a fitted mlp, by the criteria above (empty when it passes)."""
    true = TRUE_PARAMS["mlp"]
    floor, loss = _mlp_loss(true), _mlp_loss(p)
    fresh = np.random.default_rng(2024).uniform(-1.0, 1.0, size=(20_000, 3))
    s, s_true = _mlp_score(p, fresh), _mlp_score(true, fresh)
    prob_error = float(np.mean(np.abs(1.0 / (1.0 + np.exp(-s)) - 1.0 / (1.0 + np.exp(-s_true)))))
    agreement = float(np.mean(np.sign(s) == np.sign(s_true)))
    problems = []
    if loss > floor + MLP["loss_above_floor"]:
        problems.append(f"loss {loss:.4f}: more than {MLP['loss_above_floor']} above the noise floor {floor:.4f}")
    if loss < floor - MLP["loss_below_floor"]:
        problems.append(f"loss {loss:.4f}: more than {MLP['loss_below_floor']} below the noise floor {floor:.4f}")
    if prob_error > MLP["mean_prob_error"]:
        problems.append(f"predicted probabilities are {prob_error:.3f} from the teacher's on average")
    if agreement < MLP["sign_agreement"]:
        problems.append(f"the predicted class agrees with the teacher's on {agreement:.1%} of fresh points")
    return problems


# ---- helpers ---------------------------------------------------------------------------------

GALLERY = sorted([*TOLERANCES, "mlp"])


def _misses(name: str, fitted: dict) -> list[str]:
    """Each param element outside its tolerance, as a readable line (empty when all pass)."""
    lines = []
    for param, tol in TOLERANCES[name].items():
        true = np.asarray(TRUE_PARAMS[name][param], float)
        got = np.asarray(fitted[param], float)
        assert got.shape == true.shape, f"{name}.{param}: shape {got.shape}, expected {true.shape}"
        allowed = tol.abs + tol.rel * np.abs(true)
        bad = np.abs(got - true) > allowed
        for idx in zip(*np.nonzero(np.atleast_1d(bad))):
            where = f"{param}[{', '.join(map(str, idx))}]" if true.ndim else param
            g, t = np.atleast_1d(got)[idx], np.atleast_1d(true)[idx]
            a = np.atleast_1d(allowed)[idx]
            lines.append(f"{name}.{where} = {g:.6g}, true {t:.6g}: off by {abs(g - t):.3g}, more than {a:.3g}")
    return lines


def _start(name: str) -> dict:
    return initial_params(load_program(str(PROGRAMS / f"{name}.dl")))


# ---- tests -----------------------------------------------------------------------------------

def test_every_generated_program_is_in_the_gallery_or_excused():
    assert set(TRUE_PARAMS) - set(GALLERY) == {"builtins_tour"}
    for name in TOLERANCES:
        assert set(TOLERANCES[name]) | set(FIXED.get(name, [])) == set(TRUE_PARAMS[name]), name
        assert set(_start(name)) == set(TRUE_PARAMS[name]), name


@pytest.mark.parametrize("name", sorted(TOLERANCES))
def test_the_start_is_outside_every_tolerance(name):
    # training has work to do for every param: each starts outside its tolerance of the truth
    missed = {line.split(" ")[0].split("[")[0] for line in _misses(name, _start(name))}
    assert missed == {f"{name}.{param}" for param in TOLERANCES[name]}


def test_the_mlp_start_fails_and_the_teacher_passes():
    assert _mlp_problems(_start("mlp"))
    assert not _mlp_problems(TRUE_PARAMS["mlp"])


@pytest.mark.parametrize("name", GALLERY)
def test_training_with_default_options_recovers_the_true_params(run_cli, tmp_path, name):
    out = tmp_path / "p.json"
    fix = [arg for param in FIXED.get(name, []) for arg in ("--fix", param)]
    r = run_cli("train", PROGRAMS / f"{name}.dl", "--data", DATA / f"{name}.csv", "--out", str(out), *fix)
    assert r.code == 0, r.out + r.err
    fitted = json.loads(out.read_text())
    assert set(fitted) == set(TRUE_PARAMS[name])
    for param in FIXED.get(name, []):
        assert fitted[param] == TRUE_PARAMS[name][param] == _start(name)[param]
    problems = _mlp_problems(fitted) if name == "mlp" else _misses(name, fitted)
    assert not problems, "\n".join(problems)


def test_spec_projectile_training_lowers_its_loss(run_cli, tmp_path):
    """The contract's projectile trains (its loss falls by far), though its angle is not identified."""
    out = tmp_path / "p.json"
    prog, csv = PROGRAMS / "projectile.dl", DATA / "projectile.csv"
    r = run_cli("train", prog, "--data", csv, "--out", out, "--json")
    assert r.code == 0, r.err
    lines = [json.loads(line) for line in r.out.strip().splitlines()]
    first, final = lines[0]["loss"], lines[-1]["loss"]
    assert final < first / 20, (first, final)
    fitted = json.loads(out.read_text())
    assert abs(fitted["drag"] - TRUE_PARAMS["projectile"]["drag"]) < 0.5 * 0.05  # drag moves most of the way
