"""dlang bench: figures, not timed tests. Checks the report's shape and consistency only."""
from __future__ import annotations

import json

from conftest import PROGRAMS

KEYS = {"compile_cold_s", "compile_cached_s", "forward_ms", "grad_ms", "grad_over_forward", "jvp_ms", "hvp_ms", "rows", "threads",
        "tape_bytes_per_row"}


def test_bench_json_reports_every_figure(run_cli):
    r = run_cli("bench", PROGRAMS / "projectile.dl", "--data", PROGRAMS / "data" / "projectile.csv",
                "--repeat", "2", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert set(report) == KEYS
    assert report["rows"] == 200 and report["threads"] >= 1
    assert all(report[k] > 0 for k in KEYS)
    assert report["grad_over_forward"] == report["grad_ms"] / report["forward_ms"]
    # the projectile tapes a handful of values per step of its 400-step loop
    assert 400 * 8 < report["tape_bytes_per_row"] < 400 * 8 * 20


def test_bench_table_and_bad_repeat(run_cli):
    prog = PROGRAMS / "linear_regression.dl"
    data = PROGRAMS / "data" / "linear_regression.csv"
    r = run_cli("bench", prog, "--data", data, "--repeat", "0")
    assert r.code == 1 and "--repeat must be at least 1" in r.err
    r = run_cli("bench", prog, "--data", data, "--repeat", "1")
    assert r.code == 0, r.err
    assert "compile, cold cache" in r.out and "gradient / forward" in r.out
