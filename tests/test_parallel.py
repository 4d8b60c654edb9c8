"""The parallel kernels give the serial kernels' results, bit for bit, on every program.

From abi.parallel_min_rows() rows on (2,048 by default; $DLANG_PARALLEL_MIN_ROWS lowers it, as
these tests do) the rows are split into 64 chunks, each the serial kernel's call on its rows,
run in parallel (prange) or in order on one thread, and summed in chunk order. The programs of
issue 10's defect 0 (wrong gradients from 2,048 rows on, a segfault, a RecursionError inside
Numba) are here with their true gradients; every gallery program and fuzzed programs
(tests/test_fuzz.py) are run through both paths.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import pytest

from dlang.abi import PARALLEL_ENV, PARALLEL_SECONDS_ENV
from dlang.data import load_data
from dlang.frontend import compile_source

from conftest import load_program
from dlang.interp import grad_row
from dlang.data import read_rows
from dlang.ir import initial_params
from dlang.pipeline import compile_kernels

from conftest import PROGRAMS
from test_ad import assert_grads_close, richardson_fd

TWO_THREADS = numba.config.NUMBA_NUM_THREADS >= 2
needs_two = pytest.mark.skipif(not TWO_THREADS, reason="one CPU: no second thread to compare with")


@pytest.fixture(autouse=True)
def _every_chunked_call_parallel(monkeypatch):
    """With two threads, every chunked call runs in parallel, however little its work."""
    monkeypatch.setenv(PARALLEL_SECONDS_ENV, "0")


def run_both(kernels, data, params, monkeypatch, min_rows: int = 2):
    """(grad, forward rows) with 1 thread and with 2, the chunked path from min_rows rows on
    (in parallel with 2 threads, however little the work)."""
    monkeypatch.setenv(PARALLEL_ENV, str(min_rows))
    monkeypatch.setenv(PARALLEL_SECONDS_ENV, "0")
    before = numba.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            out.append((kernels.grad(data, params), kernels.forward_rows(data, params)))
    finally:
        numba.set_num_threads(before)
    return out


def assert_bitwise(one, two, what: str) -> None:
    (loss1, g1), (losses1, outs1) = one
    (loss2, g2), (losses2, outs2) = two
    assert loss1 == loss2 or (math.isnan(loss1) and math.isnan(loss2)), what
    for k in g1:
        assert np.array_equal(g1[k], g2[k], equal_nan=True), (what, k, g1[k], g2[k])
    assert np.array_equal(losses1, losses2, equal_nan=True), what
    assert np.array_equal(outs1, outs2, equal_nan=True), what


# ---- the programs that went wrong ------------------------------------------------------------------

LOOP_CARRIED = """
data y
param a = 0.5
s = zeros(2) + y
for k in 0..3 { s = s * a }
loss sum(s)
"""

RK_STEPS = """
data y
param a = 0.3
param b = 0.2
fn deriv(s) {
    d = zeros(2)
    d[0] = s[1]
    d[1] = -a * s[0] - b * s[1]
    return d
}
s = zeros(2)
s[0] = y
total = 0.0
for j in 0..6 {
    for i in 0..40 {
        k1 = deriv(s)
        k2 = deriv(s + 0.0125 * k1)
        s = s + 0.025 * k2
    }
    total += s[0]
}
output last = s[1]
loss (total - 1.0)^2
"""

MATRIX_POWERS = """
data y
param W[2, 2] = 0.3
param v[2] = 0.5
M = W
h = v * y
for k in 0..4 {
    M = M @ W
    h = M @ h
    h[0] = h[0] + 0.1 * y
}
loss sum(h * h)
"""

FORTY_SUMS = "data y\nparam v[4] = 0.1\ne = 0.0\n" + "e += sum(sin(v * y))\n" * 40 + "loss e\n"


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.5, 1.5, size=(n, 1))


@needs_two
@pytest.mark.parametrize("rows", [2048, 4096])
def test_loop_carried_array_gives_the_true_gradient_on_many_rows(rows):
    kernels = compile_kernels(compile_source(LOOP_CARRIED, "carried.dl"))
    data = np.ones((rows, 1))
    loss, grads = kernels.grad(data, {"a": 0.5})  # 2 threads, the chunked path
    assert loss == pytest.approx(0.25, rel=1e-15)
    assert grads["a"] == pytest.approx(6 * 0.5 ** 2, rel=1e-14)  # 2 a^3 y: d/da = 6 a^2 = 1.5 (was 0.625)


def _interpreted_mean_grad(prog, data, params):
    from dlang.reverse import reverse_ad

    adjoint = reverse_ad(prog)
    per_row = [grad_row(adjoint, {"y": float(y)}, params)[1] for y in data[:, 0]]
    return {p.name: np.mean([g[p.name] for g in per_row], axis=0) for p in prog.params}


@needs_two
@pytest.mark.parametrize("source, name", [(RK_STEPS, "rk"), (MATRIX_POWERS, "powers"), (FORTY_SUMS, "forty")])
@pytest.mark.parametrize("rows", [2048, 4096])
def test_programs_that_failed_on_many_rows_give_the_serial_gradient(source, name, rows, monkeypatch):
    prog = compile_source(source, f"{name}.dl")
    kernels = compile_kernels(prog)
    data = _rows(rows)
    params = initial_params(prog)
    loss, grads = kernels.grad(data, params)  # 2 threads, 64 chunks in parallel
    monkeypatch.setenv(PARALLEL_ENV, str(10**9))
    serial_loss, serial = kernels.grad(data, params)  # one call of the serial kernel over every row
    assert loss == pytest.approx(serial_loss, rel=1e-12)
    for k in grads:
        np.testing.assert_allclose(grads[k], serial[k], rtol=1e-11, atol=1e-13)
    # the serial kernel against the reference interpreter, on a few rows
    few = data[:16]
    expected = _interpreted_mean_grad(prog, few, params)
    _, got = kernels.grad(few, params)
    for k in got:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-11, atol=1e-13)
    monkeypatch.delenv(PARALLEL_ENV)
    fd = richardson_fd(lambda q: kernels.loss(data, q), params)
    assert_grads_close(grads, fd, rel=1e-6, what=name)


def test_forty_sums_compile_without_a_recursion_error():
    """Numba's SSA pass recursed once per basic block of the generated function."""
    import sys

    prog = compile_source("data y\nparam v[4] = 0.1\ne = 0.0\n" + "e += sum(sin(v * y))\n" * 24 + "loss e\n", "s.dl")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(250)  # less than Numba's SSA pass needs for this function
    try:
        loss, grads = compile_kernels(prog).grad(np.array([[1.0], [0.5]]), {"v": np.full(4, 0.1)})
    finally:
        sys.setrecursionlimit(limit)
    want = np.mean([24 * np.cos(0.1 * y) * y for y in (1.0, 0.5)])
    np.testing.assert_allclose(grads["v"], np.full(4, want), rtol=1e-13)


