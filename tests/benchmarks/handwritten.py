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


# ---- bouncing ball: a while loop whose trip count differs per row ---------------------------------

@njit(cache=True, error_model="numpy")
def bouncing_ball_forward(data, e, g):
    """programs/bouncing_ball.dl"""
    total = 0.0
    for r in range(data.shape[0]):
        h0, t_obs, h_obs = data[r, 0], data[r, 1], data[r, 2]
        t = math.sqrt(2.0 * h0 / g)
        v = g * t
        n = 0
        while n < 50 and t + 2.0 * e * v / g <= t_obs:
            v *= e
            t += 2.0 * v / g
            n += 1
        up = e * v
        tau = t_obs - t
        h = up * tau - 0.5 * g * tau ** 2
        total += (h - h_obs) ** 2
    return total / data.shape[0]


@njit(cache=True, error_model="numpy")
def bouncing_ball_grad(data, e, g):
    """programs/bouncing_ball.dl: loss and (d/d e, d/d g). Each bounce records the speed before
    it (the tape holds at most max_bounces = 50 of them); the reverse sweep replays the row's
    own number of bounces backwards."""
    n_rows = data.shape[0]
    tape = np.empty(50)
    total = 0.0
    g_e = 0.0
    g_g = 0.0
    for r in range(n_rows):
        h0, t_obs, h_obs = data[r, 0], data[r, 1], data[r, 2]
        t0 = math.sqrt(2.0 * h0 / g)
        t = t0
        v = g * t0
        n = 0
        while n < 50 and t + 2.0 * e * v / g <= t_obs:
            tape[n] = v
            v *= e
            t += 2.0 * v / g
            n += 1
        up = e * v
        tau = t_obs - t
        h = up * tau - 0.5 * g * tau ** 2
        total += (h - h_obs) ** 2
        # h = up * tau - 0.5 g tau^2, up = e v, tau = t_obs - t
        b_h = 2.0 * (h - h_obs)
        b_tau = b_h * (up - g * tau)
        b_g = -0.5 * tau * tau * b_h
        b_e = b_h * tau * v
        b_v = b_h * tau * e
        b_t = -b_tau
        for k in range(n - 1, -1, -1):
            v_before = tape[k]
            v_after = v_before * e
            # t_new = t + 2 v_after / g  (b_t passes through unchanged)
            b_v_after = b_v + 2.0 * b_t / g
            b_g -= b_t * 2.0 * v_after / (g * g)
            # v_after = v_before * e
            b_e += b_v_after * v_before
            b_v = b_v_after * e
        # v = g t0, t0 = sqrt(2 h0 / g)
        b_g += b_v * t0
        b_t += b_v * g
        b_g -= b_t * t0 / (2.0 * g)
        g_e += b_e
        g_g += b_g
    return total / n_rows, g_e / n_rows, g_g / n_rows


# ---- linear regression: no loop in the row, nothing to tape ------------------------------------

@njit(cache=True, error_model="numpy")
def linear_regression_forward(data, w, b):
    """programs/linear_regression.dl (data columns X_0 ... X_7, y); the ridge term, the same for
    every row, is computed once."""
    n_rows, m = data.shape[0], w.shape[0]
    ridge = 0.0
    for i in range(m):
        ridge += w[i] * w[i]
    ridge = 1e-3 * ridge / m
    total = 0.0
    for r in range(n_rows):
        pred = b
        for i in range(m):
            pred += w[i] * data[r, i]
        total += (pred - data[r, m]) ** 2
    return total / n_rows + ridge


@njit(cache=True, error_model="numpy")
def linear_regression_grad(data, w, b):
    """programs/linear_regression.dl: loss, d/d w (an array) and d/d b."""
    n_rows, m = data.shape[0], w.shape[0]
    ridge = 0.0
    for i in range(m):
        ridge += w[i] * w[i]
    ridge = 1e-3 * ridge / m
    g_w = np.zeros(m)
    g_b = 0.0
    total = 0.0
    for r in range(n_rows):
        pred = b
        for i in range(m):
            pred += w[i] * data[r, i]
        resid = pred - data[r, m]
        total += resid * resid
        b_pred = 2.0 * resid
        for i in range(m):
            g_w[i] += b_pred * data[r, i]
        g_b += b_pred
    for i in range(m):  # the mean over rows, plus the ridge term's 2 * 1e-3 * w / m
        g_w[i] = g_w[i] / n_rows + 2.0 * 1e-3 * w[i] / m
    return total / n_rows + ridge, g_w, g_b / n_rows


# ---- a small MLP: tanh hidden layer, logistic loss, weight decay ---------------------------------

