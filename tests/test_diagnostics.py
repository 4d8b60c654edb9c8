"""Diagnostics: what a user sees when a program, an option or a file is wrong.

Every error must come out as `PATH:LINE:COL: error: SENTENCE`, the source line with a caret
under the place (and sometimes a note), exit status 1, and never a Python traceback. These
tests pin the place and the meaningful words of each kind of error, check that several
independent errors are all reported, that deep nesting and odd input bytes are handled
plainly, that Python keywords work as dlang names, and that the documented syntax details
are accepted.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from dlang.frontend import load_program
from dlang.interp import program_loss
from dlang.data import read_rows


# ---- reading diagnostics back ----------------------------------------------------------------

_HEADER = re.compile(r"^(?P<path>.*?):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.*)$")
_SOURCE = re.compile(r"^ *(?P<line>\d+) \| (?P<text>.*)$")
_CARET = re.compile(r"^ +\| (?P<pad> *)(?P<carets>\^+)$")


@dataclass
class Diag:
    path: str
    line: int
    col: int
    message: str
    source_line: int | None = None
    source: str | None = None
    caret_col: int | None = None
    caret_width: int = 0
    note: str | None = None

    @property
    def text(self) -> str:
        return self.message + ("\n" + self.note if self.note else "")


def parse_diagnostics(err: str) -> list[Diag]:
    """The located diagnostics in the CLI's stderr, in the order printed."""
    diags: list[Diag] = []
    for raw in err.splitlines():
        m = _HEADER.match(raw)
        if m:
            diags.append(Diag(m["path"], int(m["line"]), int(m["col"]), m["msg"]))
            continue
        if not diags:
            continue
        d = diags[-1]
        if (s := _SOURCE.match(raw)) and d.source is None:
            d.source_line, d.source = int(s["line"]), s["text"]
        elif (c := _CARET.match(raw)) and d.caret_col is None:
            d.caret_col, d.caret_width = len(c["pad"]) + 1, len(c["carets"])
        elif raw.startswith("  note: "):
            d.note = raw[len("  note: "):]
    return diags


def assert_no_crash(result) -> None:
    assert "Traceback" not in result.err, result.err
    assert "Traceback" not in result.out, result.out
    assert "internal error" not in result.err, result.err


def expect_error(run_cli, path: Path, line: int, col: int, words: list[str], *extra: str,
                 note: str | None = None) -> Diag:
    """Run `dlang check PATH`; the first diagnostic is at LINE:COL and says WORDS."""
    result = run_cli("check", path, *extra)
    assert_no_crash(result)
    assert result.code == 1, (result.out, result.err)
    assert result.out == "", "a failed check prints nothing on stdout"
    diags = parse_diagnostics(result.err)
    assert diags, f"no located diagnostic in:\n{result.err}"
    d = diags[0]
    assert d.path == str(path), result.err
    assert (d.line, d.col) == (line, col), f"expected {line}:{col}, got:\n{result.err}"
    for w in words:
        assert w in d.message, f"{w!r} not in the sentence:\n{result.err}"
    if note is not None:
        assert d.note is not None and note in d.note, f"note {note!r} missing:\n{result.err}"
    # The excerpt shows the very line the diagnostic names, with the caret under the column.
    file_lines = path.read_bytes().decode("utf-8-sig").split("\n")
    shown = file_lines[line - 1].rstrip("\r").expandtabs(1) if line <= len(file_lines) else ""
    assert d.source_line == line, result.err
    assert d.source == shown, f"excerpt {d.source!r} is not line {line} {shown!r}"
    assert d.caret_col == col, f"caret at column {d.caret_col}, diagnostic says {col}:\n{result.err}"
    return d


# ---- 1. one wrong program per kind of error ---------------------------------------------------