# ---- serial and parallel agree, bit for bit ---------------------------------------------------------

GALLERY = sorted(PROGRAMS.glob("*.dl"))


@needs_two
@pytest.mark.parametrize("path", GALLERY, ids=lambda p: p.stem)
def test_gallery_parallel_equals_serial_bit_for_bit(path, monkeypatch):
    prog = load_program(str(path))
    csv = PROGRAMS / "data" / f"{path.stem}.csv"
    data = load_data(prog, str(csv)) if prog.data else np.zeros((1, 0))
    if prog.data:
        data = np.concatenate([data] * max(1, 300 // data.shape[0]))  # several rows in every chunk
    kernels = compile_kernels(prog)
    params = initial_params(prog)
    one, two = run_both(kernels, data, params, monkeypatch)
    assert_bitwise(one, two, path.stem)
    # and the chunked sums agree with the one-chunk path (they differ only in summation order)
    monkeypatch.setenv(PARALLEL_ENV, str(10**9))
    loss, grads = kernels.grad(data, params)
    assert one[0][0] == pytest.approx(loss, rel=1e-12)
    for k in grads:
        np.testing.assert_allclose(one[0][1][k], grads[k], rtol=1e-10, atol=1e-12 * max(1.0, abs(loss)))


@needs_two
def test_chunks_with_few_rows_and_faults_in_a_later_chunk(monkeypatch):
    """Fewer rows than chunks (empty chunks), and the first fault in chunk order named by row."""
    from dlang.errors import RuntimeFault

    prog = compile_source("data k\nparam a = 1.0\nv = zeros(3)\ns = 0.0\nn = 0\n"
                          "while k > 0.5 and n < 5 {\n  s += v[n] * a\n  n += 1\n}\nloss s + k * a\n", "oob.dl")
    kernels = compile_kernels(prog)
    data = np.zeros((10, 1))
    one, two = run_both(kernels, data, {"a": 1.0}, monkeypatch)
    assert_bitwise(one, two, "few rows")
    data[7, 0] = data[9, 0] = 1.0
    monkeypatch.setenv(PARALLEL_ENV, "2")
    for threads in (1, 2):
        numba.set_num_threads(threads)
        try:
            for run in (lambda: kernels.grad(data, {"a": 1.0}), lambda: kernels.loss(data, {"a": 1.0})):
                with pytest.raises(RuntimeFault) as err:
                    run()
                assert "oob.dl:7:8" in str(err.value) and "data row 8" in str(err.value)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_the_threads_of_a_call_follow_its_work(monkeypatch):
    """A call with little work runs its chunks on one thread (waking a second costs more than
    it saves, and on a shared machine may cost a time slice); the results are the same bits."""
    from dlang import kernels as kmod

    monkeypatch.delenv(PARALLEL_SECONDS_ENV)
    monkeypatch.setenv(PARALLEL_ENV, "2")
    kernels = compile_kernels(compile_source(LOOP_CARRIED, "carried.dl"))
    data = _rows(300)
    used = []
    real = kmod._Timed.__init__

    def spy(self, *args):
        real(self, *args)
        used.append(self.threads)

    monkeypatch.setattr(kmod._Timed, "__init__", spy)
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        first = kernels.grad(data, {"a": 0.5})
        second = kernels.grad(data, {"a": 0.5})  # the first call measured how little work a row is
        monkeypatch.setenv(PARALLEL_SECONDS_ENV, "0")
        third = kernels.grad(data, {"a": 0.5})
    finally:
        numba.set_num_threads(before)
    assert used == [2, 1, 2]
    assert first == second == third
