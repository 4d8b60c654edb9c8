"""Plots, as PNG files: a fit's loss history and param paths, and data against a program's output.

Drawn with matplotlib's object API (a Figure and the Agg canvas: no pyplot state, no display
needed). Every plot has a title and labelled axes; columns are named as in the data, so their
units are what the user's column names say.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .errors import InputError

SIZE = (8.0, 5.0)   # inches; at DPI, an 1200 x 750 PNG
DPI = 150
MAX_PARAM_PANELS = 16  # past this many param entries, the paths of the first ones are drawn


def _figure(size=SIZE):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    import io

    from .params import write_bytes_atomically

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    write_bytes_atomically(path, buffer.getvalue())
    return path


def history_plots(epochs: list, names: list[str], values: np.ndarray | None, out_dir: str,
                  title: str) -> list[str]:
    """loss.png (the loss and the best loss by epoch, a log scale when every loss is positive)
    and, with the params' values by epoch (epochs x entries), params.png (one panel per param
    entry, its value by epoch). Returns the paths written."""
    from matplotlib.ticker import MaxNLocator

    os.makedirs(out_dir, exist_ok=True)
    x = np.array([e.epoch for e in epochs], float)
    loss = np.array([e.loss for e in epochs], float)
    best = np.array([e.best_loss for e in epochs], float)
    finite = loss[np.isfinite(loss)]
    gap = loss - np.min(finite) if finite.size else loss
    show_gap = finite.size >= 3 and np.any(gap[np.isfinite(gap)] > 0)
    fig = _figure((SIZE[0], SIZE[1] * 1.5) if show_gap else SIZE)
    axes = fig.subplots(2 if show_gap else 1, 1, squeeze=False)[:, 0]
    ax = axes[0]
    ax.plot(x, loss, marker="o", markersize=3, label="loss")
    ax.plot(x, best, linestyle="--", label="best loss so far")
    if finite.size and np.all(finite > 0) and finite.max() / max(finite.min(), 1e-300) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(f"{title}: loss by epoch")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if show_gap:  # how close each epoch came to the end: convergence, where the top panel is flat
        low = axes[1]
        positive = gap > 0
        low.semilogy(x[positive], gap[positive], marker="o", markersize=3)
        low.set_xlabel("epoch")
        low.set_ylabel("loss - lowest loss")
        low.set_title("distance to the lowest loss (log scale)")
        low.grid(True, alpha=0.3)
    for a in axes:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    written = [_save(fig, os.path.join(out_dir, "loss.png"))]
    if values is not None and len(names):
        shown = names[:MAX_PARAM_PANELS]
        cols = min(4, len(shown))
        rows = math.ceil(len(shown) / cols)
        fig = _figure((min(16.0, 4.0 * cols), 2.6 * rows + 0.6))
        axes = fig.subplots(rows, cols, squeeze=False)
        for k, ax in enumerate(axes.ravel()):
            if k >= len(shown):
                ax.set_visible(False)
                continue
            ax.plot(x, values[:, k], marker="o", markersize=2)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(shown[k])
            ax.set_xlabel("epoch")
            ax.set_ylabel(shown[k])
            ax.grid(True, alpha=0.3)
        more = f" (the first {len(shown)} of {len(names)} entries)" if len(names) > len(shown) else ""
        fig.suptitle(f"{title}: each param's value by epoch{more}")
        written.append(_save(fig, os.path.join(out_dir, "params.png")))
    return written


def fit_plot(columns: dict, x: str | None, y: str, fit: str, out: str, title: str) -> str:
    """The data against the program's output. With x: the observed y (points) and the output
    (a line, in order of x) against x: a fitted curve. Without x: the output against the observed
    y, with the line y = x where a perfect fit would lie. `columns` maps names to arrays."""
    for name, what in ((x, "--x"), (y, "--y"), (fit, "--fit")):
        if name is not None and name not in columns:
            raise InputError(f"{what} {name}: no such column; the columns are {', '.join(columns)}")
    observed = np.asarray(columns[y], float)
    predicted = np.asarray(columns[fit], float)
    fig = _figure()
    ax = fig.add_subplot()
    if x is not None:
        xs = np.asarray(columns[x], float)
        order = np.argsort(xs, kind="stable")
        ax.plot(xs, observed, "o", markersize=4, alpha=0.7, label=f"{y} (data)")
        ax.plot(xs[order], predicted[order], "-", linewidth=2, label=f"{fit} (program)")
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{title}: {y} and {fit} against {x}")
    else:
        ax.plot(observed, predicted, "o", markersize=4, alpha=0.7, label="rows")
        both = np.concatenate([observed, predicted])
        both = both[np.isfinite(both)]
        if both.size:
            lo, hi = float(both.min()), float(both.max())
            ax.plot([lo, hi], [lo, hi], "--", color="gray", label="perfect fit")
        ax.set_xlabel(f"{y} (observed)")
        ax.set_ylabel(f"{fit} (predicted)")
        ax.set_title(f"{title}: predicted against observed")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, out)