# (id, program, LINE, COL, words in the sentence, words in the note or None)
WRONG_PROGRAMS = [
    # -- syntax --
    ("missing_operand_before_newline", "x = 1 +\nloss x\n", 1, 8,
     ["expected an expression", "end of the line"], None),
    pytest.param("missing_operand_at_eof", "x = 1 +", 1, 8,
                 ["expected an expression", "end of the file"], None,
                 id="missing_operand_at_eof"),
    pytest.param("unclosed_paren_at_eof", "x = (1.0 + 2.0", 1, 15,
                 ["expected ')'", "end of the file"], None,
                 id="unclosed_paren_at_eof"),
    ("unclosed_paren_next_line", "data u\nx = (u + 2.0\nloss x\n", 3, 1,
     ["')'", "found the keyword 'loss'"], None),
    pytest.param("unclosed_brace_at_eof", "data u\nif u > 0.0 {\n  loss u", 3, 9,
                 ["expected '}'", "end of the file"], None,
                 id="unclosed_brace_at_eof"),
    ("chained_comparison", "data a, b, c\nif a < b < c { loss a }\n", 2, 10,
     ["comparisons cannot be chained", "'<'"], "a < b and b < c"),
    ("assign_in_condition", "data x\nif x = 1.0 { loss x }\n", 2, 6,
     ["'=' in a condition"], "use '==' to compare"),
    ("unexpected_character", "x = 3 $ 4\n", 1, 7, ["unexpected character '$'"], None),
    ("keyword_as_name", "for = 3\n", 1, 5, ["expected a name", "found '='"],
     "'for' is a reserved word"),
    ("keyword_data_as_name", "data = 1.0\n", 1, 6, ["expected a name"], "'data' is a reserved word"),
    ("range_outside_for", "x = 0..3\n", 1, 6, ["found '..'"], "'..' only appears in a for loop"),
    ("else_without_if", "x = 1.0\nelse { x = 2.0 }\n", 2, 1, ["found the keyword 'else'"], None),
    ("fn_without_body", "fn f(a)\nloss 1.0\n", 1, 8, ["expected '{'", "end of the line"], None),
    # -- names and functions --
    ("unknown_name", "data x\nloss (y - x)^2\n", 2, 7, ["unknown name 'y'"], None),
    ("unknown_name_did_you_mean", "data xval\nloss (xvel - 1.0)^2\n", 2, 7,
     ["unknown name 'xvel'", "did you mean 'xval'?"], None),
    ("unknown_local_did_you_mean", "speed = 1.0\nloss sped * 2.0\n", 2, 6,
     ["unknown name 'sped'", "did you mean 'speed'?"], None),
    ("unknown_function", "loss sn(1.0)\n", 1, 6, ["unknown function 'sn'", "did you mean 'sin'?"], None),
    ("unknown_function_in_fn", "fn f(a) { return g(a) }\nloss f(1.0)\n", 1, 18,
     ["unknown function 'g'"], None),
    ("arity_user_fn", "fn f(a) { return a }\nloss f(1.0, 2.0)\n", 2, 6,
     ["function f takes 1 argument", "2 were given"], None),
    ("arity_builtin", "loss atan2(1.0)\n", 1, 6, ["atan2 takes 2 arguments", "1 was given"], None),
    ("arity_builtin_unary", "loss sin(1.0, 2.0)\n", 1, 6, ["sin takes 1 argument", "2 were given"], None),
    ("recursion_direct", "fn f(a) { return f(a) }\nloss f(1.0)\n", 1, 18,
     ["recursion is not allowed", "f -> f"], None),
    ("recursion_mutual", "fn f(a) { return g(a) }\nfn g(a) { return f(a) }\nloss f(1.0)\n", 2, 18,
     ["recursion is not allowed", "f -> g -> f"], None),
    ("recursion_mutual_uncalled", "fn f(a) { return g(a) }\nfn g(a) { return f(a) }\nloss 1.0\n", 2, 18,
     ["recursion is not allowed"], None),
    ("builtin_redefined", "fn sin(x) { return x }\nloss sin(1.0)\n", 1, 1,
     ["'sin' is a builtin function"], None),
    ("duplicate_fn_argument", "fn f(a, a) { return a }\nloss f(1.0, 2.0)\n", 1, 1,
     ["two arguments named 'a'"], None),
    # -- definite assignment --
    ("maybe_unassigned_after_if", "data u\nif u > 0.0 {\n  t = 1.0\n}\nloss t\n", 5, 6,
     ["'t' may be unassigned here", "only one branch of the if at line 2"], "assign 't' before"),
    ("maybe_unassigned_after_while", "data u\nx = 0.0\nwhile x < u {\n  t = x\n  x += 0.5\n}\nloss t\n",
     7, 6, ["'t' may be unassigned here", "while loop at line 3"], None),
    ("maybe_unassigned_after_for", "data u\nfor i in 0..3 {\n  t = u\n}\nloss t\n", 5, 6,
     ["'t' may be unassigned here", "for loop at line 2"], None),
    # -- writes to what is read-only --
    ("assign_param", "param p = 1.0\np = 2.0\nloss p\n", 2, 1, ["cannot assign to param 'p'"], None),
    ("assign_param_element", "param w[3] = 0.0\nw[0] = 1.0\nloss sum(w)\n", 2, 1,
     ["cannot assign to an element of param 'w'"], None),
    ("assign_data", "data d\nd += 1.0\nloss d\n", 2, 1, ["cannot assign to data 'd'"], None),
    ("assign_const", "const c = 1.0\nc = 2.0\nloss c\n", 2, 1, ["cannot assign to const 'c'"], None),
    ("assign_loop_index", "for i in 0..3 {\n  i = 2\n}\nloss 1.0\n", 2, 3,
     ["cannot assign to the loop index 'i'"], None),
    ("loop_index_shadows_local", "x = 1.0\nfor x in 0..3 { }\nloss x\n", 2, 5,
     ["the loop index 'x' is already a local"], None),
    # -- types and shapes --
    ("shape_mismatch_add", "a = zeros(3)\nb = zeros(4)\nc = a + b\nloss sum(c)\n", 3, 5,
     ["'+' needs arrays of the same shape", "[3]", "[4]"], None),
    ("matmul_inner_size", "A = zeros(2, 3)\nv = zeros(4)\nr = A @ v\nloss sum(r)\n", 3, 5,
     ["inner sizes 3 and 4 differ"], None),
    ("int_local_given_float", "s = 0\ns += 0.5\nloss s\n", 2, 1,
     ["'s' is an int (since line 1)", "cannot be assigned a float"], "start it as a float"),
    ("local_shape_change", "v = zeros(3)\nv = zeros(4)\nloss sum(v)\n", 2, 1,
     ["'v' is an array of shape [3] (since line 1)", "array of shape [4]"], "keeps the shape"),
    ("comparison_as_value", "data x\nb = x > 0.0\nloss x\n", 2, 5,
     ["can only be used as the condition of if or while"], None),
    ("true_as_value", "x = true\nloss 1.0\n", 1, 5, ["can only be used as the condition"], None),
    ("float_condition", "data x\nif x { loss x }\n", 2, 4,
     ["the condition of if must be a comparison or true/false, not a float"], "x > 0"),
    ("float_while_condition", "data x\nwhile x { x2 = 1.0 }\nloss x\n", 2, 7,
     ["the condition of while must be a comparison", "not a float"], None),
    ("negated_comparison", "data x\nif -(x > 0.0) { loss x }\n", 2, 4, ["cannot negate a comparison"], None),
    ("float_index", "data x\nv = zeros(3)\nloss v[x]\n", 3, 8, ["an index must be an int, not a float"], None),
    ("float_range_bound", "x = 0.0\nfor i in 0..2.5 { x += 1.0 }\nloss x\n", 2, 13,
     ["the end of a for range must be an int"], None),
    ("const_index_out_of_range", "v = zeros(3)\nloss v[3]\n", 2, 6,
     ["index 3 is out of range", "size 3", "0 to 2"], None),
    ("negative_const_index", "v = zeros(3)\nloss v[-1]\n", 2, 6, ["index -1 is out of range"], None),
    ("store_out_of_range", "v = zeros(3)\nv[5] = 1.0\nloss sum(v)\n", 2, 1, ["index 5 is out of range"], None),
    ("too_many_indices", "W = zeros(2, 2)\nloss W[0, 0, 0]\n", 2, 6, ["3 indices", "[2, 2]"], None),
    ("size_not_compile_time", "data x\nv = zeros(x)\nloss sum(v)\n", 2, 11,
     ["must be known at compile time", "'x' is not a const"], None),
    ("size_not_int", "v = zeros(2.5)\nloss sum(v)\n", 1, 11, ["must be an int, not a float"], None),
    ("size_zero", "v = zeros(0)\nloss sum(v)\n", 1, 11, ["must be at least 1, not 0"], None),
    ("const_from_data", "data x\nconst c = x * 2.0\nloss c\n", 2, 11,
     ["the value of const c must be known at compile time", "'x' is not a const"], None),
    ("param_start_from_data", "data x\nparam p = x\nloss p\n", 2, 11,
     ["starting value of param p", "compile time"], None),
    ("const_cycle", "const a = b + 1\nconst b = a * 2\nloss 1.0 * a\n", 1, 1,
     ["const a depends on itself", "a -> b -> a"], None),
    ("const_self_cycle", "const a = a + 1\nloss 1.0 * a\n", 1, 1, ["const a depends on itself (a -> a)"], None),
    ("const_not_finite", "const a = 1 / 0\nloss a\n", 1, 11, ["not a finite number"], None),
    ("const_int_overflow", "const a = 9223372036854775807 + 1\nloss 1.0 * a\n", 1, 11,
     ["too large for an int"], None),
    ("duplicate_declaration", "const a = 1\nconst a = 2\nloss 1.0 * a\n", 2, 1,
     ["'a' is already declared as a const at line 1"], None),
    ("duplicate_across_kinds", "data a\nparam a = 1.0\nloss a\n", 2, 1,
     ["'a' is already declared as data at line 1"], None),
    ("comparing_arrays", "a = zeros(3)\nb = zeros(3)\nif a < b { loss 1.0 }\n", 3, 4,
     ["'<' compares numbers", "array of shape [3]"], "v[i] > 0"),
    ("indexing_a_scalar", "x = 1.0\nloss x[0]\n", 2, 6, ["only arrays can be indexed", "a float"], None),
    ("element_store_to_scalar", "x = 1.0\nx[0] = 2.0\nloss x\n", 2, 1, ["'x' is a float, not an array"], None),
    ("store_array_into_element", "v = zeros(3)\nv[0] = zeros(2)\nloss sum(v)\n", 2, 8,
     ["cannot store an array of shape [2] into an element of 'v'"], None),
    ("calling_a_local", "x = 1.0\nloss x(2.0)\n", 2, 6, ["'x' is not a function"], None),
    ("calling_data", "data d\nloss d(2.0)\n", 2, 6, ["'d' is not a function"], None),
    ("function_as_value", "fn f(a) { return a }\nx = f\nloss x\n", 2, 5, ["'f' is a function; call it"], None),
    ("builtin_as_value", "x = sin\nloss x\n", 1, 5, ["'sin' is a function; call it"], None),
    ("int_literal_too_large", "x = 99999999999999999999\nloss 1.0 * x\n", 1, 5,
     ["this integer is too large", "9223372036854775807"], None),
    ("int_literal_just_too_large", "x = 9223372036854775808\nloss 1.0 * x\n", 1, 5,
     ["too large"], None),
    pytest.param("int_literal_5000_digits", "x = " + "9" * 5_000 + "\nloss 1.0 * x\n", 1, 5,
                 ["is too large"], None,
                 id="int_literal_5000_digits"),
    ("len_of_scalar", "loss len(1.0)\n", 1, 10, ["len needs an array", "a float"], None),
    ("branch_types_differ", "data u\nif u > 0.0 {\n  t = 1.0\n} else {\n  t = 1\n}\nloss t\n", 2, 1,
     ["'t' is a float in one branch of this if and an int in the other"], None),
    ("branch_shapes_differ", "data u\nif u > 0.0 {\n  t = zeros(2)\n} else {\n  t = zeros(3)\n}\nloss sum(t)\n",
     2, 1, ["array of shape [2] in one branch", "array of shape [3] in the other"], None),
    # -- structure --
    ("return_outside_fn", "x = 1.0\nreturn x\n", 2, 1, ["return is only allowed at the end of a function"], None),
    ("fn_without_return", "fn f(a) {\n  b = a * 2.0\n}\nloss f(1.0)\n", 1, 1,
     ["function f must end with a return statement"], None),
    ("return_not_last", "fn f(a) {\n  if a > 0.0 { return a }\n  return 0.0\n}\nloss f(1.0)\n", 2, 16,
     ["return must be the last statement of function f"], None),
    ("loss_of_array", "v = zeros(3)\nloss v\n", 2, 6, ["loss needs a number", "array of shape [3]"],
     "sum(...) or mean(...)"),
    ("loss_inside_fn", "fn f(a) {\n  loss a\n  return a\n}\nloss f(1.0)\n", 2, 3,
     ["loss is not allowed inside function f"], None),
    ("output_inside_loop", "x = 0.0\nfor i in 0..3 {\n  output o = x\n}\nloss x\n", 3, 3,
     ["output belongs at the top level"], "output it after"),
    ("output_inside_fn", "fn f(a) {\n  output o = a\n  return a\n}\nloss f(1.0)\n", 2, 3,
     ["output belongs at the top level"], None),
    ("duplicate_output", "x = 1.0\noutput o = x\noutput o = 2.0 * x\nloss x\n", 3, 1,
     ["output 'o' is already written at line 2"], None),
    ("declaration_in_block", "x = 1.0\nif x > 0.0 {\n  const c = 2\n}\nloss x\n", 3, 3,
     ["const declarations belong at the top level", "not inside a block"], None),
    ("param_in_fn", "fn f(a) {\n  param q = 1.0\n  return a\n}\nloss f(1.0)\n", 2, 3,
     ["param declarations belong at the top level"], None),
    ("array_3d_param", "param w[2, 2, 2] = 0.0\nloss sum(w)\n", 1, 15,
     ["param w has 3 dimensions", "arrays have 1 or 2"], None),
    ("array_3d_zeros", "x = zeros(2, 2, 2)\nloss sum(x)\n", 1, 5, ["zeros takes 1 or 2 arguments", "3 were given"], None),
    ("data_2d", "data X[2, 2]\nloss 1.0\n", 1, 11, ["data X has 2 dimensions"], None),
    ("unknown_distribution", "param w[3] ~ gauss(0.0, 1.0)\nloss sum(w)\n", 1, 14,
     ["unknown distribution 'gauss'", "normal(MEAN, SD)", "uniform(LO, HI)"], None),
    ("normal_negative_sd", "param w[3] ~ normal(0.0, -1.0)\nloss sum(w)\n", 1, 26,
     ["standard deviation of normal must not be negative"], None),
    ("uniform_lo_above_hi", "param w[3] ~ uniform(1.0, 0.0)\nloss sum(w)\n", 1, 14, ["needs LO <= HI"], None),
    ("fn_reads_body_local", "fn f(a) {\n  return a * scale\n}\nscale = 2.0\nloss f(1.0)\n", 2, 14,
     ["unknown name 'scale'"], "sees its arguments, consts, params and data"),
    # -- --const on a located declaration --
    ("const_float_for_int", "const n = 3\nloss 1.0 * n\n", 1, 1,
     ["--const n=2.5", "n is an int const", "must be an int"], None),
]

