"""The shape of the code: imports flow one way through the stages, the pipeline lists every
stage and the verifier accepts the IR after each of them, and a compiled program is a value
that pickles into another process."""
from __future__ import annotations

import ast
import re
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlang import pipeline
from dlang.data import load_data
from dlang.ir import Program, initial_params
from dlang.verify import verify

from conftest import PROGRAMS, ROOT

# Each module may import from its own layer and those above it in this list, never below.
LAYERS = [
    ("core", {"errors", "ir", "prims"}),
    ("front end", {"nodes", "syntax", "consts", "check", "frontend"}),
    ("IR", {"irtext", "verify", "interp", "passes"}),
    ("AD", {"builder", "activity", "reverse", "forward", "events"}),
    ("backend", {"abi", "codegen", "runtime", "kernels"}),
    ("driver", {"limits", "pipeline", "derivatives", "report", "data", "params", "diagnose", "gradcheck", "commands", "train", "plot"}),
    ("API", {"api"}),
    ("CLI", {"cli", "render", "lexer"}),
]
LAYER = {module: k for k, (_, modules) in enumerate(LAYERS) for module in modules}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names, line) of every `from .x import ...` and `from . import x` in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [a.name for a in node.names]
            if node.module:
                out.append((node.module, names, node.lineno))
            else:
                out += [(name, [], node.lineno) for name in names if name != "__version__"]
    return out


def test_every_module_has_a_layer():
    modules = {p.stem for p in (ROOT / "dlang").glob("*.py")} - {"__init__"}
    assert modules == set(LAYER), modules ^ set(LAYER)


@pytest.mark.parametrize("path", sorted((ROOT / "dlang").glob("*.py")), ids=lambda p: p.stem)
def test_imports_flow_one_way_and_no_module_reaches_into_anothers_privates(path):
    if path.stem == "__init__":
        return
    mine = LAYER[path.stem]
    for module, names, line in _imports(path):
        if module == "":
            continue
        theirs = LAYER[module.split(".")[0]]
        assert theirs <= mine, (f"dlang/{path.name}:{line} ({LAYERS[mine][0]}) imports {module} "
                                f"({LAYERS[theirs][0]}), a later stage")
        private = [n for n in names if n.startswith("_")]
        assert not private, f"dlang/{path.name}:{line} imports private names {private} from {module}"


def test_the_pipeline_lists_every_stage_in_order():
    names = [name for name, _ in pipeline.STAGES]
    assert names == ["read", "parse", "check", "verify", "reverse", "scalarize", "dce", "hoist", "split-sums",
                     "reciprocals", "buffers", "generate", "load"]
    seen = []
    pipeline.compile_file(str(PROGRAMS / "projectile.dl"), on_stage=lambda name, s, r: seen.append(name))
    assert seen == names


@pytest.mark.parametrize("path", sorted(PROGRAMS.glob("*.dl")), ids=lambda p: p.stem)
def test_the_verifier_accepts_the_ir_after_every_stage(path):
    checked = []

    def on_stage(name, seconds, result):
        programs = [result] if isinstance(result, Program) else (
            [result.forward, result.adjoint] if isinstance(result, pipeline.KernelIR) else [])
        for prog in programs:
            verify(prog)
        checked.extend([name] * len(programs))

    source = pipeline.compile_file(str(path), on_stage=on_stage, stop_after="generate")
    assert isinstance(source, str) and "def dl_grad(" in source
    assert checked.count("hoist") == 2 and "check" in checked and "reverse" in checked


def test_emit_shows_each_pass_and_the_pipeline(run_cli):
    for stage in ("scalarize", "hoist", "split-sums", "reciprocals", "buffers"):
        r = run_cli("emit", PROGRAMS / "linear_regression.dl", "--stage", stage)
        assert r.code == 0, r.err
        assert "# the adjoint kernel's program" in r.out and "sweep[tape=" in r.out
    r = run_cli("emit", PROGRAMS / "linear_regression.dl", "--stage", "hoist")
    assert "  once {" in r.out  # the ridge penalty's work on params runs once per call
    r = run_cli("emit", PROGRAMS / "linear_regression.dl", "--stage", "split-sums")
    assert re.search(r"^  sum w rows 1 fixed %\S+", r.out, re.M), r.out  # ... and its gradient term once
    r = run_cli("emit", PROGRAMS / "projectile.dl", "--stage", "pipeline")
    assert r.code == 0, r.err
    assert [line.split()[0] for line in r.out.splitlines()] == [name for name, _ in pipeline.STAGES]


def test_compiled_kernels_pickle_and_load_in_another_process(tmp_path):
    from dlang.pipeline import compile_kernels

    prog_path = PROGRAMS / "linear_regression.dl"
    program = pipeline.compile_file(str(prog_path), stop_after="check")
    kernels = compile_kernels(program)
    data = load_data(program, str(PROGRAMS / "data" / "linear_regression.csv"))
    params = initial_params(program)
    loss, grads = kernels.grad(data, params)  # compiled here, once
    blob = tmp_path / "k.pickle"
    blob.write_bytes(pickle.dumps((kernels, data, params)))
    script = ("import pickle, sys, json\n"
              "k, data, params = pickle.load(open(sys.argv[1], 'rb'))\n"
              "loss, grads = k.grad(data, params)\n"
              "stats = k.module.dl_grad.stats\n"
              "print(json.dumps({'loss': loss, 'w': list(grads['w']), 'misses': sum(stats.cache_misses.values())}))\n")
    done = subprocess.run([sys.executable, "-c", script, str(blob)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import json

    got = json.loads(done.stdout)
    assert got["loss"] == pytest.approx(loss, rel=1e-14)
    np.testing.assert_allclose(got["w"], grads["w"], rtol=1e-14)
    assert got["misses"] == 0  # rebuilt from the kernel cache, nothing compiled again
    again = pickle.loads(pickle.dumps(kernels))  # and in this process
    assert again.grad(data, params)[0] == loss


def test_library_code_never_prints(capsys):
    from dlang.commands import grad

    grad(str(PROGRAMS / "projectile.dl"), str(PROGRAMS / "data" / "projectile.csv"))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


