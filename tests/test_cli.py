"""The check and emit commands: output, highlighting on a terminal, plain text when piped."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from dlang.frontend import load_program, parse_source, read_source
from dlang.irtext import print_program
from dlang.nodes import dump

from conftest import PROGRAMS, ROOT

PROJECTILE = PROGRAMS / "projectile.dl"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_check_prints_a_one_line_summary(run_cli):
    r = run_cli("check", PROJECTILE)
    assert r.code == 0
    assert r.out.strip().splitlines() == [f"{PROJECTILE}: ok (2 params, 2 data inputs, 1 output, 26 IR statements)"]
    # its `if y >= 0.0` depends on the params: said on stderr (docs/events.md)
    assert r.err.startswith(f"{PROJECTILE}:14:5: warning: this `if` condition depends on 'drag', 'angle'")


def test_check_warns_when_there_is_no_loss(run_cli, write_program):
    path = write_program("data x\noutput y = 2.0 * x\n")
    r = run_cli("check", path)
    assert r.code == 0
    assert "warning: no loss statement" in r.err


def test_emit_ir_when_piped_is_exactly_the_ir_text(run_cli):
    r = run_cli("emit", PROJECTILE, "--stage", "ir")
    assert r.code == 0
    assert r.out == print_program(load_program(str(PROJECTILE)))
    assert not ANSI.search(r.out)


def test_emit_ast_when_piped_is_the_s_expression(run_cli):
    r = run_cli("emit", PROJECTILE, "--stage", "ast")
    assert r.code == 0
    assert r.out == dump(parse_source(read_source(str(PROJECTILE))))
    assert r.out.startswith("(program\n  (const dt 0.01)  ; 2:1\n")


def test_emit_applies_const_overrides(run_cli):
    r = run_cli("emit", PROJECTILE, "--const", "steps=7")
    assert r.code == 0
    assert "const steps = 7" in r.out and "for 0 7 " in r.out


def _run_dlang(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "dlang.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_emit_is_highlighted_on_a_terminal():
    for stage in ("ir", "ast"):
        r = _run_dlang("emit", str(PROJECTILE), "--stage", stage,
                       env_extra={"FORCE_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "200"})
        assert r.returncode == 0, r.stderr
        assert ANSI.search(r.stdout), f"no colour in the {stage} output on a terminal"
        plain = ANSI.sub("", r.stdout)
        assert "sqrt" in plain and "dist" in plain


def test_errors_from_a_real_process_have_no_traceback_and_exit_1(tmp_path):
    bad = tmp_path / "bad.dl"
    bad.write_text("data x\nloss y\n")
    r = _run_dlang("check", str(bad))
    assert r.returncode == 1
    assert f"{bad}:2:6: error: unknown name 'y'" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_help_lists_the_commands(run_cli):
    r = run_cli("--help")
    assert r.code == 0
    assert "check" in r.out and "emit" in r.out


def test_a_real_process_flushes_all_its_output_before_its_fast_exit(run_cli):
    """The `dlang` command ends with os._exit (skipping a slow interpreter teardown): what it
    printed must all be there, the same as in-process."""
    program = str(PROGRAMS / "builtins_tour.dl")
    inproc = run_cli("emit", program, "--stage", "kernel")
    r = _run_dlang("emit", program, "--stage", "kernel")
    assert r.returncode == 0 and inproc.code == 0
    assert len(r.stdout) > 10_000 and r.stdout == inproc.out


def test_ctrl_c_outside_training_says_interrupted_and_exits_130(tmp_path):
    import signal
    import time

    env = dict(os.environ, DLANG_CACHE_DIR=str(tmp_path / "cache"))  # a cold compile: seconds of Python
    proc = subprocess.Popen([sys.executable, "-m", "dlang.cli", "grad", str(PROGRAMS / "builtins_tour.dl"), "--data",
                             str(PROGRAMS / "data" / "builtins_tour.csv"), "--check"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the command finished before the signal arrived")
    assert proc.returncode == 130, err
    # (after the warnings about the program's param-dependent `if`s, docs/events.md)
    assert err.strip().splitlines()[-1] == "dlang: interrupted" and "Traceback" not in err