_EXTRA_ARGS = {"const_float_for_int": ("--const", "n=2.5")}


def _param_id(p):
    return p.id if hasattr(p, "id") else p[0]


@pytest.mark.parametrize("name, program, line, col, words, note", WRONG_PROGRAMS,
                         ids=[_param_id(p) for p in WRONG_PROGRAMS])
def test_wrong_program(run_cli, write_program, name, program, line, col, words, note):
    path = write_program(program)
    expect_error(run_cli, path, line, col, words, *_EXTRA_ARGS.get(name, ()), note=note)


def test_wrong_programs_cover_every_kind():
    """The table has one row or more per kind of error the brief lists (guards against deletion)."""
    assert len(WRONG_PROGRAMS) >= 60
    ids = {_param_id(p) for p in WRONG_PROGRAMS}
    for must in ["chained_comparison", "recursion_mutual", "maybe_unassigned_after_while",
                 "const_cycle", "fn_reads_body_local", "branch_types_differ", "array_3d_param"]:
        assert must in ids


# ---- errors with no place in the program (options and files) -----------------------------

def test_const_not_a_number(run_cli, write_program):
    path = write_program("const dt = 0.1\nloss dt\n")
    r = run_cli("check", path, "--const", "dt=abc")
    assert_no_crash(r)
    assert r.code == 1
    assert "--const dt='abc'" in r.err and "must be a number" in r.err


