"""Whole-column data (`data x[]`: the body runs once on every row) and int(x)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dlang.commands import RunOptions, grad, load_inputs
from dlang.irtext import parse_program, print_program

from conftest import PROGRAMS
from conftest import user_error as _user_error

WHOLE = """\
data x[], y[]
param a = 0.5
param b = 0.1
total = 0.0
for k in 0..len(x) {
    total += (a * x[k] + b - y[k])^2
}
loss total
"""

PER_ROW = """\
data x, y
param a = 0.5
param b = 0.1
loss (a * x + b - y)^2
"""


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 2, 37)
    y = 1.7 * x - 0.4 + rng.normal(0, 0.05, x.size)
    path = tmp_path / "xy.csv"
    path.write_text("x,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(x, y)))
    return path, x, y


def test_whole_columns_are_arrays_as_long_as_the_data(write_program, table):
    path, x, y = table
    program, data = load_inputs(str(write_program(WHOLE)), str(path), RunOptions())
    assert program.whole_columns
    assert [d.type.shape for d in program.data] == [(37,), (37,)]
    assert data.matrix.shape == (1, 74)
    np.testing.assert_array_equal(data.matrix[0, :37], x)
    np.testing.assert_array_equal(data.matrix[0, 37:], y)


def test_one_run_on_whole_columns_sums_what_per_row_programs_average(write_program, table):
    path, x, y = table
    whole = grad(str(write_program(WHOLE, "whole.dl")), str(path), check=True)
    rows = grad(str(write_program(PER_ROW, "rows.dl")), str(path))
    assert whole.check.passed
    expected = float(np.sum((0.5 * x + 0.1 - y) ** 2))
    assert whole.loss == pytest.approx(expected, rel=1e-12)
    assert whole.loss == pytest.approx(37 * rows.loss, rel=1e-12)
    for name in ("a", "b"):
        assert whole.grads[name] == pytest.approx(37 * rows.grads[name], rel=1e-10)


def test_whole_column_grad_in_forward_mode_equals_reverse(write_program, table):
    path, _, _ = table
    prog = str(write_program(WHOLE))
    rev = grad(prog, str(path))
    fwd = grad(prog, str(path), mode="forward")
    for name in rev.grads:
        assert fwd.grads[name] == pytest.approx(rev.grads[name], rel=1e-12)


def test_len_of_a_whole_column_sizes_an_array(write_program, table, run_cli, tmp_path):
    path, x, y = table
    prog = write_program("data x[], y[]\nparam a = 2.0\npred = zeros(len(x))\n"
                         "for k in 0..len(x) { pred[k] = a * x[k] }\n"
                         "loss sum((pred - y)^2)\noutput pred = pred\noutput scale = a\n")
    out = tmp_path / "run.csv"
    r = run_cli("run", prog, "--data", path, "--out", out)
    assert r.code == 0, r.err
    lines = out.read_text().strip().splitlines()
    assert lines[0] == "x,y,pred,scale"  # one row per data row; a scalar output repeated
    assert len(lines) == 38
    table_ = np.array([[float(c) for c in line.split(",")] for line in lines[1:]])
    np.testing.assert_allclose(table_[:, 2], 2.0 * x, rtol=1e-15)
    np.testing.assert_allclose(table_[:, 3], 2.0)
    assert "one run on whole columns of 37 rows" in r.err
    assert float(r.err.split()[1]) == pytest.approx(float(np.sum((2.0 * x - y) ** 2)), rel=1e-9)


def test_a_const_can_be_the_length_of_a_whole_column(write_program, table, run_cli):
    path, x, _ = table
    prog = write_program("const n = len(x)\nconst half = n / 2\ndata x[], y[]\nparam a = 1.0\nv = zeros(n)\n"
                         "loss a * len(v) + half\n")
    r = run_cli("grad", prog, "--data", path, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["loss"] == pytest.approx(37 + 18.5)


def test_check_without_data_and_the_ir_text_reads_back(write_program, run_cli):
    prog = write_program(WHOLE)
    r = run_cli("check", prog)
    assert r.code == 0 and "ok" in r.out, r.err
    r = run_cli("emit", prog)
    assert "data x: f64[1000] column" in r.out  # checked with a stand-in length before the data are read
    back = parse_program(r.out)
    assert [d.whole for d in back.data] == [True, True] and back.whole_columns
    assert print_program(back).strip() == r.out.strip()


def test_mixing_whole_columns_and_rows_is_an_error(write_program, run_cli):
    prog = write_program("data x[], y\nparam a = 1.0\nloss a\n")
    r = run_cli("check", prog)
    _user_error(r, f"{prog}:1:11: error: data y is one row's value, but data x[] reads a whole column",
                "write data y[] to read its whole column too")


def test_a_missing_column_is_named(write_program, table, run_cli):
    path, _, _ = table
    r = run_cli("grad", write_program("data x[], z[]\nparam a = 1.0\nloss a * sum(x) * sum(z)\n"), "--data", path)
    _user_error(r, "no column 'z'")


def test_bad_rows_dropped_shorten_the_columns(write_program, tmp_path, run_cli):
    path = tmp_path / "bad.csv"
    path.write_text("x,y\n1,2\n2,oops\n3,6\n")
    prog = write_program("data x[], y[]\nparam a = 1.0\nloss (a * len(x))^2\n")
    _user_error(run_cli("grad", prog, "--data", path), "row 2", "oops")
    r = run_cli("grad", prog, "--data", path, "--drop-bad-rows", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["loss"] == pytest.approx(4.0)  # two rows kept: len(x) == 2
    assert "skipped 1 bad row of 3" in r.err


def test_parquet_and_csv_give_the_same_whole_column_fit(write_program, table, run_cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, x, y = table
    pq.write_table(pa.table({"x": x, "y": y}), tmp_path / "xy.parquet")
    prog = write_program(WHOLE)
    fits = []
    for data in (path, tmp_path / "xy.parquet"):
        out = tmp_path / f"{data.suffix}.json"
        assert run_cli("train", prog, "--data", data, "--out", out).code == 0
        fits.append(json.loads(out.read_text()))
    assert fits[0] == fits[1]
    assert fits[0]["a"] == pytest.approx(1.7, abs=0.05) and fits[0]["b"] == pytest.approx(-0.4, abs=0.05)


# ---- int(x) ------------------------------------------------------------------------------------

INT_PROGRAM = """\
data x
param a = 1.0
v = zeros(5)
for i in 0..5 { v[i] = a * i }
k = int(x * a)
loss (v[k] - 1.0)^2
"""


def test_int_rounds_toward_zero_and_indexes(write_program, tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("x\n1.5\n2.7\n3.2\n0.2\n")
    r = grad(str(write_program(INT_PROGRAM)), str(path), check=True)
    # rows pick v[1], v[2], v[3], v[0]: loss mean of (a*k - 1)^2, derivative 2 k (a k - 1)
    ks = np.array([1, 2, 3, 0])
    assert r.loss == pytest.approx(np.mean((ks - 1.0) ** 2))
    assert r.grads["a"] == pytest.approx(np.mean(2 * ks * (ks - 1.0)))
    assert r.check.passed


@pytest.mark.parametrize("value", ["1e300", "-1e19"])
def test_int_of_a_huge_value_is_an_error_naming_the_row(write_program, tmp_path, run_cli, value):
    path = tmp_path / "x.csv"
    path.write_text(f"x\n1.5\n{value}\n")
    prog = write_program(INT_PROGRAM)
    for command in ("grad", "run"):
        _user_error(run_cli(command, prog, "--data", path),
                    f"{prog}:5:5: error: int() was given a value that is not finite or too large for an int "
                    "(data row 2)")


def test_int_of_nan_in_a_whole_column_program_names_the_place(write_program, tmp_path, run_cli):
    path = tmp_path / "x.csv"
    path.write_text("x\n1\n2\n")
    prog = write_program("data x[]\nparam a = 1.0\nk = int(log(x[0] - a))\nloss a * k\n")
    r = run_cli("grad", prog, "--data", path)
    _user_error(r, f"{prog}:3:5: error: int() was given a value that is not finite or too large for an int")
    assert "data row" not in r.err


@pytest.mark.parametrize("text, message", [
    ("param a = 1.0\nk = int(a > 0)\nloss a\n", "a comparison or true/false can only be used as the condition"),
    ("param w[3] = 1.0\nk = int(w)\nloss sum(w)\n", "int needs a number, but this is an array of shape [3]"),
    ("param a = 1.0\nk = int(1e300)\nloss a\n", "not finite or too large for an int"),
    ("param a = 1.0\nk = int(a, a)\nloss a\n", "int takes 1 argument, but 2 were given"),
])
def test_int_errors(write_program, run_cli, text, message):
    _user_error(run_cli("check", write_program(text)), message)


def test_int_of_an_int_and_of_a_literal(write_program, run_cli):
    prog = write_program("param a = 2.0\nv = zeros(4)\nv[int(3)] = a\nv[int(2.9)] = a * a\nk = int(len(v))\n"
                         "loss sum(v) * k\n")
    r = run_cli("grad", prog, "--json", "--check")
    assert r.code == 0, r.err
    assert json.loads(r.out)["loss"] == pytest.approx((2.0 + 4.0) * 4)


def test_int_in_a_const(write_program, run_cli):
    prog = write_program("const days = 100\nconst weeks = int(days / 7)\nparam a = 1.0\nv = zeros(weeks)\n"
                         "loss a * len(v)\n")
    r = run_cli("grad", prog, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["loss"] == 14.0  # int rounds toward zero: 100 / 7 = 14.29
    _user_error(run_cli("check", write_program("const big = int(1e300)\nparam a = 1.0\nloss a\n", "b.dl")),
                "b.dl:1:13: error: int(1e+300): the value is not finite or too large for an int")


def test_the_sir_gallery_program_reads_whole_columns():
    program, data = load_inputs(str(PROGRAMS / "sir.dl"), str(PROGRAMS / "data" / "sir.csv"), RunOptions())
    assert program.whole_columns and program.data[0].type.shape == (100,)
    assert data.matrix.shape == (1, 200)
