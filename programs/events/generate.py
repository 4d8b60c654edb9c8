"""Data for the event examples, drawn from the programs themselves with known params plus
noise (python programs/events/generate.py writes the three CSVs beside this file):

- the contract's projectile (programs/projectile.dl), drag 0.05, angle 0.8: the gallery's
  launch speeds, landing distance + N(0, 0.05 m);
- the bouncing ball stepped in time (bouncing_ball_steps.dl), e 0.7, g 9.81: 200 times in
  [1, 3] s, height + N(0, 0.01 m);
- the draining tank (draining_tank.dl), k 0.8: 100 start heights in [0.5, 3] m, the time it
  ran dry + N(0, 0.02 s).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TRUTH = {"projectile": {"drag": 0.05, "angle": 0.8}, "bouncing_ball_steps": {"e": 0.7, "g": 9.81},
         "draining_tank": {"k": 0.8}}


def _outputs(path: Path, data: np.ndarray, params: dict) -> np.ndarray:
    from dlang.frontend import load_program
    from dlang.pipeline import compile_kernels

    return compile_kernels(load_program(str(path))).forward_rows(data, params)[1][:, 0]


def datasets(seed: int = 12) -> dict[str, tuple[list[str], np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    v0 = np.loadtxt(HERE.parent / "data" / "projectile.csv", delimiter=",", skiprows=1)[:, 0]
    land = _outputs(HERE.parent / "projectile.dl", np.column_stack([v0, 0 * v0]), TRUTH["projectile"])
    out["projectile"] = (["v0", "dist"], np.column_stack([v0, land + rng.normal(0, 0.05, len(v0))]))
    t = rng.uniform(1, 3, 200)
    y = _outputs(HERE / "bouncing_ball_steps.dl", np.column_stack([t, 0 * t]), TRUTH["bouncing_ball_steps"])
    out["bouncing_ball_steps"] = (["t_end", "y_obs"], np.column_stack([t, y + rng.normal(0, 0.01, len(t))]))
    h0 = rng.uniform(0.5, 3, 100)
    dry = _outputs(HERE / "draining_tank.dl", np.column_stack([h0, 0 * h0]), TRUTH["draining_tank"])
    out["draining_tank"] = (["h0", "t_dry"], np.column_stack([h0, dry + rng.normal(0, 0.02, len(h0))]))
    return out


def write(directory: Path = HERE) -> None:
    for name, (header, rows) in datasets().items():
        np.savetxt(directory / f"{name}.csv", rows, delimiter=",", header=",".join(header), comments="", fmt="%.10g")


if __name__ == "__main__":
    write()