def test_const_python_payload_is_refused_and_not_run(run_cli, write_program, tmp_path):
    marker = tmp_path / "pwned"
    path = write_program("const dt = 0.1\nloss dt\n")
    for payload in ['__import__("os").system("x")',
                    f'__import__("pathlib").Path("{marker}").touch()',
                    "1+1", "0x10", "1_000", "inf", "nan", "(1)"]:
        r = run_cli("check", path, "--const", f"dt={payload}")
        assert_no_crash(r)
        assert r.code == 1, payload
        assert "must be a number" in r.err, (payload, r.err)
    assert not marker.exists(), "a --const value was executed as Python"


@pytest.mark.parametrize("value", ["0.5", "-0.5", "+2", "1e-3", ".5", "2.5E+4", " 3 "])
def test_const_numbers_are_accepted(run_cli, write_program, value):
    path = write_program("const dt = 0.1\nloss dt\n")
    r = run_cli("check", path, "--const", f"dt={value}")
    assert r.code == 0, r.err
    assert r.out.startswith(f"{path}: ok (")


def test_const_without_equals(run_cli, write_program):
    path = write_program("const n = 3\nloss 1.0 * n\n")
    r = run_cli("check", path, "--const", "n")
    assert_no_crash(r)
    assert r.code == 1
    assert "expected NAME=VALUE" in r.err


def test_const_too_large(run_cli, write_program):
    path = write_program("const n = 3\nloss 1.0 * n\n")
    r = run_cli("check", path, "--const", "n=99999999999999999999")
    assert r.code == 1 and "the integer is too large" in r.err
    r = run_cli("check", path, "--const", "n=1e400")
    assert r.code == 1 and "too large" in r.err
    assert_no_crash(r)


def test_const_unknown_name(run_cli, write_program):
    path = write_program("const dt = 0.1\nloss dt\n")
    r = run_cli("check", path, "--const", "dtt=0.5")
    assert_no_crash(r)
    assert r.code == 1
    assert f"{path}: error: --const dtt: the program has no const named 'dtt'" in r.err
    assert "did you mean 'dt'?" in r.err


def test_const_override_is_used(run_cli, write_program):
    path = write_program("const n = 3\nv = zeros(n)\nloss sum(v)\n")
    assert run_cli("check", path, "--const", "n=5").code == 0
    r = run_cli("check", path, "--const", "n=0")
    assert r.code == 1 and "at least 1, not 0" in r.err


def test_missing_file(run_cli, tmp_path):
    path = tmp_path / "nope.dl"
    r = run_cli("check", path)
    assert_no_crash(r)
    assert r.code == 1
    assert r.err.strip() == f"{path}: error: no such file"


def test_directory_as_program(run_cli, tmp_path):
    r = run_cli("check", tmp_path)
    assert_no_crash(r)
    assert r.code == 1
    assert r.err.strip() == f"{tmp_path}: error: is a directory, not a program file"


def test_non_utf8_file(run_cli, tmp_path):
    path = tmp_path / "latin1.dl"
    path.write_bytes(b"x = 1.0\n# caf\xe9\nloss x\n")
    r = run_cli("check", path)
    assert_no_crash(r)
    assert r.code == 1
    assert str(path) in r.err
    assert "not UTF-8" in r.err


def test_non_utf8_file_has_line_and_column(run_cli, tmp_path):
    path = tmp_path / "latin1.dl"
    path.write_bytes(b"x = 1.0\n# caf\xe9\nloss x\n")
    r = run_cli("check", path)
    assert r.code == 1
    assert f"{path}:2:6: error:" in r.err


def test_empty_file_is_valid(run_cli, write_program):
    path = write_program("")
    r = run_cli("check", path)
    assert r.code == 0, r.err
    assert r.out.strip() == f"{path}: ok (0 params, 0 data inputs, 0 outputs, 0 IR statements)"
    assert "error" not in r.err
    assert "no loss statement" in r.err  # a warning, not an error


def test_comment_only_file_is_valid(run_cli, write_program):
    path = write_program("# nothing here\n\n   # still nothing\n")
    r = run_cli("check", path)
    assert r.code == 0, r.err
    assert "0 IR statements" in r.out


@pytest.mark.parametrize("args", [
    ("emit", "{P}", "--stage", "nope"),
    ("check", "{P}", "--bogus"),
    ("check",),
    ("check", "{P}", "--const"),
    ("nosuchcommand", "{P}"),
])
def test_bad_option_exits_1(run_cli, write_program, args):
    path = write_program("x = 1.0\nloss x\n")
    r = run_cli(*[str(path) if a == "{P}" else a for a in args])
    assert_no_crash(r)
    assert r.code == 1, (r.out, r.err)
    assert "Error" in r.err or "error" in r.err


def test_bad_stage_names_the_choices(run_cli, write_program):
    path = write_program("x = 1.0\nloss x\n")
    r = run_cli("emit", path, "--stage", "nope")
    assert r.code == 1
    assert "--stage" in r.err and "nope" in r.err
    assert "ast" in r.err and "ir" in r.err


# ---- more front-end bugs, each stated as the correct behaviour ---------------------------------

@pytest.mark.parametrize("program, keyword", [
    ("param if = 1.0\nloss if\n", "if"),
    ("fn loss(a) { return a }\n", "loss"),
    ("const while = 3\n", "while"),
    ("x = 0.0\nfor if in 0..3 { x += 1.0 }\n", "if"),
    ("loss 1.0\noutput loss = 2.0\n", "loss"),
])
def test_reserved_word_note_names_the_keyword_used(run_cli, write_program, program, keyword):
    path = write_program(program)
    r = run_cli("check", path)
    assert r.code == 1
    d = parse_diagnostics(r.err)[0]
    assert d.note == f"'{keyword}' is a reserved word; it cannot be used as a name", r.err


@pytest.mark.parametrize("separator", ["\x0c", "\x0b", "\x1c", "\u2028", "\u2029", "\x85"])
def test_excerpt_is_the_named_line_despite_unicode_line_breaks(run_cli, write_program, separator):
    path = write_program(f"# a comment{separator}with an odd character\nloss q\n")
    expect_error(run_cli, path, 2, 6, ["unknown name 'q'"])


