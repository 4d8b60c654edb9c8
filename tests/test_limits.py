"""Resource limits and non-finite values: a tape that cannot fit is refused before anything
runs, a runaway while loop stops at --max-iterations naming its line and row, and a NaN or
infinity in the loss or gradient is traced to the source line (forward or reverse) it came from."""
from __future__ import annotations

import json

import pytest

from conftest import user_error as _user_error

HUGE_LOOP = """\
param k = 0.5
x = 1.0
for i in 0..100000000000 {
    x = x * k + sin(x)
}
loss x^2
"""

RUNAWAY = """\
data x
param a = 1.0
y = a * x
while y > 0.0 {
    y += 1.0
}
loss y^2
"""

SQRT_AT_ZERO = """\
data x
param a = 0.0
param b = 1.0
r = sqrt(a * a * x)
loss (r - 1.0)^2 + b * b
"""

LOG_OF_ZERO = """\
data x
param a = 1.0
u = log(a * x)
loss u^2
"""


@pytest.fixture
def csv(tmp_path):
    def write(text: str, name: str = "d.csv"):
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


# ---- a tape that cannot fit ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["grad", "train", "bench"])
def test_a_tape_too_large_for_memory_is_refused_before_running(run_cli, write_program, tmp_path, command):
    prog = write_program(HUGE_LOOP, "huge.dl")
    out = tmp_path / "p.json"
    extra = ["--out", out] if command == "train" else []
    r = run_cli(command, prog, *extra)  # returns at once: 10^11 steps would run for minutes
    _user_error(r, f"{prog}:3:1: error: the gradient would need a tape of 800.0 GB for each data row",
                "more than the", "a row may use", f"`dlang {command}` stops before it starts",
                "run fewer steps", "`dlang run`")
    assert "   3 | for i in 0..100000000000 {" in r.err and "^^^" in r.err
    assert not out.exists()  # nothing written


def test_the_tape_estimate_counts_steps_values_and_branches():
    from dlang.frontend import compile_source
    from dlang.limits import tape_bytes
    from dlang.reverse import reverse_ad

    prog = compile_source("param k = 0.5\nx = 1.0\nv = 2.0\nfor i in 0..1000 {\n x = x * k + sin(v)\n"
                          " v = v * k\n}\nloss x^2\n", "t.dl")
    need, loc = tape_bytes(reverse_ad(prog))
    assert loc[0] == 4
    # each step tapes what its reverse reads (x, v or cos(v): a few values), never more than 8
    assert 8 * 1000 <= need <= 8 * 8 * 1000
    small = compile_source("param k = 0.5\nloss k^2\n", "s.dl")
    assert tape_bytes(reverse_ad(small)) == (0, None)


# ---- a while loop past --max-iterations --------------------------------------------------------


@pytest.mark.parametrize("command", ["grad", "run", "train"])
def test_a_runaway_while_loop_stops_at_max_iterations_naming_line_and_row(run_cli, write_program, csv, tmp_path,
                                                                          command):
    prog = write_program(RUNAWAY, "runaway.dl")
    data = csv("x\n-1\n2\n-3\n")
    extra = ["--out", tmp_path / "p.json"] if command == "train" else []
    r = run_cli(command, prog, "--data", data, "--max-iterations", "1000", *extra)
    _user_error(r, f"{prog}:4:1: error: the while loop ran more than 1,000 times (data row 2)",
                "its condition may never become false", "   4 | while y > 0.0 {")


def test_max_iterations_is_a_cap_not_a_count(run_cli, write_program, csv):
    """A loop that ends in 50 trips runs with --max-iterations 50, and fails with 49."""
    prog = write_program("data x\nparam a = 1.0\nn = 0\ny = a * x\nwhile n < 50 {\n y += 1.0\n n += 1\n}\n"
                         "loss y^2\n", "fifty.dl")
    data = csv("x\n1\n")
    assert run_cli("grad", prog, "--data", data, "--max-iterations", "50").code == 0
    _user_error(run_cli("grad", prog, "--data", data, "--max-iterations", "49"),
                "ran more than 49 times", "(data row 1)")


@pytest.mark.parametrize("value", ["0", "-5"])
def test_max_iterations_must_be_positive(run_cli, write_program, csv, value):
    prog = write_program(RUNAWAY, "runaway.dl")
    _user_error(run_cli("grad", prog, "--data", csv("x\n1\n"), "--max-iterations", value),
                f"--max-iterations must be at least 1, not {value}")


# ---- non-finite values: where they came from ---------------------------------------------------


