"""dlang: a small differentiable language, compiled to Numba kernels.

The Python API (docs/python.md): `dlang.compile(path)` or `dlang.compile_source(text)` gives a
Model with loss, grad, hessian, run and fit. Importing dlang is quick: the compiler, NumPy and
Numba are imported when first needed.
"""

__version__ = "0.1.0"

__all__ = ["compile", "compile_source", "Model", "FitResult", "DlangError", "__version__"]


def compile(path, consts=None, max_iterations=None):  # noqa: A001 - the verb users look for
    """Read and check the program at `path`; a Model (see dlang.api). consts: {name: value}."""
    from . import api

    return api.compile(path, consts, *(() if max_iterations is None else (max_iterations,)))


def compile_source(text, consts=None, max_iterations=None, name="<source>"):
    """Check a program given as text; a Model (see dlang.api)."""
    from . import api
    from .ir import DEFAULT_MAX_ITERATIONS

    return api.compile_source(text, consts, DEFAULT_MAX_ITERATIONS if max_iterations is None else max_iterations,
                              name)


def __getattr__(name):
    if name in ("Model", "FitResult"):
        from . import api

        return getattr(api, name)
    if name in ("DlangError", "DlangWarning"):
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'dlang' has no attribute {name!r}")