def test_excerpt_after_a_plain_comment_is_the_named_line(run_cli, write_program):
    """The passing half of the test above: without odd characters the excerpt is right."""
    path = write_program("# a comment with an ordinary character\nloss q\n")
    expect_error(run_cli, path, 2, 6, ["unknown name 'q'"])


def test_crlf_end_of_line_column(run_cli, write_program):
    path = write_program("")
    path.write_bytes(b"fn f(a)\r\nloss 1.0\r\n")
    expect_error(run_cli, path, 1, 8, ["expected '{'", "end of the line"])


def test_lf_end_of_line_column(run_cli, write_program):
    path = write_program("fn f(a)\nloss 1.0\n")
    expect_error(run_cli, path, 1, 8, ["expected '{'", "end of the line"])


def test_crlf_error_location(run_cli, tmp_path):
    path = tmp_path / "crlf.dl"
    path.write_bytes(b"x = 1.0\r\ny = x * 2.0\r\nloss q\r\n")
    expect_error(run_cli, path, 3, 6, ["unknown name 'q'"])


def test_lone_carriage_return_is_consistent(run_cli, tmp_path):
    path = tmp_path / "cr.dl"
    path.write_bytes(b"x = 1.0\ry = x * 2.0\rloss y\r")
    r = run_cli("check", path)
    assert_no_crash(r)
    if r.code == 0:
        return
    d = parse_diagnostics(r.err)[0]
    assert d.source is not None and d.caret_col is not None
    assert len(d.source) >= d.caret_col, f"caret past the end of the shown line:\n{r.err}"
    assert d.source[d.caret_col - 1] == "y", r.err


def test_folded_int_overflow_is_an_error(run_cli, write_program):
    path = write_program("x = 9223372036854775807\ny = x + 1\nloss 1.0 * y\n")
    expect_error(run_cli, path, 2, 5, ["too large"])


# ---- 2. several independent errors are all reported ------------------------------------------

def test_three_independent_errors(run_cli, write_program):
    path = write_program(
        "data x\n"
        "a = y + 1.0\n"           # unknown name at 2:5
        "b = sin(1.0, 2.0)\n"     # arity at 3:5
        "param p = 1.0\n"
        "p = 3.0\n"               # write to a param at 5:1
        "loss x + a\n"
    )
    r = run_cli("check", path)
    assert_no_crash(r)
    assert r.code == 1
    diags = parse_diagnostics(r.err)
    assert [(d.line, d.col) for d in diags] == [(2, 5), (3, 5), (5, 1)], r.err
    assert "unknown name 'y'" in diags[0].message
    assert "sin takes 1 argument" in diags[1].message
    assert "cannot assign to param 'p'" in diags[2].message


def test_errors_in_a_fn_and_body_are_all_reported_in_order(run_cli, write_program):
    path = write_program(
        "loss z\n"                            # 1:6 unknown name
        "fn f(a) {\n"
        "  b = a + zeros(2)\n"
        "  return b + zeros(3)\n"             # 4:10 shape mismatch
        "}\n"
        "v = f(1.0)\n"
        "s = 0\n"
        "s += 0.5\n"                          # 8:1 int then float
    )
    r = run_cli("check", path)
    assert r.code == 1
    diags = parse_diagnostics(r.err)
    assert [(d.line, d.col) for d in diags] == [(1, 6), (4, 10), (8, 1)], r.err


def test_no_cascade_from_one_unknown_name(run_cli, write_program):
    path = write_program("a = y + 1.0\nb = a * 2.0\nc = b + a\nloss c\n")
    r = run_cli("check", path)
    assert r.code == 1
    diags = parse_diagnostics(r.err)
    assert len(diags) == 1 and "unknown name 'y'" in diags[0].message, r.err


def test_same_error_in_a_fn_called_twice_is_reported_once(run_cli, write_program):
    path = write_program("fn f(a) { return a * scale }\nloss f(1.0) + f(2.0)\n")
    r = run_cli("check", path)
    assert r.code == 1
    diags = parse_diagnostics(r.err)
    assert [(d.line, d.col) for d in diags] == [(1, 22)], r.err


# ---- 3. deep nesting -------------------------------------------------------------------------

def test_400_nested_parentheses_check_clean(run_cli, write_program):
    path = write_program("data u\nx = " + "(" * 400 + "u + 1.0" + ")" * 400 + "\nloss x\n")
    r = run_cli("check", path)
    assert r.code == 0, r.err
    assert "ok (0 params, 1 data input" in r.out


def test_200_nested_ifs_check_clean(run_cli, write_program, tmp_path):
    n = 200
    text = ("data u\nx = 0.0\n"
            + "".join(f"{'  ' * k}if u > {k}.0 {{\n" for k in range(n))
            + "  " * n + "x = 1.0\n"
            + "".join(f"{'  ' * k}}}\n" for k in reversed(range(n)))
            + "loss x\n")
    path = write_program(text)
    r = run_cli("check", path)
    assert r.code == 0, r.err
    assert "ok (0 params, 1 data input" in r.out
    # and it computes: x is 1 only when u exceeds every threshold
    prog = load_program(str(path))
    csv = tmp_path / "u.csv"
    csv.write_text("u\n500\n150\n")
    assert program_loss(prog, read_rows(prog, str(csv))) == pytest.approx(0.5)


def test_deep_nesting_of_loops_checks_clean(run_cli, write_program):
    n = 100
    text = ("x = 0.0\n" + "".join(f"for i{k} in 0..1 {{\n" for k in range(n))
            + "x += 1.0\n" + "}\n" * n + "loss x\n")
    path = write_program(text)
    assert run_cli("check", path).code == 0
    assert program_loss(load_program(str(path)), None) == 1.0


@pytest.mark.parametrize("text", [
    "x = " + "-" * 50_000 + "1.0\nloss x\n",
    "data u\nif " + "not " * 50_000 + "u > 0.0 { loss u }\n",
    "data u\nx = 0.0\n" + "if u > 1.0 {\n" * 5_000 + "x = 1.0\n" + "}\n" * 5_000 + "loss x\n",
    "x = 2.0" + " ^ 2.0" * 50_000 + "\nloss x\n",
], ids=["50k_unary_minus", "50k_not", "5k_nested_ifs", "50k_power_chain"])
def test_pathological_nesting_is_a_plain_error(run_cli, write_program, text):
    path = write_program(text)
    r = run_cli("check", path)
    assert_no_crash(r)
    assert r.code == 1, r.err
    assert f"{path}: error: the program is nested too deeply to check" in r.err


def test_50k_nested_parentheses_do_not_crash(run_cli, write_program):
    path = write_program("x = " + "(" * 50_000 + "1.0" + ")" * 50_000 + "\nloss x\n")
    r = run_cli("check", path)
    assert_no_crash(r)
    assert r.code in (0, 1)
    if r.code == 0:
        assert "ok (" in r.out
    else:
        assert "nested too deeply" in r.err


