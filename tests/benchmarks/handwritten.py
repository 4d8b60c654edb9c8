"""Hand-written Numba forward and adjoint kernels, the baselines dlang's generated code is
measured against (tests/benchmarks/run.py). Each computes the same mean loss and gradient as
the dlang program named in its docstring, over all rows, serially."""
from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def projectile_forward(data, drag, angle):
    """programs/projectile.dl"""
    total = 0.0
    for r in range(data.shape[0]):
        v0, dist = data[r, 0], data[r, 1]
        x = 0.0
        y = 0.0
        vx = v0 * math.cos(angle)
        vy = v0 * math.sin(angle)
        for i in range(400):
            if y >= 0.0:
                s = math.sqrt(vx * vx + vy * vy)
                vx -= 0.01 * drag * s * vx
                vy -= 0.01 * (9.81 + drag * s * vy)
                x += 0.01 * vx
                y += 0.01 * vy
        total += (x - dist) ** 2
    return total / data.shape[0]


@njit(cache=True, error_model="numpy")
def projectile_grad(data, drag, angle):
    """programs/projectile.dl: loss and (d/d drag, d/d angle); the steps taken are recorded
    (vx, vy, s before each active step) and replayed backwards."""
    n = data.shape[0]
    tape = np.empty((400, 3))
    total = 0.0
    g_drag = 0.0
    g_angle = 0.0
    for r in range(n):
        v0, dist = data[r, 0], data[r, 1]
        x = 0.0
        y = 0.0
        ca, sa = math.cos(angle), math.sin(angle)
        vx = v0 * ca
        vy = v0 * sa
        steps = 0
        for i in range(400):
            if y >= 0.0:
                s = math.sqrt(vx * vx + vy * vy)
                tape[steps, 0] = vx
                tape[steps, 1] = vy
                tape[steps, 2] = s
                steps += 1
                vx -= 0.01 * drag * s * vx
                vy -= 0.01 * (9.81 + drag * s * vy)
                x += 0.01 * vx
                y += 0.01 * vy
        total += (x - dist) ** 2
        b_x = 2.0 * (x - dist)
        b_vx = 0.0
        b_vy = 0.0
        b_drag = 0.0
        for k in range(steps - 1, -1, -1):
            vx0, vy0, s = tape[k, 0], tape[k, 1], tape[k, 2]
            # y += dt * vy (y has no adjoint: it only decides branches); x += dt * vx_new
            b_vx += 0.01 * b_x
            # vy_new = vy0 - dt * (g + drag * s * vy0)
            b_s = -0.01 * drag * vy0 * b_vy
            b_drag += -0.01 * s * vy0 * b_vy
            b_vy0 = b_vy * (1.0 - 0.01 * drag * s)
            # vx_new = vx0 - dt * drag * s * vx0
            b_s += -0.01 * drag * vx0 * b_vx
            b_drag += -0.01 * s * vx0 * b_vx
            b_vx0 = b_vx * (1.0 - 0.01 * drag * s)
            # s = sqrt(vx0^2 + vy0^2)
            b_vx = b_vx0 + b_s * vx0 / s
            b_vy = b_vy0 + b_s * vy0 / s
        g_drag += b_drag
        g_angle += b_vx * (-v0 * sa) + b_vy * (v0 * ca)
    return total / n, g_drag / n, g_angle / n
