"""Data files beyond one CSV (issue 15, item 4): Parquet with the same column rules and errors
as CSV, and a directory or glob of CSV/Parquet files read as one table."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import PROGRAMS

PROG = PROGRAMS / "projectile_landing.dl"
CSV = PROGRAMS / "data" / "projectile_landing.csv"


def _parquet(path, columns: dict):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def _grad(run_cli, data):
    r = run_cli("grad", PROG, "--data", data, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_a_parquet_file_and_its_csv_give_identical_results(run_cli, tmp_path):
    table = np.loadtxt(CSV, delimiter=",", skiprows=1)
    pq = _parquet(tmp_path / "d.parquet", {"v0": table[:, 0], "dist": table[:, 1], "extra": table[:, 0] * 0})
    assert _grad(run_cli, pq) == _grad(run_cli, CSV)
    out_csv, out_pq = tmp_path / "a.json", tmp_path / "b.json"
    assert run_cli("train", PROG, "--data", CSV, "--out", out_csv, "--epochs", "5").code == 0
    assert run_cli("train", PROG, "--data", pq, "--out", out_pq, "--epochs", "5").code == 0
    assert json.loads(out_csv.read_text()) == json.loads(out_pq.read_text())


def test_integer_columns_are_read_as_numbers(run_cli, tmp_path):
    pq = _parquet(tmp_path / "d.parquet", {"v0": np.array([20, 25], dtype=np.int64), "dist": [10.0, 12.0]})
    csv = tmp_path / "d.csv"
    csv.write_text("v0,dist\n20,10.0\n25,12.0\n")
    assert _grad(run_cli, pq) == _grad(run_cli, csv)


@pytest.mark.parametrize("columns, message", [
    ({"v0": [20.0], "distance": [1.0]}, "no column 'dist' (data dist of the program reads it); did you mean 'distance'?"),
    ({"v0": [20.0, None], "dist": [1.0, 2.0]}, "row 2, column 'v0': the cell is empty"),
    ({"v0": [20.0, float("nan")], "dist": [1.0, 2.0]}, "row 2, column 'v0': nan is not a finite number"),
    ({"v0": ["a", "b"], "dist": [1.0, 2.0]}, "column 'v0' holds string, not numbers"),
])
def test_parquet_errors_name_the_column_and_row(run_cli, tmp_path, columns, message):
    pq = _parquet(tmp_path / "d.parquet", columns)
    r = run_cli("grad", PROG, "--data", pq)
    assert r.code == 1 and f"{pq}: error: {message}" in r.err and "Traceback" not in r.err


def test_drop_bad_rows_on_parquet(run_cli, tmp_path):
    pq = _parquet(tmp_path / "d.parquet", {"v0": [20.0, None, 25.0], "dist": [10.0, 11.0, 12.0]})
    r = run_cli("grad", PROG, "--data", pq, "--drop-bad-rows", "--json")
    assert r.code == 0 and "skipped 1 bad row of 3" in r.err
    csv = tmp_path / "d.csv"
    csv.write_text("v0,dist\n20.0,10.0\n25.0,12.0\n")
    assert json.loads(r.out) == _grad(run_cli, csv)


def test_a_directory_or_glob_of_files_is_one_table(run_cli, tmp_path):
    lines = CSV.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    d = tmp_path / "parts"
    d.mkdir()
    (d / "a.csv").write_text("\n".join([header] + rows[:40]) + "\n")
    table = np.array([[float(x) for x in r.split(",")] for r in rows[40:]])
    _parquet(d / "b.parquet", {"v0": table[:, 0], "dist": table[:, 1]})
    (d / "notes.txt").write_text("not data")
    whole, parts = _grad(run_cli, CSV), _grad(run_cli, d)
    assert parts["loss"] == pytest.approx(whole["loss"], rel=1e-14)
    for k in whole["grad"]:
        assert parts["grad"][k] == pytest.approx(whole["grad"][k], rel=1e-14)
    assert _grad(run_cli, str(d / "*")) == _grad(run_cli, d)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("grad", PROG, "--data", empty)
    assert r.code == 1 and "is a directory with no .csv or .parquet files in it" in r.err
    r = run_cli("grad", PROG, "--data", str(tmp_path / "nothing*.csv"))
    assert r.code == 1 and "no .csv or .parquet file matches this pattern" in r.err


def test_run_reads_parquet_and_directories_too(run_cli, tmp_path):
    table = np.loadtxt(CSV, delimiter=",", skiprows=1)
    pq = _parquet(tmp_path / "d.parquet", {"v0": table[:, 0], "dist": table[:, 1]})
    a, b = run_cli("run", PROG, "--data", pq), run_cli("run", PROG, "--data", CSV)
    assert a.code == 0, a.err
    assert [[float(x) for x in line.split(",")] for line in a.out.splitlines()[1:]] == \
        [[float(x) for x in line.split(",")] for line in b.out.splitlines()[1:]]
    d = tmp_path / "dir"
    d.mkdir()
    (d / "x.csv").write_text(CSV.read_text())
    c = run_cli("run", PROG, "--data", d)
    assert c.code == 0 and c.out == b.out