def test_a_nan_gradient_names_the_derivative_and_line_it_came_from(run_cli, write_program, csv):
    prog = write_program(SQRT_AT_ZERO, "sqrt0.dl")
    r = run_cli("grad", prog, "--data", csv("x\n1\n2\n"))
    _user_error(r, f"{prog}:4:5: error: the gradient is not finite (d loss / d a)",
                "appeared in the derivative of `sqrt` at line 4, in the reverse pass (data row 1)",
                "the forward values there were finite", "not differentiable at this point")
    assert "nan" in r.out  # the values are still shown


def test_an_infinite_loss_names_the_forward_line_and_row(run_cli, write_program, csv):
    prog = write_program(LOG_OF_ZERO, "log0.dl")
    r = run_cli("grad", prog, "--data", csv("x\n1\n0\n2\n"), "--json")
    _user_error(r, f"{prog}:3:5: error: the loss is inf", "appeared at line 3, in the forward pass (data row 2)",
                "`log` gave -inf")
    out = json.loads(r.out)  # the JSON is still printed, strict (no NaN literal)
    assert out["loss"] is None


def test_the_origin_in_a_loop_and_a_function(run_cli, write_program, csv):
    prog = write_program("data x\nparam a = 1.0\nfn f(u) {\n    return 1.0 / (u - 3.0)\n}\ns = 0.0\n"
                         "for i in 0..5 {\n    s += f(a * x + 1.0 * i)\n}\nloss s^2\n", "loopfn.dl")
    r = run_cli("grad", prog, "--data", csv("x\n0.5\n1\n"))  # row 2 reaches u = 3 at i = 2
    _user_error(r, f"{prog}:4:12: error: the loss is", "in the forward pass (data row 2)", "`/` gave")


def test_training_that_goes_non_finite_names_the_line(run_cli, write_program, csv, tmp_path):
    prog = write_program(SQRT_AT_ZERO, "sqrt0.dl")
    out = tmp_path / "p.json"
    r = run_cli("train", prog, "--data", csv("x\n1\n2\n"), "--out", out)
    _user_error(r, "the gradient went non-finite in epoch 1 (for a)",
                f"{prog}:4:5: error: the gradient went non-finite (for a)", "derivative of `sqrt` at line 4")
    assert json.loads(out.read_text()) == {"a": 0.0, "b": 1.0}  # the last good params were kept


GROWING_WHILE = """\
data n
param a = 0.5
x = 0.0
k = 0.0
while k < n {
    x = x * a + sin(x) + 1.0
    k += 1.0
}
loss x^2
"""


@pytest.mark.parametrize("rows", [3, 3000])  # the serial kernel, and the parallel chunked one
def test_a_while_loop_whose_tape_outgrows_the_limit_stops_naming_the_row(run_cli, write_program, csv, monkeypatch,
                                                                         rows):
    monkeypatch.setenv("DLANG_MAX_TAPE_BYTES", "1000000")
    prog = write_program(GROWING_WHILE, "grow.dl")
    counts = ["10", "200000"] + ["5"] * (rows - 2)  # row 2 tapes 200,000 steps: more than 1 MB
    data = csv("n\n" + "\n".join(counts) + "\n")
    r = run_cli("grad", prog, "--data", data)
    _user_error(r, "data row 2", "tape", "1.0 MB", "DLANG_MAX_TAPE_BYTES")
    monkeypatch.setenv("DLANG_MAX_TAPE_BYTES", "100000000")  # 100 MB: fits
    assert run_cli("grad", prog, "--data", data).code == 0


def test_a_bad_tape_limit_is_a_user_error(run_cli, write_program, monkeypatch):
    monkeypatch.setenv("DLANG_MAX_TAPE_BYTES", "lots")
    _user_error(run_cli("grad", write_program("param k = 0.5\nloss k^2\n", "k.dl")),
                "$DLANG_MAX_TAPE_BYTES must be a positive number of bytes, not 'lots'")


def _nested(kind: str, n: int) -> str:
    head = {"for": "for i{k} in 0..2 {{\n", "if": "if x > -1.0 {{\n"}[kind]
    return ("param a = 1.0\nx = a\n" + "".join(head.format(k=k) for k in range(n)) + "x = x * a + 0.01\n"
            + "}\n" * n + "loss x^2\n")


def test_nesting_past_what_dlang_compiles_is_a_located_error(run_cli, write_program):
    from dlang.limits import MAX_NESTING

    deep = write_program(_nested("for", MAX_NESTING + 1), "deep.dl")
    r = run_cli("grad", deep)
    line = 3 + MAX_NESTING  # the first too-deep statement
    _user_error(r, f"{deep}:{line}:1: error: loops and ifs nest more than {MAX_NESTING} deep here")


# ---- files dlang writes ------------------------------------------------------------------------


