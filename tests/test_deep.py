"""Valid deep and long programs compile and give the right gradient: nesting past what Python
lets one function hold goes into helper functions; long flat sums are not nesting at all. Only
absurd sizes are a located error."""
from __future__ import annotations

import json

import pytest

from dlang.limits import MAX_NESTING


def _grad(run_cli, write_program, text: str, *args: str):
    r = run_cli("grad", write_program(text), "--json", *args)
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_200_nested_ifs_compile_and_pass_the_gradient_check(run_cli, write_program, tmp_path):
    n = 200
    text = ("data u\nparam a = 0.5\nx = a * u\n" + "if u > -1.0 {\n" * n + "x = x * a + sin(x)\n"
            + "}\n" * n + "loss x^2\n")
    csv = tmp_path / "u.csv"
    csv.write_text("u\n0.3\n0.7\n-0.2\n")
    out = _grad(run_cli, write_program, text, "--data", str(csv), "--check")
    assert out["check"]["passed"], out
    # by hand: x = a u, then x a + sin(x), loss mean of x^2
    import math

    def loss(a):
        total = 0.0
        for u in (0.3, 0.7, -0.2):
            x = a * u
            x = x * a + math.sin(x)
            total += x * x
        return total / 3

    assert out["loss"] == pytest.approx(loss(0.5), rel=1e-12)
    assert out["grad"]["a"] == pytest.approx((loss(0.5 + 1e-6) - loss(0.5 - 1e-6)) / 2e-6, rel=1e-6)


def test_30_nested_for_loops_compile_and_pass_the_gradient_check(run_cli, write_program):
    n = 30
    text = ("param a = 0.9\nx = a\n" + "".join(f"for i{k} in 0..2 {{\n" if k == n - 1 else f"for i{k} in 0..1 {{\n"
                                                  for k in range(n))
            + "x = x * 0.999 + 0.001 * a\n" + "}\n" * n + "loss x^2\n")
    out = _grad(run_cli, write_program, text, "--check")
    assert out["check"]["passed"], out
    x = 0.9
    for _ in range(2):
        x = x * 0.999 + 0.001 * 0.9
    assert out["loss"] == pytest.approx(x * x, rel=1e-14)


def test_a_30000_term_flat_sum_differentiates(run_cli, write_program):
    n = 30_000
    out = _grad(run_cli, write_program, "param p = 0.5\nx = p" + " + p" * (n - 1) + "\nloss x\n")
    assert out["loss"] == pytest.approx(0.5 * n, rel=1e-12)
    assert out["grad"]["p"] == n


def test_a_symmetric_start_at_a_tie_of_min_and_max_passes_the_gradient_check(run_cli, write_program, tmp_path):
    """min and max split the derivative evenly at a tie, as central differences do: a
    symmetric start stays symmetric (the first operand took all of it before)."""
    text = ("data x\nparam W[2, 2] = 0.5\n"
            "h = max(W[0, 0], W[0, 1]) * x + min(W[1, 0], W[1, 1]) + clamp(W[1, 1], 0.5, 1.0)\n"
            "v = W @ W\n"
            "loss (h - 1.0)^2 + max(v[0, 0], v[1, 1])\n")
    csv = tmp_path / "x.csv"
    csv.write_text("x\n0.5\n1.5\n")
    out = _grad(run_cli, write_program, text, "--data", str(csv), "--check")
    assert out["check"]["passed"], out
    g = out["grad"]["W"]
    assert g[0][0] == pytest.approx(g[0][1], rel=1e-12)  # the tie split evenly


def test_absurd_nesting_is_a_located_error(run_cli, write_program):
    n = MAX_NESTING + 1
    loops = "".join(f"for i{k} in 0..1 {{\n" for k in range(n))
    path = write_program("param a = 1.0\nx = a\n" + loops + "x = x * a\n" + "}\n" * n + "loss x\n")
    r = run_cli("grad", path)
    assert r.code == 1 and "Traceback" not in r.err
    assert f"{path}:{2 + MAX_NESTING + 1}:1: error: loops and ifs nest more than {MAX_NESTING} deep here" in r.err
