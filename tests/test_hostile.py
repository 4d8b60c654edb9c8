"""Bad input, faults and hostile programs.

A. No identifier, number, --const value, params file, CSV header or cell makes dlang run code
   of its own: each channel gets payloads; a user error exits 1 with a located message and no
   traceback, no marker file appears, and the generated kernel source holds none of the text.
B. Params written by `dlang train --out` go through a temporary file and a rename.
C. A damaged kernel cache entry (the generated k_<hash>.py, Numba's *.nbi index and *.nbc data
   files, a stale .pyc) is detected and rebuilt; an unwritable cache falls back to a private
   temporary directory with a one-line warning.
D. Two processes compiling the same new program at once both get the right answer.
"""
from __future__ import annotations

import ast
import builtins
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

from dlang import kernels as kmod
from dlang.data import load_data
from dlang.frontend import compile_source, load_program
from dlang.pipeline import compile_kernels
from dlang.params import load_params

LOCATED = re.compile(r"^(?P<path>[^\n]*?):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.*)$", re.M)


def user_error(r, path=None, line=None, col=None) -> str:
    """Exit 1, no traceback, no 'internal error'; a located message when a place is given."""
    text = r.out + r.err
    assert r.code == 1, (r.code, text)
    assert "Traceback" not in text and "internal error" not in text, text
    if line is not None:
        m = LOCATED.search(r.err)
        assert m, r.err
        assert (m["path"], int(m["line"]), int(m["col"])) == (str(path), line, col), r.err
        return m["msg"]
    return r.err


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """A file no payload may create; relative payloads would land in the working directory."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "a payload was executed"
    assert not (tmp_path / "MARKER2").exists(), "a payload was executed"


def payloads(marker: Path) -> list[str]:
    return [f'__import__("os").system("touch {marker}")',
            f"1);import os;os.system('touch {marker}')#",
            f'__import__("pathlib").Path("{marker}").touch()',
            "exec('import os')", "1;import os", "lambda: 0", "os.system", "dl_rt.__dict__",
            "1e999", "0x10", "1_000", "nan", "inf", "-inf", "1e", "--1", "1 2", "1\nimport os", "",
            "1.0.0", "True", "None", "\u00b2", "\u2167"]


# ---- A. hostile input -------------------------------------------------------------------------

# Python-looking names everywhere a name can go; payloads in comments.
PYNAMES = "# __import__('os').system('touch MARKER'); exec(\"import os\")  \"\"\" \'\'\' \\\n" + r'''
const exec = 2
data os, eval
param __import__ = 0.5
param lambda = 1.5
param dl_rt = 0.25
param v_dl_rt = 0.125
param print = 1.0
param True = 2.0       # os.system("touch MARKER")
fn compile(__class__, _) { return __class__ * _ + dl_rt * v_dl_rt }
__builtins__ = compile(os, __import__)
globals = __builtins__ + lambda * eval
for dl_r in 0..exec { globals += print * True * 0.25 }   # ')); import sys; sys.exit(3) #
output __name__ = globals
loss (globals - eval)^2
'''
PYNAMES_CSV = "os,eval,__import__('os').system('touch MARKER2')\n1,2,1;import os\n3,4,exec('x')\n"
# By hand: row residuals r = 0.5 os + 1/32 + 1.5 eval + 2 * 0.25 * print * True - eval = 2.53125, 4.53125
PYNAMES_LOSS = (2.53125 ** 2 + 4.53125 ** 2) / 2
# d loss / d param = mean(2 r * d r / d param); mean(2 r) = 7.0625
PYNAMES_GRAD = {"__import__": (2 * 2.53125 * 1 + 2 * 4.53125 * 3) / 2,
                "lambda": (2 * 2.53125 * 2 + 2 * 4.53125 * 4) / 2,
                "dl_rt": 7.0625 * 0.125, "v_dl_rt": 7.0625 * 0.25, "print": 7.0625 * 1.0, "True": 7.0625 * 0.5}

KERNEL_IMPORTS = {"import math as dl_math", "import numpy as dl_np",
                  "from numba import njit as dl_njit, prange as dl_prange", "from dlang import runtime as dl_rt"}
KERNEL_BUILTINS = {"abs", "float", "int", "max", "min", "range", "len", "IndexError", "RuntimeError"}
FAULT_STRING = re.compile(r"dl_fault:(index|while):\d+:\d+")


def assert_kernel_source_is_ours(source: str, forbidden=("MARKER", "system", "touch", "import os", "exec(",
                                                         "import sys", "sys.exit", '"""')) -> None:
    """The generated source: the four imports, strings of our own, no builtin but the few the
    kernels use (every Python-looking name of the program was mangled), no payload text."""
    for text in forbidden:
        assert text not in source, text
    tree = ast.parse(source)
    imports = {ast.unparse(n) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))}
    assert imports == KERNEL_IMPORTS
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert all(s == "numpy" or FAULT_STRING.fullmatch(s) for s in strings), strings
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert used & set(dir(builtins)) <= KERNEL_BUILTINS, used & set(dir(builtins))
    assert not any(isinstance(n, (ast.Lambda, ast.Global, ast.Nonlocal, ast.ClassDef, ast.With, ast.Try,
                                  ast.AsyncFunctionDef, ast.Await, ast.Yield)) for n in ast.walk(tree))
    assert not any(isinstance(n, ast.Attribute) and n.attr.startswith("_") and n.attr.strip("_") == n.attr[2:-2]
                   for n in ast.walk(tree)), "a dunder attribute"