LIN = "data x, y\nparam a = 0.5\nparam b = -0.25\nloss (a * x + b - y)^2\n"


def test_a_failed_write_is_a_user_error_and_the_old_file_stays(run_cli, write_program, csv, tmp_path, monkeypatch):
    import os

    prog = write_program(LIN, "lin.dl")
    data = csv("x,y\n1,2\n2,3.5\n-1,0.25\n")
    out = tmp_path / "out.csv"
    out.write_text("old\n")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    r = run_cli("run", prog, "--data", data, "--out", out)
    _user_error(r, f"cannot write {out}: No space left on device", "unchanged")
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "lin.dl", "out.csv"]  # no temp file left


def test_out_through_a_symlink_writes_the_file_it_points_to(run_cli, write_program, csv, tmp_path):
    prog = write_program(LIN, "lin.dl")
    data = csv("x,y\n1,2\n2,3.5\n-1,0.25\n")
    target = tmp_path / "target.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    r = run_cli("run", prog, "--data", data, "--out", link)
    assert r.code == 0, r.err
    assert link.is_symlink() and target.read_text().startswith("loss\n")


def test_run_out_in_a_missing_directory_is_refused_before_running(run_cli, write_program, csv, tmp_path):
    prog = write_program(LIN, "lin.dl")
    _user_error(run_cli("run", prog, "--data", csv("x,y\n1,2\n"), "--out", tmp_path / "nodir" / "r.csv"),
                "--out", "does not exist")
    _user_error(run_cli("run", prog, "--data", csv("x,y\n1,2\n"), "--out", tmp_path), "--out", "is a directory")


def test_with_dropped_rows_faults_name_the_row_of_the_file(run_cli, write_program, csv):
    prog = write_program(RUNAWAY, "runaway.dl")
    data = csv("x\nabc\n-1\n2\n")  # row 1 is skipped; row 3 (x = 2) never leaves its loop
    r = run_cli("grad", prog, "--data", data, "--drop-bad-rows", "--max-iterations", "100")
    _user_error(r, "skipped 1 bad row of 3", "ran more than 100 times (data row 3)")
    assert r.err.index("skipped 1 bad row") < r.err.index("ran more than")  # the note comes first


def test_a_tape_limit_that_is_not_a_number_of_bytes_is_a_user_error(run_cli, write_program, monkeypatch):
    prog = write_program("param k = 0.5\nloss k^2\n", "k.dl")
    for text in ("inf", "nan", "-3", "0"):
        monkeypatch.setenv("DLANG_MAX_TAPE_BYTES", text)
        _user_error(run_cli("grad", prog), f"must be a positive number of bytes, not {text!r}")


def test_a_fault_in_bench_is_a_user_error(run_cli, write_program, csv):
    prog = write_program(RUNAWAY, "runaway.dl")
    r = run_cli("bench", prog, "--data", csv("x\n-1\n2\n"), "--repeat", "1", "--max-iterations", "100")
    _user_error(r, "ran more than 100 times (data row 2)")


def test_train_out_through_a_dangling_link_is_refused_before_training(run_cli, write_program, csv, tmp_path):
    prog = write_program(LIN, "lin.dl")
    link = tmp_path / "dangling.json"
    link.symlink_to(tmp_path / "nowhere" / "x.json")
    r = run_cli("train", prog, "--data", csv("x,y\n1,2\n2,3.5\n"), "--out", link)
    _user_error(r, "--out", "does not exist")
    assert "epoch" not in r.err  # refused before training


def test_a_training_that_writes_nothing_says_so(run_cli, write_program, csv, tmp_path):
    prog = write_program(SQRT_AT_ZERO, "sqrt0.dl")
    out = tmp_path / "p.json"
    out.write_text('{"a": 0.25}\n')
    r = run_cli("train", prog, "--data", csv("x\n1\n2\n"), "--out", out)
    _user_error(r, f"no epoch finished, so no params were written to {out}")
    assert out.read_text() == '{"a": 0.25}\n'


@pytest.mark.parametrize("source, needle", [
    ("param w[1000000000000] = 0.0\nloss sum(w)\n", "param w is an array of 8.0 TB"),
    ("data x[1000000000000]\nparam a = 1.0\nloss a * sum(x)\n", "data x is an array of 8.0 TB"),
    ("param a = 1.0\nx = zeros(1000000, 1000000)\nloss a * sum(x)\n", ":2:5: error: this array would take 8.0 TB"),
])
@pytest.mark.parametrize("command", ["grad", "run"])
def test_an_array_too_large_for_memory_is_refused_before_allocating(run_cli, write_program, source, needle,
                                                                     command):
    prog = write_program(source, "big.dl")
    _user_error(run_cli(command, prog), needle, "dlang lets one value use")