@njit(cache=True, error_model="numpy")
def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@njit(cache=True, error_model="numpy")
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@njit(cache=True, error_model="numpy")
def mlp_forward(data, W1, b1, w2, b2):
    """programs/mlp.dl (data columns x_0, x_1, x_2, label); the weight decay, the same for every
    row, is computed once."""
    n_rows = data.shape[0]
    n_hidden, n_in = W1.shape
    decay = 0.0
    for i in range(n_hidden):
        for j in range(n_in):
            decay += W1[i, j] * W1[i, j]
    total = 0.0
    for r in range(n_rows):
        s = b2
        for i in range(n_hidden):
            z = b1[i]
            for j in range(n_in):
                z += W1[i, j] * data[r, j]
            s += w2[i] * math.tanh(z)
        total += _softplus(-data[r, n_in] * s)
    return total / n_rows + 1e-3 * decay


@njit(cache=True, error_model="numpy")
def mlp_grad(data, W1, b1, w2, b2):
    """programs/mlp.dl: loss and d/d W1, b1, w2, b2. The hidden activations of the row are its
    tape (the reverse of tanh and of w2 . h needs them)."""
    n_rows = data.shape[0]
    n_hidden, n_in = W1.shape
    decay = 0.0
    for i in range(n_hidden):
        for j in range(n_in):
            decay += W1[i, j] * W1[i, j]
    h = np.empty(n_hidden)
    g_W1 = np.zeros((n_hidden, n_in))
    g_b1 = np.zeros(n_hidden)
    g_w2 = np.zeros(n_hidden)
    g_b2 = 0.0
    total = 0.0
    for r in range(n_rows):
        label = data[r, n_in]
        s = b2
        for i in range(n_hidden):
            z = b1[i]
            for j in range(n_in):
                z += W1[i, j] * data[r, j]
            h[i] = math.tanh(z)
            s += w2[i] * h[i]
        u = -label * s
        total += _softplus(u)
        b_s = -label * _sigmoid(u)  # d softplus(u) / du = sigmoid(u)
        g_b2 += b_s
        for i in range(n_hidden):
            g_w2[i] += b_s * h[i]
            b_z = b_s * w2[i] * (1.0 - h[i] * h[i])
            g_b1[i] += b_z
            for j in range(n_in):
                g_W1[i, j] += b_z * data[r, j]
    for i in range(n_hidden):  # means over rows, plus the decay term's 2 * 1e-3 * W1
        g_b1[i] /= n_rows
        g_w2[i] /= n_rows
        for j in range(n_in):
            g_W1[i, j] = g_W1[i, j] / n_rows + 2.0 * 1e-3 * W1[i, j]
    return total / n_rows + 1e-3 * decay, g_W1, g_b1, g_w2, g_b2 / n_rows


# ---- one oscillator over 200,000 steps: a long tape --------------------------------------------

@njit(cache=True, error_model="numpy")
def oscillator_long_forward(k, c):
    """tests/benchmarks/oscillator_long.dl (no data: one row)"""
    x = 0.5
    v = 0.0
    total = 0.0
    for j in range(200):
        for step in range(1000):
            v += 0.001 * (-k * x - c * v) / 1.0
            x += 0.001 * v
        t = 0.001 * 1000.0 * (j + 1)
        total += (x - 0.5 * math.cos(1.9 * t)) ** 2
    return total


@njit(cache=True, error_model="numpy")
def oscillator_long_grad(k, c):
    """tests/benchmarks/oscillator_long.dl: loss and (d/d k, d/d c). The tape holds (x, v) before
    each of the 200,000 steps (3.2 MB) and each sighting's residual; the reverse sweep replays
    the steps backwards, adding each sighting's residual to x's adjoint on the way."""
    n_obs, per_obs, dt = 200, 1000, 0.001
    tape = np.empty((n_obs * per_obs, 2))
    resid = np.empty(n_obs)
    x = 0.5
    v = 0.0
    total = 0.0
    p = 0
    for j in range(n_obs):
        for step in range(per_obs):
            tape[p, 0] = x
            tape[p, 1] = v
            p += 1
            v += dt * (-k * x - c * v) / 1.0
            x += dt * v
        t = dt * 1000.0 * (j + 1)
        d = x - 0.5 * math.cos(1.9 * t)
        resid[j] = d
        total += d * d
    b_x = 0.0
    b_v = 0.0
    b_k = 0.0
    b_c = 0.0
    for j in range(n_obs - 1, -1, -1):
        b_x += 2.0 * resid[j]
        for step in range(per_obs):
            p -= 1
            x0, v0 = tape[p, 0], tape[p, 1]
            # x_new = x0 + dt * v_new
            b_v += dt * b_x
            # v_new = v0 + dt * (-k x0 - c v0) / mass
            b_f = dt * b_v
            b_k -= b_f * x0
            b_c -= b_f * v0
            b_x -= k * b_f
            b_v -= c * b_f
    return total, b_k, b_c