def test_long_flat_sum_checks_clean(run_cli, write_program):
    path = write_program("x = 1.0" + " + 1.0" * 5_000 + "\nloss x\n")
    r = run_cli("check", path)
    assert r.code == 0, r.err
    assert program_loss(load_program(str(path)), None) == 5001.0


# A flat chain is left-deep in the AST; the checker, the const evaluator and the AST dump fold
# it in a loop, so its length is not limited by the recursion limit.
@pytest.mark.parametrize("chain, expected", [
    ("p" + " + p" * 29_999, 15_000.0),
    ("1.0" + " + p - 0.25" * 15_000, 3_751.0),
    ("1.0" + " * 3.0 / p / 6.0" * 10_000, 1.0),
], ids=["sum", "add_sub", "mul_div"])
def test_30k_term_flat_chain_checks_and_computes(run_cli, write_program, chain, expected):
    path = write_program(f"param p = 0.5\nx = {chain}\nloss x\n")
    r = run_cli("check", path)
    assert r.code == 0, r.err
    assert math.isclose(program_loss(load_program(str(path)), None), expected, rel_tol=1e-12)


def test_30k_term_flat_sum_emits_ast_and_ir(run_cli, write_program):
    path = write_program("param p = 0.5\nx = p" + " + p" * 29_999 + "\nloss x\n")
    ast = run_cli("emit", path, "--stage", "ast")
    assert ast.code == 0, ast.err
    assert "(= x " + "(+ " * 29_999 + "p p) p)" in ast.out
    ir_text = run_cli("emit", path, "--stage", "ir")
    assert ir_text.code == 0, ir_text.err
    assert ir_text.out.count(" = add ") == 29_999


def test_30k_term_const_sum(run_cli, write_program):
    path = write_program("const c = 1" + " + 1" * 29_999 + "\nloss c * 1.0\n")
    assert run_cli("check", path).code == 0
    assert program_loss(load_program(str(path)), None) == 30_000.0


def test_long_const_chain_still_checks_int_overflow_at_each_step(run_cli, write_program):
    path = write_program("const c = 9223372036854775807" + " + 1 - 1" * 15_000 + "\nloss c * 1.0\n")
    d = expect_error(run_cli, path, 1, 11, ["int arithmetic overflows", "9223372036854775808"])
    assert d.caret_width == len("9223372036854775807 + 1")


SHORT_CHAINS = """\
param a = 0.5
param b = 1.5
param c = 2.0
param d = 3.0
param m[2, 2] = 0.5
param v[2] = 1.0
x = a + b - c + d
y = 1 + 2 * 3 - a / b * c
w = m @ m @ v
loss x + y + w[0]
"""


def test_short_chains_lower_to_the_same_ir_as_before(run_cli, write_program):
    """The IR the recursive checker gave: same equations, order, locations and names."""
    r = run_cli("emit", write_program(SHORT_CHAINS), "--stage", "ir")
    assert r.code == 0, r.err
    assert r.out == """\
param a: f64 = 0.5
param b: f64 = 1.5
param c: f64 = 2.0
param d: f64 = 3.0
param m: f64[2,2] = 0.5
param v: f64[2] = 1.0
body(%a: f64, %b: f64, %c: f64, %d: f64, %m: f64[2,2], %v: f64[2]) {
  %1: f64 = add %a %b  @7:5
  %2: f64 = sub %1 %c  @7:5
  %x: f64 = add %2 %d  @7:5
  %3: f64 = div %a %b  @8:17
  %4: f64 = mul %3 %c  @8:17
  %y: f64 = sub 7.0 %4  @8:5
  %5: f64[2,2] = matmul %m %m  @9:5
  %w: f64[2] = matmul %5 %v  @9:5
  %6: f64 = add %x %y  @10:6
  %7: f64 = index %w 0  @10:14
  %8: f64 = add %6 %7  @10:6
  return %8
}
"""


# ---- 4. Python keywords and common Python names are ordinary dlang names ---------------------

PYTHON_NAMES_PROGRAM = """\
const range = 3
const None = 0.5
data lambda, True
param np = 0.7
param numba[3] = 0.2
fn def(import, self) {
    print = import * self + None
    return print
}
fn math(class) {
    return class * 2.0
}
class = 0.0
for self in 0..range {
    class += def(lambda, np) + numba[self] * True
}
import = math(class)
output print = import
loss (import - True)^2
"""


def _python_names_oracle(rows):
    losses = []
    for lam, true in rows:
        cls = 0.0
        for k in range(3):
            cls += (lam * 0.7 + 0.5) + 0.2 * true
        imp = cls * 2.0
        losses.append((imp - true) ** 2)
    return sum(losses) / len(losses)


def test_python_names_as_dlang_names(run_cli, write_program, tmp_path):
    path = write_program(PYTHON_NAMES_PROGRAM)
    r = run_cli("check", path)
    assert r.code == 0, r.err
    assert r.out.strip().startswith(f"{path}: ok (2 params, 2 data inputs, 1 output")
    rows = [(1.0, 2.0), (-0.5, 3.0), (0.25, -1.5)]
    csv = tmp_path / "rows.csv"
    csv.write_text("lambda,True\n" + "".join(f"{a},{b}\n" for a, b in rows))
    prog = load_program(str(path))
    assert [p.name for p in prog.params] == ["np", "numba"]
    loss = program_loss(prog, read_rows(prog, str(csv)))
    assert math.isclose(loss, _python_names_oracle(rows), rel_tol=1e-12)


PYTHON_NAMES = ["lambda", "class", "None", "np", "range", "True", "def", "import", "self", "print",
                "numba", "math", "False", "yield", "exec", "eval", "os", "sys", "__init__", "_",
                "float", "int", "pass", "is", "del", "global"]

# (role, program with N for the name, CSV text or None, expected loss)
NAME_ROLES = [
    ("local", "N = 2.0\nN += 1.0\nloss N * N\n", None, 9.0),
    ("param", "param N = 1.5\nloss N * 2.0\n", None, 3.0),
    ("data", "data N\nloss N + 1.0\n", "N\n3.0\n-1.0\n", 2.0),
    ("fn_name", "fn N(a) { return a * 3.0 }\nloss N(2.0)\n", None, 6.0),
    ("fn_argument", "fn g(N) {\n  N += 1.0\n  return N * 2.0\n}\nloss g(1.0)\n", None, 4.0),
    ("loop_index", "s = 0.0\nfor N in 0..4 { s += 1.0 * N }\nloss s\n", None, 6.0),
    ("const", "const N = 4\nv = zeros(N)\nloss 1.0 * len(v) * N\n", None, 16.0),
    ("output", "x = 1.0\noutput N = x\nloss x\n", None, 1.0),
]


