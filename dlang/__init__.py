"""dlang: a small differentiable language, compiled to Numba kernels."""

__version__ = "0.1.0"
