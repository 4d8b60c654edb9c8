"""Plots: `dlang train --plot DIR`, `dlang plot`, Model.plot_fit: real PNGs a person can read."""
from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest

import dlang

from conftest import PROGRAMS

SIR, SIR_CSV = PROGRAMS / "sir.dl", PROGRAMS / "data" / "sir.csv"
LANDING, LANDING_CSV = PROGRAMS / "projectile_landing.dl", PROGRAMS / "data" / "projectile_landing.csv"


def _png(path, min_width=800, min_height=400):
    """A valid PNG of a sensible size, not blank: returns its pixels."""
    from matplotlib.image import imread

    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", path
    assert raw[12:16] == b"IHDR"
    width, height = struct.unpack(">II", raw[16:24])
    assert width >= min_width and height >= min_height, (width, height)
    assert 10_000 < len(raw) < 5_000_000, len(raw)
    pixels = imread(str(path))[:, :, :3]
    assert pixels.shape[:2] == (height, width)
    colored = np.ptp(pixels, axis=2) > 0.2  # the lines and points are in colour; text and axes are grey
    assert colored.mean() > 0.001, "no curve was drawn"
    dark = pixels.max(axis=2) < 0.3  # text: the title and the axis labels
    assert dark.mean() > 0.001
    return pixels


def test_train_plot_draws_the_loss_and_each_param(run_cli, tmp_path):
    out_dir = tmp_path / "plots"
    r = run_cli("train", SIR, "--data", SIR_CSV, "--fix", "N", "--out", tmp_path / "p.json", "--plot", out_dir)
    assert r.code == 0, r.err
    assert f"wrote {out_dir / 'loss.png'}" in r.err and f"wrote {out_dir / 'params.png'}" in r.err
    _png(out_dir / "loss.png")
    _png(out_dir / "params.png", min_width=1200, min_height=300)


def test_plot_a_fitted_time_series_and_observed_against_predicted(run_cli, tmp_path):
    params = tmp_path / "p.json"
    assert run_cli("train", SIR, "--data", SIR_CSV, "--fix", "N", "--out", params).code == 0
    r = run_cli("plot", SIR, "--data", SIR_CSV, "--params", params, "--x", "day", "--y", "infected",
                "--fit", "fitted", "--out", tmp_path / "fit.png")
    assert r.code == 0, r.err
    _png(tmp_path / "fit.png")
    r = run_cli("plot", LANDING, "--data", LANDING_CSV, "--y", "dist", "--fit", "landing",
                "--out", tmp_path / "scatter.png")
    assert r.code == 0, r.err
    _png(tmp_path / "scatter.png")


def test_plot_errors(run_cli, tmp_path):
    out = tmp_path / "f.png"
    r = run_cli("plot", SIR, "--data", SIR_CSV, "--x", "day", "--y", "infected", "--fit", "curve", "--out", out)
    assert r.code == 1 and "the program has no output named 'curve' (its outputs: fitted)" in r.err
    r = run_cli("plot", SIR, "--data", SIR_CSV, "--x", "week", "--y", "infected", "--fit", "fitted", "--out", out)
    assert r.code == 1 and "no column 'week'" in r.err
    r = run_cli("plot", SIR, "--data", SIR_CSV, "--x", "day", "--y", "infected", "--out", out)
    assert r.code == 1 and "--fit" in r.err
    assert not out.exists()
    r = run_cli("train", SIR, "--data", SIR_CSV, "--out", tmp_path / "p.json", "--plot", SIR_CSV)
    assert r.code == 1 and "is a file, not a directory" in r.err


def test_model_plot_fit_takes_a_column_the_program_does_not_read(tmp_path):
    model = dlang.compile_source("data x, y\nparam a = 1.0\noutput pred = a * x\nloss (a * x - y)^2\n")
    t = np.arange(30.0)
    frame = pd.DataFrame({"time_s": t, "x": np.sin(t / 5), "y": 2.0 * np.sin(t / 5)})
    fit = model.fit(frame)
    path = model.plot_fit(fit.params, frame, x="time_s", y="y", fit="pred", out=tmp_path / "t.png")
    assert path == str(tmp_path / "t.png")
    _png(tmp_path / "t.png")