@pytest.mark.parametrize("role, template, csv_text, expected", NAME_ROLES, ids=[r[0] for r in NAME_ROLES])
@pytest.mark.parametrize("name", PYTHON_NAMES)
def test_each_python_name_in_every_role(run_cli, write_program, tmp_path, name, role, template,
                                        csv_text, expected):
    path = write_program(template.replace("N", name))
    r = run_cli("check", path)
    if role == "fn_name" and name == "int":  # int(x) is a dlang builtin too: it cannot be redefined
        assert r.code == 1 and "'int' is a builtin function and cannot be redefined" in r.err
        return
    assert r.code == 0, r.err
    assert r.out.startswith(f"{path}: ok (")
    prog = load_program(str(path))
    rows = None
    if csv_text is not None:
        csv = tmp_path / "d.csv"
        csv.write_text(csv_text.replace("N", name))
        rows = read_rows(prog, str(csv))
    assert program_loss(prog, rows) == expected


# ---- 5. no traceback on malformed input ------------------------------------------------------

MALFORMED = [
    "x =", "x", "x = 1.0 +", "loss", "output", "output o", "output o =", "const", "const c",
    "const c =", "data", "data x,", "data x[", "data x[3", "param", "param p", "param p =",
    "param p ~", "param p ~ normal(", "fn", "fn f", "fn f(", "fn f(a", "fn f(a)", "fn f(a) {",
    "fn f(a) { return", "for", "for i", "for i in", "for i in 0", "for i in 0..", "for i in 0..3",
    "for i in 0..3 {", "while", "while x <", "if", "if x", "if x >", "if 1 > 0 {", "}", "{", "{}",
    "((((", "))))", "[[[", "]]]", "x = (1.0]", "x = [1.0)", "x = 1.0 }", "else { x = 1.0 }",
    "if 1 > 0 { } else", "if 1 > 0 { } else else { }", "x = 1.0 +* 2.0", "x = * 2.0",
    "x = 1.0 ** 2.0", "x = 1.0 // 2.0", "x == 1.0", "x += ", "x[ = 1.0", "x[0 = 1.0",
    "x = a[", "x = f(", "x = f(,)", "x = f(1.0,)", "x = ,", "loss ;;;", ";;;", "\n\n\n",
    "x = 1.0;;loss x", "café = 1.0\nloss café", "x = 1.0\nloss x ∗ 2.0", "π = 3.14",
    "x = 1.0\n\tloss\tx\t*\t2.0\n", "x = 1.0\r\nloss x\r\n", "x = 1.0\ry = 2.0\rloss y\r",
    "x = 1.0\x00\nloss x", "\x00", "x = 1.0\nloss q\x00", "\ufeffx = 1.0\nloss x",
    "x = " + "1.0 + " * 3000 + "1.0\nloss x", "# " + "long comment " * 10_000 + "\nloss 1.0",
    "x = " + "y" * 100_000 + "\nloss x", "x = " + "9" * 4_000 + "\nloss x",
    "x = 1." + "0" * 5_000 + "\nloss x", "x = 1e99999\nloss x", "x = 1e-99999\nloss x",
    "x = .\nloss x", "x = 1..\nloss x", "x = ...5\nloss x", "for i in 0...3 { }",
    "for i in 0..3..5 { }", "fn f(a) { fn g(b) { return b } return a }", "return",
    "fn f(a) { return a }\nfn f(b) { return b }\nloss f(1.0)",
    "fn f(a) { return a }\nf = 1.0\nloss f", "loss f(1.0)\nfn f(a) { return f(a) + g(a) }\nfn g(a) { return f(a) }",
    "param w[3] ~ normal(0.0, 1.0, 2.0)\nloss sum(w)", "param w[3] ~ sin(1.0)\nloss sum(w)",
    "param w[3] ~ normal()\nloss sum(w)", "param w[n] = 0.0\nloss sum(w)",
    "param w[1e400] = 0.0\nloss sum(w)", "param w[-3] = 0.0\nloss sum(w)",
    "x = zeros(3)\ny = x @ x @ x\nloss y", "x = zeros(2, 2)\nloss x[0][0]",
    "x = zeros(2, 2)\nloss x[0]", "loss dot(1.0, 2.0)", "loss sum(1.0)", "loss mean(zeros(2) > 1.0)",
    "loss clamp(zeros(2), zeros(3), 1.0)", "loss min(zeros(2), zeros(3))",
    "x = zeros(2, 2)\nx[0] = zeros(2)\nloss sum(x)", "x = zeros(2, 2)\nx[0] = 1.0\nloss sum(x)",
    "if true and false or not true { loss 1.0 }", "if (1 > 0) > 0 { }", "if not 1 { }",
    "x = 1 < 2 < 3", "x = -true", "x = 3 ^ true", "loss len(zeros(3, 2)) * 1.0",
    "const a = sin()\nloss a", "const a = zeros(3)\nloss a", "const a = len(3)\nloss a",
    "const a = 1\nloss a(1)", "data a\ndata a\nloss a", "output o = 1.0\noutput o = 2.0",
    "while 1 > 0 { }", "x = 1.0\nwhile x > 0.0 { y = x }\nloss y",
]


@pytest.mark.parametrize("text", MALFORMED, ids=[f"m{k:03d}" for k in range(len(MALFORMED))])
def test_malformed_input_never_crashes(run_cli, tmp_path, text):
    path = tmp_path / "m.dl"
    path.write_bytes(text.encode("utf-8"))
    r = run_cli("check", path)
    assert_no_crash(r)
    assert r.code in (0, 1), (r.code, r.err)
    if r.code == 1:
        assert re.search(r": error: \S", r.err), r.err
    else:
        assert f"{path}: ok (" in r.out


def test_malformed_corpus_is_large_enough():
    assert len(MALFORMED) >= 50


@pytest.mark.parametrize("text", MALFORMED[:40], ids=[f"m{k:03d}" for k in range(40)])
def test_malformed_input_emit_never_crashes(run_cli, tmp_path, text):
    path = tmp_path / "m.dl"
    path.write_bytes(text.encode("utf-8"))
    for stage in ("ast", "ir"):
        r = run_cli("emit", path, "--stage", stage)
        assert_no_crash(r)
        assert r.code in (0, 1), (stage, r.code, r.err)


def test_form_feed_between_tokens_is_whitespace(run_cli, write_program):
    path = write_program("x =\x0c1.0\nloss x\n")
    r = run_cli("check", path)
    assert r.code == 0, r.err
    assert program_loss(load_program(str(path)), None) == 1.0