def test_python_names_compile_to_mangled_kernels_with_the_right_gradient(run_cli, write_program, marker, tmp_path):
    prog = write_program(PYNAMES)
    csv = tmp_path / "p.csv"
    csv.write_text(PYNAMES_CSV)  # the payload column is not read: only the program's columns are
    r = run_cli("grad", prog, "--data", csv, "--check", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["loss"] == pytest.approx(PYNAMES_LOSS, rel=1e-14)
    assert report["grad"] == pytest.approx(PYNAMES_GRAD, rel=1e-12)
    assert report["check"]["passed"]
    r = run_cli("run", prog, "--data", csv)
    assert r.code == 0, r.err
    assert r.out.splitlines()[0] == "loss,__name__"  # an output name is only a CSV header
    r = run_cli("emit", prog, "--stage", "kernel")
    assert r.code == 0, r.err
    assert_kernel_source_is_ours(r.out)
    cached = Path(os.environ["DLANG_CACHE_DIR"]) / "kernels"
    assert r.out in [p.read_text() for p in cached.glob("k_*.py")]  # the file that ran is the one shown
    for name in ("__import__", "lambda", "print", "exec", "eval", "compile", "globals"):
        assert not re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", r.out), name  # mangled, or gone
    assert re.search(r"^def dl_grad\(dl_data, dl_lo, dl_hi, v___import__, v_lambda, v_dl_rt, v_dl_rt_1, v_print, v_True,",
                     r.out, re.M)


@pytest.mark.parametrize("source, line, col, words", [
    ("param w = 1.0\nloss \u0435xec(w)\n", 2, 6, "unexpected character"),         # Cyrillic e
    ("param \uff57 = 1.0\nloss w\n", 1, 7, "unexpected character"),                  # fullwidth w
    ("param \uff45\uff58\uff45\uff43 = 1.0\nloss 1.0\n", 1, 7, "unexpected character"),  # NFKC 'exec'
    ("param w\u200b = 1.0\nloss w\n", 1, 8, "unexpected character"),                 # zero-width space
    ("param w = 1.0\nloss w # \u202e)'txet'(cexe\n__import__('os')\n", 3, 11, "but found '('"),
    ("param w = 1.0\nloss \"__import__('os').system('touch MARKER')\"\n", 2, 6, "unexpected character"),
    ("param w = 1.0\nloss w; import os\n", 2, 16, "expected"),
    ("param w = 1.0\nloss w \\\nimport os\n", 2, 8, "unexpected character"),
    ("param w = 1.0\nloss (lambda: w)()\n", 2, 13, "expected"),
    ("param w = 1e999\nloss w\n", 1, 11, "not a finite number"),
    ("param w = 1.0\nloss w * 1e999\n", 2, 10, "too large for a float"),
    ("param w = 0x10\nloss w\n", 1, 12, "'x10'"),
    ("param w = 1_000\nloss w\n", 1, 12, "'_000'"),
    ("param w = nan\nloss w\n", 1, 11, "'nan' is not a const"),
    ("param w = 1.0\nloss w * inf\n", 2, 10, "unknown name 'inf'"),
    ("const n = 99999999999999999999\nparam w = 1.0\nloss w * n\n", 1, 11, "too large"),
    ("param w = 1.0\nloss w.__class__\n", 2, 7, "unexpected character"),
    ("param w = 1.0\nloss __import__(w)\n", 2, 6, "__import__"),
    ("param w = 1.0\nloss exec(w)\n", 2, 6, "exec"),
    ("param w = 1.0\nloss dl_rt.sigmoid(w)\n", 2, 11, "unexpected character"),
])
def test_hostile_program_text_is_a_located_user_error(run_cli, write_program, marker, source, line, col, words):
    prog = write_program(source)
    for command in ("check", "grad"):
        msg = user_error(run_cli(command, prog), prog, line, col)
        assert words in msg, msg


def test_odd_numbers_that_compile_reach_the_kernel_as_our_numbers(run_cli, write_program, marker):
    prog = write_program("param w = 1.0\nx = 1e-400 + 0.0 * w\ny = -0.0 * w + 1. + .5 + 2.5E+4 + 00012\n"
                         "loss (w + x + y)^2 * 1e308 / 1e308\n")
    r = run_cli("emit", prog, "--stage", "kernel")
    assert r.code == 0, r.err
    assert_kernel_source_is_ours(r.out)
    numbers = set(re.findall(r"(?<![\w.])\d[\d.e+\-]*", r.out))
    assert {"25000.0", "1e+308"} <= numbers, numbers  # formatted by dlang, not copied from the file
    assert "00012" not in r.out and "2.5E+4" not in r.out and "1e-400" not in r.out


def test_const_payloads_are_refused_and_never_run(run_cli, write_program, marker):
    prog = write_program("const n = 3\nconst dt = 0.5\nparam w = 1.0\nloss w * n * dt\n")
    for payload in payloads(marker):
        for name in ("n", "dt"):
            err = user_error(run_cli("check", prog, "--const", f"{name}={payload}"))
            assert f"--const {name}=" in err and ("must be a number" in err or "too large" in err), (payload, err)
    for pair in [f'os.system("touch {marker}")=1', "__import__=1", "exec=1", "n", "=3", "n==3", "n.x=1", "n[0]=1"]:
        err = user_error(run_cli("check", prog, "--const", pair))
        assert "--const" in err and ("NAME=VALUE" in err or "no const named" in err or "must be a number" in err), err
    r = run_cli("emit", prog, "--stage", "kernel", "--const", "n=7", "--const", "dt=0.25")  # numbers are fine
    assert r.code == 0, r.err
    assert_kernel_source_is_ours(r.out)


@pytest.mark.parametrize("channel", ["program", "const", "csv"])
def test_unicode_digits_are_not_numbers(run_cli, write_program, tmp_path, channel):
    digits = "\u0661\u0662"  # Arabic-Indic 12 (Python reads it as 12: int, float and re's \d accept it)
    prog = write_program(f"const n = 3\ndata x\nparam w = {digits if channel == 'program' else '1.0'}\n"
                         "loss (w * x * n)^2\n")
    csv = tmp_path / "d.csv"
    csv.write_text(f"x\n{digits if channel == 'csv' else '1'}\n")
    r = run_cli("grad", prog, "--data", csv, *(["--const", f"n={digits}"] if channel == "const" else []))
    user_error(r)


def test_params_file_payloads_are_refused_and_never_run(run_cli, write_program, marker, tmp_path):
    prog = write_program("param w = 1.0\nparam v[2] = 0.5\nloss w * sum(v)\n")
    bad = tmp_path / "bad.json"
    cases = [(json.dumps({p: 1.0}), "no param") for p in payloads(marker)[:8] + ["\uff57", "w\u200b", "__class__"]]
    cases += [(json.dumps({"w": p}), "not a number") for p in payloads(marker)]
    cases += [(json.dumps({"v": [1.0, p]}), "not a number") for p in payloads(marker)[:6]]
    cases += [('{"w": {"__reduce__": ["os.system", ["touch MARKER"]]}}', "is not a number"),
              ('{"w": 1e999}', "not a finite number"), ('{"w": NaN}', "not a finite number"),
              ('{"w": 1.0, "w": 2.0}', "given twice"),
              (f'__import__("os").system("touch {marker}")', "not valid JSON"),
              ("{'w': 1.0}", "not valid JSON"), ('{"w": 0x10}', "not valid JSON"),
              ('{"w": 1_000}', "not valid JSON"),
              ("\x80\x04\x95", "cannot read")]  # a pickle's first bytes
    for text, words in cases:
        bad.write_bytes(text.encode("utf-8", "surrogateescape") if text[0] != "\x80" else b"\x80\x04\x95")
        err = user_error(run_cli("grad", prog, "--params", bad))
        assert str(bad) in err and words in err, (text, err)


def test_csv_payloads_are_refused_and_never_run(run_cli, write_program, marker, tmp_path):
    prog = write_program("data x, y\nparam w = 1.0\nloss (w * x - y)^2\n")
    bad = tmp_path / "bad.csv"
    for p in payloads(marker):
        if not p.strip() or "\n" in p:
            continue
        q = '"' + p.replace('"', '""') + '"'
        bad.write_text(f"x,y\n1,2\n3,{q}\n")
        msg = user_error(run_cli("grad", prog, "--data", bad), bad, 3, 3)
        assert re.match(r"row 2 \(line 3\), column 'y': .* (is )?not a (finite )?number", msg), (p, msg)
    for header in [f"x,__import__('os').system('touch {marker}')", "x,\uff59", "x,y\u200b", "x,exec('y')"]:
        bad.write_text(f"{header}\n1,2\n")
        msg = user_error(run_cli("grad", prog, "--data", bad), bad, 1, 1)
        assert "no column 'y'" in msg, msg
    bad.write_text('x,y\n1,"2\nimport os"\n')
    msg = user_error(run_cli("grad", prog, "--data", bad), bad, 2, 3)
    assert msg.startswith("row 1 (line 2), column 'y': '2\\nimport os' is not a number"), msg


def test_payload_cells_in_a_large_csv_are_refused(run_cli, write_program, marker, tmp_path):
    """Files of 1 MiB and more go through Arrow first; a payload cell falls back to the checked reader."""
    prog = write_program("data x, y\nparam w = 1.0\nloss (w * x - y)^2\n")
    rows = 70_000
    body = "".join(f"{i % 10}.000000,{i % 7}.000000\n" for i in range(rows))
    for cell in ["1;import os", "0x10", "nan"]:
        big = tmp_path / "big.csv"
        big.write_text("x,y\n" + body + f"1,{cell}\n")
        assert big.stat().st_size >= 1 << 20
        msg = user_error(run_cli("grad", prog, "--data", big), big, rows + 2, 3)
        assert f"row {rows + 1} (line {rows + 2}), column 'y'" in msg and "number" in msg, msg


def test_a_program_path_with_a_payload_is_only_a_path(run_cli, tmp_path, marker):
    prog = tmp_path / "p'); __import__('os').system('touch MARKER') #.dl"
    prog.write_text("param w = 1.0\nloss w^2 +\n")
    user_error(run_cli("check", prog), prog, 2, 11)
    prog.write_text("param w = 1.0\nloss w^2\n")
    r = run_cli("emit", prog, "--stage", "kernel")
    assert r.code == 0, r.err
    assert_kernel_source_is_ours(r.out)


def test_subprocesses_run_hostile_input_plainly(tmp_path):
    """The real command line, in fresh processes: no traceback, no marker, the right answer."""
    marker = tmp_path / "MARKER"
    prog = tmp_path / "p.dl"
    prog.write_text(PYNAMES)
    csv = tmp_path / "p.csv"
    csv.write_text(PYNAMES_CSV)
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # the session's cache: the in-process test compiled it
    runs = [
        ["grad", prog, "--data", csv, "--json", "--const", "exec=2"],
        ["grad", prog, "--data", csv, "--const", f'exec=__import__("os").system("touch {marker}")'],
        ["grad", prog, "--data", csv, "--const", f"exec=1);import os;os.system('touch {marker}')#"],
    ]
    outs = []
    for args in runs:
        done = subprocess.run([sys.executable, "-m", "dlang.cli", *map(str, args)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert "Traceback" not in done.stdout + done.stderr
        outs.append(done)
    assert outs[0].returncode == 0, outs[0].stderr
    assert json.loads(outs[0].stdout)["loss"] == pytest.approx(PYNAMES_LOSS, rel=1e-14)
    for done in outs[1:]:
        assert done.returncode == 1 and "must be a number" in done.stderr, done.stderr
    assert not marker.exists() and not (tmp_path / "MARKER2").exists()


# ---- B. files dlang writes are atomic ---------------------------------------------------------

LIN = "data x, y\nparam w = 0.5\nparam b = 0.25\nloss (w * x + b - y)^2\n"
LIN_CSV = "x,y\n1,2\n3,4\n"
LIN_LOSS, LIN_GRAD = 3.3125, {"w": -8.0, "b": -3.5}


@pytest.fixture
def lin_files(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    (d / "lin.dl").write_text(LIN)
    (d / "lin.csv").write_text(LIN_CSV)
    (d / "out.json").write_text('{"w": 111.0}\n')
    return d


def test_train_out_replaces_the_file_by_rename(run_cli, lin_files):
    d = lin_files
    os.link(d / "out.json", d / "old.json")  # a second name for the old file's inode
    r = run_cli("train", d / "lin.dl", "--data", d / "lin.csv", "--epochs", "5", "--out", d / "out.json")
    assert r.code == 0, r.err
    fitted = json.loads((d / "out.json").read_text())
    assert set(fitted) == {"w", "b"} and fitted["w"] != 111.0
    assert (d / "old.json").read_text() == '{"w": 111.0}\n', "the old file was rewritten in place"
    assert sorted(p.name for p in d.iterdir()) == ["lin.csv", "lin.dl", "old.json", "out.json"]


@pytest.mark.parametrize("bad", ["csv cell", "init", "const", "program"])
def test_train_user_error_leaves_out_intact(run_cli, lin_files, bad):
    d = lin_files
    args = ["train", d / "lin.dl", "--data", d / "lin.csv", "--epochs", "5", "--out", d / "out.json"]
    if bad == "csv cell":
        (d / "lin.csv").write_text("x,y\n1,2\n3,__import__('os')\n")
    elif bad == "init":
        (d / "init.json").write_text('{"w": "1; import os"}')
        args += ["--init", d / "init.json"]
    elif bad == "const":
        args += ["--const", "w=1"]
    else:
        (d / "lin.dl").write_text(LIN + "loss exec(w)\n")
    before = sorted(p.name for p in d.iterdir())
    user_error(run_cli(*args))
    assert (d / "out.json").read_text() == '{"w": 111.0}\n'
    assert sorted(p.name for p in d.iterdir()) == before, "a temporary file was left behind"


def test_train_out_write_failure_leaves_out_intact(run_cli, lin_files, monkeypatch):
    """The disk fills while the new params are written: the old file stays, whole, and no
    temporary file is left."""
    d = lin_files

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    r = run_cli("train", d / "lin.dl", "--data", d / "lin.csv", "--epochs", "3", "--out", d / "out.json")
    assert r.code != 0 and "Traceback" not in r.err
    assert "No space left on device" in r.err
    assert (d / "out.json").read_text() == '{"w": 111.0}\n'
    assert sorted(p.name for p in d.iterdir()) == ["lin.csv", "lin.dl", "out.json"]


# ---- C. kernel cache robustness ---------------------------------------------------------------

class Lin:
    """The LIN program's kernels, loaded as a new process would (nothing in sys.modules)."""

    def __init__(self, tmp: Path):
        self.prog = compile_source(LIN, "lin.dl")
        (tmp / "lin.csv").write_text(LIN_CSV)
        self.data = load_data(self.prog, str(tmp / "lin.csv"))
        self.params = load_params(self.prog, None)
        self.key = ""  # k_<hash>, the stem of the cache entry's file

    def load(self) -> kmod.Kernels:
        sys.modules.pop("dlang_kernel_" + self.key[2:], None)  # (the kernels' pickled code names the module)
        k = compile_kernels(self.prog)
        self.key = Path(k.path).stem
        return k

    def run(self, k: kmod.Kernels) -> tuple[int, int]:
        """Check both kernels' results; return (cache hits, cache misses) of the two."""
        losses, _ = k.forward_rows(self.data, self.params)
        assert losses.tolist() == [(0.5 + 0.25 - 2) ** 2, (1.5 + 0.25 - 4) ** 2]
        loss, grads = k.grad(self.data, self.params)
        assert (loss, grads) == (LIN_LOSS, LIN_GRAD)
        stats = [k.module.dl_forward.stats, k.module.dl_grad.stats]
        return sum(sum(s.cache_hits.values()) for s in stats), sum(sum(s.cache_misses.values()) for s in stats)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A kernel cache holding LIN's kernels, compiled once for the module."""
    lin = Lin(tmp_path_factory.mktemp("lin"))
    cache = tmp_path_factory.mktemp("pristine")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLANG_CACHE_DIR", str(cache))
        lin.key = Path(compile_kernels(lin.prog).path).stem  # LIN may be loaded from another test's cache
        assert lin.run(lin.load()) == (0, 2)
    return lin, cache


@pytest.fixture
def cache(pristine, tmp_path, monkeypatch):
    """A copy of the pristine cache, as DLANG_CACHE_DIR: (lin, kernels dir)."""
    lin, src = pristine
    dst = tmp_path / "cache"
    shutil.copytree(src, dst)
    monkeypatch.setenv("DLANG_CACHE_DIR", str(dst))
    return lin, dst / "kernels"


def _files(kdir: Path, key: str, pattern: str) -> list[Path]:
    return sorted((kdir / "__pycache__").glob(f"{key}.{pattern}"))


def assert_healthy(lin: Lin, kdir: Path) -> None:
    """A new load finds everything in the cache: no compile, and no temporary file around."""
    k = lin.load()
    assert k.path == kdir / f"{lin.key}.py"
    assert k.path.read_text() == k.source
    assert lin.run(k) == (2, 0)
    assert not [p for p in kdir.rglob("*") if "tmp" in p.name or p.name.startswith(".")]


def test_pristine_cache_is_used(cache):
    lin, kdir = cache
    assert len(_files(kdir, lin.key, "*.nbi")) == 2 and len(_files(kdir, lin.key, "*.nbc")) == 2
    assert_healthy(lin, kdir)
    from dlang import runtime

    helpers = [v for v in vars(runtime).values() if hasattr(v, "_cache")]
    assert helpers and {type(h._cache._cache_file).__name__ for h in helpers} == {"Checked"}
    assert {type(k._cache._cache_file).__name__ for k in vars(lin.load().module).values()
            if hasattr(k, "_cache")} == {"Sealed"}


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])


def _garbage(p: Path):
    p.write_bytes(np.random.default_rng(1).bytes(p.stat().st_size))


def _append(p: Path):
    p.write_bytes(p.read_bytes() + b"\nimport os; os.system('touch MARKER')\n")


def _empty(p: Path):
    p.write_bytes(b"")


def _flip(p: Path):
    raw = bytearray(p.read_bytes())
    raw[len(raw) * 2 // 3] ^= 0x5A
    p.write_bytes(bytes(raw))


DAMAGE = {"truncated": _truncate, "garbage": _garbage, "appended": _append, "empty": _empty, "flipped": _flip}


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_source_file_is_rewritten(cache, how):
    lin, kdir = cache
    DAMAGE[how](kdir / f"{lin.key}.py")
    k = lin.load()
    assert k.path.read_text() == k.source
    assert lin.run(k) == (2, 0)  # the same source as before: Numba's cache still holds
    assert_healthy(lin, kdir)


@pytest.mark.parametrize("kind", ["nbi", "nbc"])
@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_numba_cache_file_is_detected_and_rebuilt(cache, kind, how):
    lin, kdir = cache
    (target,) = _files(kdir, lin.key, f"dl_grad-*.{kind}")
    DAMAGE[how](target)
    assert lin.run(lin.load()) == (1, 1)  # the forward from the cache; the gradient compiled again
    assert_healthy(lin, kdir)


def test_data_file_of_another_function_is_not_loaded(cache):
    """An index naming a data file that holds another function's code (files swapped, or two
    processes numbering their files alike): the code is not run as this function."""
    lin, kdir = cache
    (fwd,) = _files(kdir, lin.key, "dl_forward-*.nbc")
    (grad,) = _files(kdir, lin.key, "dl_grad-*.nbc")
    shutil.copyfile(fwd, grad)
    assert lin.run(lin.load()) == (1, 1)
    assert_healthy(lin, kdir)


def test_stale_pyc_beside_the_source_is_never_run(cache):
    """A .pyc of other code, stamped with the source's size and time, as Python's import
    system would accept it: dlang compiles the checked source itself and never reads it."""
    import importlib._bootstrap_external as bx
    import importlib.util

    lin, kdir = cache
    path = kdir / f"{lin.key}.py"
    st = path.stat()
    code = compile(path.read_text() + "\ndef dl_grad(*args):\n    raise RuntimeError('stale pyc')\n",
                   str(path), "exec")
    pyc = Path(importlib.util.cache_from_source(str(path)))
    pyc.write_bytes(bytes(bx._code_to_timestamp_pyc(code, int(st.st_mtime), st.st_size)))
    assert lin.run(lin.load()) == (2, 0)


HELPER = "from numba import njit\n\n@njit(cache=True)\ndef helper(x):\n    return x * 2.0 + 1.0\n"


def test_damaged_cache_of_a_runtime_style_helper_is_rebuilt_in_numbas_format(tmp_path, monkeypatch):
    """dlang.runtime's helpers keep Numba's own file format (other code may load them), checked
    the same way as far as that format allows: a garbage index or data file reads as missing."""
    import importlib

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "dl_helper_mod.py").write_text(HELPER)

    def load(checked: bool):
        sys.modules.pop("dl_helper_mod", None)
        mod = importlib.import_module("dl_helper_mod")
        if checked:
            kmod._check_numba_cache(mod.helper, sealed=False)
        assert mod.helper(2.0) == 5.0
        s = mod.helper.stats
        return sum(s.cache_hits.values()), sum(s.cache_misses.values())

    assert load(True) == (0, 1)
    assert load(False) == (1, 0)  # written in Numba's format: plain Numba reads it
    for pattern in ("*.nbi", "*.nbc"):
        (target,) = (tmp_path / "__pycache__").glob(f"dl_helper_mod.helper-{pattern}")
        _garbage(target)
        assert load(True) == (0, 1)
        assert load(False) == (1, 0)
    sys.modules.pop("dl_helper_mod", None)


def test_numba_failing_to_write_its_cache_is_not_an_error(pristine, tmp_path, monkeypatch):
    """The disk fills as Numba writes a cache file: the kernels still run (compiled in memory)."""
    from numba.core.caching import IndexDataCacheFile

    lin, _ = pristine
    kdir = tmp_path / "cache" / "kernels"
    monkeypatch.setenv("DLANG_CACHE_DIR", str(kdir.parent))
    real = IndexDataCacheFile._open_for_write

    def full(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(IndexDataCacheFile, "_open_for_write", full)
    assert lin.run(lin.load()) == (0, 2)
    assert list((kdir / "__pycache__").iterdir()) == []
    monkeypatch.setattr(IndexDataCacheFile, "_open_for_write", real)
    assert lin.run(lin.load()) == (0, 2)  # room again: compiled and cached this time
    assert_healthy(lin, kdir)


def _fallback_in(tmp_path, monkeypatch) -> Path:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _check_fallback(lin: Lin, capsys, unusable: Path, expected_dir: Path | None) -> Path:
    """The library warns (a DlangWarning, never a print) once; the CLI shows it as one line."""
    import warnings

    from dlang.cli import _show_warning
    from dlang.errors import DlangWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        k = lin.load()
    assert lin.run(k) == (0, 2)
    assert capsys.readouterr().err == "", "library code never prints"
    assert [w.category for w in caught] == [DlangWarning], caught
    _show_warning(caught[0].message, caught[0].category, caught[0].filename, caught[0].lineno)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"dlang: warning: cannot write the kernel cache {unusable}"), err
    if expected_dir is not None:
        assert k.path.parent == expected_dir
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert lin.run(lin.load()) == (2, 0), "the fallback directory caches too"
    assert caught == [], "the warning is given once"
    return k.path.parent


@pytest.mark.parametrize("where", ["cache dir", "kernels dir", "__pycache__", "source file"])
def test_cache_path_that_is_not_a_directory_falls_back(pristine, tmp_path, monkeypatch, capsys, where):
    lin, _ = pristine
    tmp = _fallback_in(tmp_path, monkeypatch)
    root = tmp_path / "cache"
    kdir = root / "kernels"
    unusable = kdir
    if where == "cache dir":
        root.write_text("not a directory")
    elif where == "kernels dir":
        root.mkdir()
        kdir.write_text("not a directory")
    elif where == "__pycache__":
        kdir.mkdir(parents=True)
        (kdir / "__pycache__").write_text("not a directory")
    else:
        (kdir / f"{lin.key}.py").mkdir(parents=True)
        unusable = kdir / f"{lin.key}.py"
    monkeypatch.setenv("DLANG_CACHE_DIR", str(root))
    _check_fallback(lin, capsys, unusable, tmp / f"dlang-{os.getuid()}" / "kernels")


def test_unwritable_cache_falls_back(pristine, tmp_path, monkeypatch, capsys):
    """Writes into the cache fail with EACCES (as for a read-only directory: root ignores chmod,
    so the refusal is injected)."""
    lin, _ = pristine
    tmp = _fallback_in(tmp_path, monkeypatch)
    root = tmp_path / "ro-cache"
    (root / "kernels" / "__pycache__").mkdir(parents=True)
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kw):
        if dir is not None and Path(dir).is_relative_to(root):
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setenv("DLANG_CACHE_DIR", str(root))
    _check_fallback(lin, capsys, root / "kernels", tmp / f"dlang-{os.getuid()}" / "kernels")
    assert list(root.rglob("*.py")) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write a read-only directory")
def test_read_only_cache_falls_back(pristine, tmp_path, monkeypatch, capsys):
    lin, _ = pristine
    tmp = _fallback_in(tmp_path, monkeypatch)
    root = tmp_path / "ro-cache"
    (root / "kernels").mkdir(parents=True)
    for d in (root / "kernels", root):
        d.chmod(0o555)
    monkeypatch.setenv("DLANG_CACHE_DIR", str(root))
    try:
        _check_fallback(lin, capsys, root / "kernels", tmp / f"dlang-{os.getuid()}" / "kernels")
    finally:
        for d in (root, root / "kernels"):
            d.chmod(0o755)


def test_shared_fallback_directory_not_ours_is_not_used(pristine, tmp_path, monkeypatch, capsys):
    """Another user could have made /tmp/dlang-<uid> to plant kernels: a fallback directory
    others can write is refused for a new private one."""
    lin, _ = pristine
    tmp = _fallback_in(tmp_path, monkeypatch)
    shared = tmp / f"dlang-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    root = tmp_path / "cache-file"
    root.write_text("")
    monkeypatch.setenv("DLANG_CACHE_DIR", str(root))
    used = _check_fallback(lin, capsys, root / "kernels", None)
    assert used.parent == tmp and used.name.startswith("dlang-kernels-")
    assert list(shared.iterdir()) == []


# ---- D. concurrency ---------------------------------------------------------------------------

# A new program (not compiled by any other test): each process loads dlang and Numba, says it is
# ready, waits for the word, then compiles and runs `dlang grad --check --json`.
RACE_PROGRAM = ("data x, y\nparam a = 0.75\nparam c[2] = 0.5\na2 = a\nfor i in 0..3 {\n  if x > i { a2 = a2 * a }\n"
                "}\nloss (a2 * x + c[0] * sin(x) + c[1] - y)^2\n")
RACE_SCRIPT = """
import os, sys, time
import numba, dlang.cli, dlang.kernels, dlang.commands
ready, go = sys.argv[1:3]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
dlang.cli.main(sys.argv[3:])
"""


def test_two_processes_compile_the_same_new_program_at_once(tmp_path):
    prog = tmp_path / "race.dl"
    prog.write_text(RACE_PROGRAM)
    csv = tmp_path / "race.csv"
    csv.write_text("x,y\n0.5,1\n1.5,2\n2.5,-1\n")
    expected = None
    for rep in range(2):
        cache = tmp_path / f"cache{rep}"
        env = dict(os.environ, DLANG_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
        go = tmp_path / f"go{rep}"
        procs = []
        for p in range(2):
            ready = tmp_path / f"ready{rep}-{p}"
            procs.append((ready, subprocess.Popen(
                [sys.executable, "-c", RACE_SCRIPT, str(ready), str(go), "grad", str(prog), "--data", str(csv),
                 "--check", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
        deadline = time.monotonic() + 60
        while not all(r.exists() for r, _ in procs) and time.monotonic() < deadline:
            time.sleep(0.005)
        go.touch()
        results = [p.communicate(timeout=120) + (p.returncode,) for _, p in procs]
        for out, err, code in results:
            assert code == 0, err
            report = json.loads(out)
            assert report["check"]["passed"], report
            expected = expected or report
            assert report == expected  # bit for bit, across processes and repetitions
        kdir = cache / "kernels"
        assert len(list(kdir.glob("k_*.py"))) == 1
        assert not [p for p in kdir.rglob("*") if "tmp" in p.name or p.name.startswith(".")]
    # the last cache is whole: a new load compiles nothing
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLANG_CACHE_DIR", str(cache))
        program = load_program(str(prog))
        data, params = load_data(program, str(csv)), load_params(program, None)
        sys.modules.pop(compile_kernels(program).module.__name__)
        k = compile_kernels(program)
        assert k.grad(data, params)[0] == pytest.approx(expected["loss"], rel=1e-15)
        k.loss(data, params)
        stats = [k.module.dl_loss.stats, k.module.dl_grad.stats]
        assert [sum(s.cache_misses.values()) for s in stats] == [0, 0]
        assert [sum(s.cache_hits.values()) for s in stats] == [1, 1]