def test_crlf_program_is_valid(run_cli, tmp_path):
    path = tmp_path / "crlf.dl"
    path.write_bytes(b"data u\r\nx = u * 2.0\r\nif x > 1.0 {\r\n  x = 1.0\r\n}\r\nelse {\r\n  x = 0.0\r\n}\r\n"
                     b"loss x\r\n")
    r = run_cli("check", path)
    assert r.code == 0, r.err
    assert "ok (0 params, 1 data input" in r.out


def test_utf8_bom_is_ignored(run_cli, tmp_path):
    path = tmp_path / "bom.dl"
    path.write_bytes(b"\xef\xbb\xbfx = 1.0\nloss q\n")
    r = run_cli("check", path)
    assert r.code == 1
    d = parse_diagnostics(r.err)[0]
    assert (d.line, d.col, d.source) == (2, 6, "loss q")


def test_tab_indented_error_caret_lines_up(run_cli, write_program):
    path = write_program("x = 1.0\n\t\ty = x * 2.0\n\t\tloss q\n")
    d = expect_error(run_cli, path, 3, 8, ["unknown name 'q'"])
    assert d.source == "  loss q"


def test_unicode_identifier_is_a_plain_error(run_cli, write_program):
    path = write_program("café = 1.0\nloss café\n")
    expect_error(run_cli, path, 1, 4, ["unexpected character 'é'"])


def test_nul_byte_is_a_plain_error(run_cli, tmp_path):
    path = tmp_path / "nul.dl"
    path.write_bytes(b"x = 1.0\ny = x \x00* 2.0\nloss y\n")
    r = run_cli("check", path)
    assert_no_crash(r)
    assert r.code == 1
    d = parse_diagnostics(r.err)[0]
    assert (d.line, d.col) == (2, 7)
    assert "unexpected character '\\x00'" in d.message


# ---- 6. syntax details that must work --------------------------------------------------------

SYNTAX_PROGRAM = """\
# a comment on the first line
const a = 3            # an int
const b = 3.0 # a float
const c = .5
const d = 1e-3
const e = 2.5E+4
const f = 3.

data u   # a data column

x = 0.0; y = 1.0   ;   z = 2.0
total = clamp(a * u + b,   # a comment inside a call
              -1.0,

              1.0)
if u < 0.0 {   # a comment after a brace
    x = 1.0
}
else {
    x = 2.0
}
# a comment between statements

if u > 100.0 { x += 1.0 }
else if u > 0.0 { x += f }
else { x -= 1.0 }
for i in 0..3 { x += c * i }   \n\
for j in 0..a {
    y += d + e
}   \t
w = zeros(2,
          2)
w[0,
  1] = 1.0; w[1, 0] = 2.0
loss (x + y + z + total + sum(w))^2   # a trailing comment
"""


def test_syntax_details_check_clean(run_cli, write_program):
    path = write_program(SYNTAX_PROGRAM)
    r = run_cli("check", path)
    assert r.code == 0, r.err
    assert "ok (0 params, 1 data input" in r.out


def test_syntax_details_compute_what_they_say(write_program, tmp_path):
    prog = load_program(str(write_program(SYNTAX_PROGRAM)))
    consts = dict(prog.consts)
    assert consts["a"] == 3 and isinstance(consts["a"], int)
    assert consts["b"] == 3.0 and isinstance(consts["b"], float)
    assert consts["c"] == 0.5
    assert consts["d"] == 1e-3
    assert consts["e"] == 25000.0
    assert consts["f"] == 3.0 and isinstance(consts["f"], float)
    csv = tmp_path / "u.csv"
    csv.write_text("u\n0.5\n-2.0\n")
    u_rows = [0.5, -2.0]

    def oracle(u):
        total = min(max(3 * u + 3.0, -1.0), 1.0)
        x = 1.0 if u < 0.0 else 2.0
        x += 1.0 if u > 100.0 else (3.0 if u > 0.0 else -1.0)
        x += 0.5 * (0 + 1 + 2)
        y = 1.0 + 3 * (1e-3 + 25000.0)
        return (x + y + 2.0 + total + 3.0) ** 2

    expected = sum(oracle(u) for u in u_rows) / 2
    assert math.isclose(program_loss(prog, read_rows(prog, str(csv))), expected, rel_tol=1e-12)


def test_file_without_final_newline(run_cli, tmp_path):
    path = tmp_path / "nonl.dl"
    path.write_bytes(b"x = 2.0\nloss x")
    r = run_cli("check", path)
    assert r.code == 0, r.err
    assert program_loss(load_program(str(path)), None) == 2.0


def test_semicolons_inside_blocks_and_repeated(run_cli, write_program):
    path = write_program("x = 0.0;\nfor i in 0..2 { x += 1.0; x *= 2.0; }\n;loss x;;\n")
    r = run_cli("check", path)
    assert r.code == 0, r.err
    assert program_loss(load_program(str(path)), None) == 6.0  # ((0+1)*2+1)*2


@pytest.mark.parametrize("header, n", [("0..3", 3), ("0 .. 3", 3), ("1..1", 0), ("2..a", 1),
                                       ("a-3..a", 3), ("0..a*2", 6)])
def test_range_tokens(run_cli, write_program, header, n):
    path = write_program(f"const a = 3\ncount = 0\nfor i in {header} {{ count += 1 }}\nloss 1.0 * count\n")
    r = run_cli("check", path)
    assert r.code == 0, r.err
    assert program_loss(load_program(str(path)), None) == float(n)


@pytest.mark.parametrize("literal, value", [("3", 3), ("3.0", 3.0), (".5", 0.5), ("1e-3", 1e-3),
                                            ("2.5E+4", 25000.0), ("3.", 3.0), ("1E3", 1000.0),
                                            ("0.25e1", 2.5)])
def test_number_literals(write_program, literal, value):
    prog = load_program(str(write_program(f"const k = {literal}\nloss 1.0 * k\n")))
    got = dict(prog.consts)["k"]
    assert got == value and type(got) is type(value)


def test_power_and_unary_minus_precedence(write_program):
    prog = load_program(str(write_program("x = 3.0\nloss -x^2 + 2.0^3^2 + x^-2 - -x\n")))
    assert program_loss(prog, None) == pytest.approx(-9.0 + 512.0 + 1.0 / 9.0 + 3.0)


def test_a_name_used_before_its_assignment_says_so(run_cli, write_program):
    prog = write_program("param a = 1.0\ny = x + a\nfor i in 0..2 {\n    x = 2.0\n}\nloss y^2\n")
    r = run_cli("check", prog)
    assert r.code == 1
    assert f"{prog}:2:5: error: 'x' is used before it is assigned (at line 4)" in r.err
    assert "move this use after line 4" in r.err and "unknown name" not in r.err
    r = run_cli("check", write_program("param a = 1.0\ny = q + a\nloss y^2\n", "q.dl"))
    assert "unknown name 'q'" in r.err  # a name never assigned is still unknown
