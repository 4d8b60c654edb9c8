"""Reverse-mode AD and the Numba kernels: gradients against central finite differences,
compiled losses against the reference interpreter, and hygiene of the generated code."""
from __future__ import annotations

import io
import re
import tokenize

import numpy as np
import pytest

from dlang.pipeline import kernel_source
from dlang.data import load_data
from dlang.frontend import compile_source

from conftest import load_program
from dlang.interp import grad_row, initial_params, program_loss
from dlang.data import read_rows
from dlang.irtext import parse_program, print_program
from dlang.pipeline import compile_kernels
from dlang.reverse import reverse_ad
from dlang.verify import verify

from conftest import PROGRAMS

GALLERY = sorted(PROGRAMS.glob("*.dl"))


def richardson_fd(loss, params: dict, step: float = 1e-4) -> dict:
    """Central differences with one Richardson step: error O(h^4), so 1e-6 relative is meaningful."""
    out = {}
    for name, value in params.items():
        arr = np.atleast_1d(np.asarray(value, dtype=float))
        grad = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            h = step * max(1.0, abs(arr[idx]))

            def at(x):
                q = dict(params)
                a = arr.copy()
                a[idx] = x
                q[name] = a if np.ndim(value) else float(a[0])
                return loss(q)

            d1 = (at(arr[idx] + h) - at(arr[idx] - h)) / (2 * h)
            d2 = (at(arr[idx] + h / 2) - at(arr[idx] - h / 2)) / h
            grad[idx] = (4 * d2 - d1) / 3
        out[name] = grad if np.ndim(value) else float(grad[0])
    return out


def assert_grads_close(grads: dict, fd: dict, rel: float = 1e-6, what: str = ""):
    """Relative to the larger of the two; a gradient near 0 is compared to 1e-11 absolute (the
    rounding noise of Richardson differences of a loss of order 1 is about 1e-12)."""
    for name, g in grads.items():
        a, f = np.asarray(g, float), np.asarray(fd[name], float)
        scale = max(1e-5, float(np.max(np.abs(f), initial=0.0)), float(np.max(np.abs(a), initial=0.0)))
        err = float(np.max(np.abs(a - f), initial=0.0)) / scale
        assert err <= rel, f"{what} d/d{name}: adjoint {a} vs finite differences {f} (rel {err:.2e})"


def shifted(params: dict) -> dict:
    return {k: (v * 1.1 + 0.05) for k, v in params.items()}


def data_matrix(prog, rows):
    if not prog.data:
        return np.zeros((1, 0))
    return np.array([np.concatenate([np.atleast_1d(r[d.name]) for d in prog.data]) for r in rows])


# ---- the gallery --------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=GALLERY, ids=lambda p: p.stem)
def gallery(request):
    prog = load_program(str(request.param))
    csv = PROGRAMS / "data" / f"{request.param.stem}.csv"
    rows = read_rows(prog, str(csv)) if prog.data else [{}]
    data = load_data(prog, str(csv) if prog.data else None)
    return prog, rows, data, compile_kernels(prog)


@pytest.mark.parametrize("point", ["start", "shifted"])
def test_gallery_gradient_matches_finite_differences(gallery, point):
    prog, rows, data, kernels = gallery
    params = initial_params(prog)
    if point == "shifted":
        params = shifted(params)
    loss, grads = kernels.grad(data, params)
    fd = richardson_fd(lambda q: kernels.loss(data, q), params)
    assert_grads_close(grads, fd, what=prog.source_path)
    assert loss == pytest.approx(kernels.loss(data, params), rel=1e-12)


def test_gallery_forward_kernel_matches_interpreter(gallery):
    prog, rows, data, kernels = gallery
    for params in (initial_params(prog), shifted(initial_params(prog))):
        assert kernels.loss(data, params) == pytest.approx(program_loss(prog, rows, params), rel=1e-12)


def test_gallery_adjoint_ir_interpreted_matches_kernel(gallery):
    prog, rows, data, kernels = gallery
    adjoint = reverse_ad(prog)
    verify(adjoint)
    assert parse_program(print_program(adjoint)) == adjoint
    params = initial_params(prog)
    _, grads = kernels.grad(data, params)
    per_row = [grad_row(adjoint, r, params)[1] for r in rows]
    for p in prog.params:
        interpreted = np.mean([g[p.name] for g in per_row], axis=0)
        np.testing.assert_allclose(grads[p.name], interpreted, rtol=1e-11, atol=1e-13)


# ---- every builtin and operator on its own -------------------------------------------------------

# name: (dlang expression of params x[, y[, z]], three points per argument)
UNARY_POINTS = {
    "sin": [-1.3, 0.4, 2.0], "cos": [-1.3, 0.4, 2.0], "tan": [-1.1, 0.3, 0.9],
    "asin": [-0.7, 0.1, 0.6], "acos": [-0.7, 0.1, 0.6], "atan": [-2.0, 0.3, 1.5],
    "exp": [-1.0, 0.2, 1.5], "log": [0.3, 1.5, 4.0], "log1p": [-0.5, 0.2, 3.0],
    "sqrt": [0.2, 1.5, 4.0], "tanh": [-1.5, 0.2, 0.9], "sinh": [-1.5, 0.2, 0.9],
    "cosh": [-1.5, 0.2, 0.9], "sigmoid": [-3.0, 0.2, 2.5], "relu": [-0.5, 0.3, 1.2],
    "softplus": [-3.0, 0.2, 2.5], "abs": [-1.2, 0.7, 2.0], "sign": [-1.2, 0.7, 2.0],
    "floor": [-1.3, 0.3, 1.7], "ceil": [-1.3, 0.3, 1.7], "round": [-1.3, 0.3, 1.7],
    "log2": [0.3, 1.5, 4.0], "log10": [0.3, 1.5, 4.0], "exp2": [-1.0, 0.2, 1.5], "erf": [-1.2, 0.3, 0.9],
}
BINARY_POINTS = {
    "atan2": ([0.5, -1.2, 2.0], [1.5, 0.7, -0.4]),
    "min": ([0.5, -1.2, 2.0], [1.5, -2.0, 0.4]),
    "max": ([0.5, -1.2, 2.0], [1.5, -2.0, 0.4]),
    "pow": ([0.5, 1.7, 3.0], [-1.5, 0.5, 2.5]),
    "hypot": ([0.5, -1.2, 2.0], [1.5, 0.7, -0.4]),
}
CLAMP_POINTS = ([-2.0, 0.3, 2.5], [-1.0, -0.5, 0.0], [1.0, 1.5, 2.0])
OPERATOR_POINTS = ([0.5, -1.2, 2.0], [1.5, 0.7, -0.4])
OPERATORS = {"add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}",
             "pow_op": "{0} ^ {1}"}


def _builtins_program(part: str) -> tuple[str, list[tuple[str, list[float]]]]:
    """One program with separate params per builtin and use (scalar, array, mixed), so one
    compile checks every rule: d loss / d param involves only that param's builtin."""
    lines, points = [], []

    def param(name, values, shape=None):
        if shape:
            lines.append(f"param {name}[{shape}] = 0.5")
        else:
            lines.append(f"param {name} = 0.5")
        points.append((name, values))

    for f, pts in UNARY_POINTS.items() if part == "unary" else ():
        param(f"s_{f}", pts)
        param(f"a_{f}", pts, 3)
        lines.append(f"loss 1.3 * {f}(s_{f}) + sum(2.0 * {f}(a_{f}))")
    if part == "unary":
        return "\n".join(lines) + "\n", points
    for f, (xs, ys) in BINARY_POINTS.items() if part == "binary" else ():
        param(f"s_{f}_x", xs)
        param(f"s_{f}_y", ys)
        param(f"a_{f}_x", xs, 3)
        param(f"a_{f}_y", ys, 3)
        param(f"m_{f}_x", xs, 3)
        lines.append(f"loss {f}(s_{f}_x, s_{f}_y) + sum({f}(a_{f}_x, a_{f}_y)) + 0.5 * sum({f}(m_{f}_x, s_{f}_y))")
    if part == "arrays":
        return _array_builtins(lines, param, points)
    xs, los, his = CLAMP_POINTS
    param("s_clamp_x", xs)
    param("s_clamp_lo", los)
    param("s_clamp_hi", his)
    param("a_clamp_x", xs, 3)
    lines.append("loss clamp(s_clamp_x, s_clamp_lo, s_clamp_hi) + sum(clamp(a_clamp_x, s_clamp_lo, s_clamp_hi))")
    xs, ys = OPERATOR_POINTS
    for op, form in OPERATORS.items():
        lhs = [abs(v) + 0.3 for v in xs] if op == "pow_op" else xs
        param(f"s_{op}_x", lhs)
        param(f"s_{op}_y", ys)
        param(f"a_{op}_x", lhs, 3)
        param(f"a_{op}_y", ys, 3)
        lines.append(f"loss {form.format(f's_{op}_x', f's_{op}_y')} + sum({form.format(f'a_{op}_x', f'a_{op}_y')})"
                     f" + sum({form.format(f'a_{op}_x', f's_{op}_y')}) + sum({form.format(f's_{op}_x', f'a_{op}_y')})")
    param("s_neg", xs)
    lines.append("loss -s_neg^3 + -(2.0 * s_neg)")
    return "\n".join(lines) + "\n", points


def _array_builtins(lines, param, points):
    """@ in all its forms, sum, mean, dot, indexing, element updates, zeros."""
    for name, shape in (("A", "3, 2"), ("B", "2, 3"), ("u", "3"), ("w", "2")):
        param(f"mm_{name}", [0.3, -0.8, 1.1], shape.replace(" ", "") if "," in shape else shape)
    lines += [
        "loss sum(mm_A @ mm_w) + sum(mm_A @ mm_B) + sum(mm_u @ mm_A) + mm_u @ mm_u",
        "loss sum((mm_A @ mm_w) * mm_u) + sum((mm_B @ mm_u) * mm_w) + dot(mm_u, mm_u * mm_u) + mean(mm_B * mm_B)",
        "v = zeros(3)",
        "v[0] = mm_u[1] * mm_w[0]",
        "v[2] += mm_u[2] ^ 2",
        "M = zeros(2, 3)",
        "M[1] = mm_u * 2.0",
        "M[0, 2] = mm_A[2, 1]",
        "M[1, 1] *= mm_B[0, 0]",
        "loss sum(v * v) + sum(M[1]) + sum(M * M)",
    ]
    return "\n".join(lines) + "\n", points


@pytest.fixture(scope="module", params=["unary", "binary", "arrays"])
def builtins_kernels(request):
    """Three programs, not one: Numba's compile time grows faster than a function's size."""
    source, points = _builtins_program(request.param)
    prog = compile_source(source, "builtins.dl")
    verify(reverse_ad(prog))
    return prog, points, compile_kernels(prog)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_every_builtin_and_operator_gradient(builtins_kernels, k):
    prog, points, kernels = builtins_kernels
    params = initial_params(prog)
    for name, values in points:
        shape = np.shape(params[name])
        if shape:
            params[name] = np.roll(np.resize(np.array(values, float), shape), k)
        else:
            params[name] = float(values[k])
    data = np.zeros((1, 0))
    loss, grads = kernels.grad(data, params)
    fd = richardson_fd(lambda q: kernels.loss(data, q), params)
    for name in params:  # one assertion per param names the builtin that is wrong
        assert_grads_close({name: grads[name]}, fd, what=f"point {k}")
    assert loss == pytest.approx(program_loss(prog, None, params), rel=1e-12)


def test_zero_derivative_builtins_give_exactly_zero(builtins_kernels):
    prog, points, kernels = builtins_kernels
    if "s_sign" not in {p.name for p in prog.params}:
        return
    params = initial_params(prog)
    _, grads = kernels.grad(np.zeros((1, 0)), params)
    for f in ("sign", "floor", "ceil", "round"):
        assert grads[f"s_{f}"] == 0.0
        assert np.all(grads[f"a_{f}"] == 0.0)


def test_derivative_at_a_kink_follows_jax():
    """The contract (LANGUAGE.md, Builtins): abs'(0) = relu'(0) = 0; a tie of min or max splits
    the derivative evenly; clamp is min(max(x, lo), hi) and inherits that rule."""
    prog = compile_source(
        "param a = 0.0\nparam b = 0.0\nparam c = 1.0\nparam d = 1.0\n"
        "loss abs(a) + relu(b) + max(c, d) + 2.0 * min(c, d) + clamp(a, 0.0, 1.0)\n", "kink.dl")
    _, grads = compile_kernels(prog).grad(np.zeros((1, 0)), initial_params(prog))
    assert grads["a"] == 0.0 + 0.5  # abs'(0) = sign(0) = 0; clamp at lo: max(x, lo) ties, x gets half
    assert grads["b"] == 0.0  # relu'(0) = 0
    assert grads["c"] == 0.5 + 2.0 * 0.5 and grads["d"] == 0.5 + 2.0 * 0.5  # ties split evenly


@pytest.mark.parametrize("text, want", [
    ("clamp(p, 0.0, 1.0)", 0.5),           # at lo: half of max's derivative goes to x
    ("clamp(p, -1.0, 0.0)", 0.5),          # at hi: half of min's
    ("clamp(p, 0.0, 0.0)", 0.25),          # both ties
    ("clamp(p, -1.0, 1.0)", 1.0),          # inside
    ("clamp(p, 1.0, 2.0)", 0.0),           # below lo
    ("max(p, 0.0) + min(0.0, p)", 1.0),    # a tie either side
    ("abs(p) + relu(p)", 0.0),
])
def test_kink_rules_at_zero(text, want):
    prog = compile_source(f"param p = 0.0\nloss {text}\n", "kinks.dl")
    _, grads = compile_kernels(prog).grad(np.zeros((1, 0)), {"p": 0.0})
    assert grads["p"] == want


# ---- control flow -----------------------------------------------------------------------------

CONTROL_FLOW = """
data h, k
param g = 9.81
param e = 0.8
param W[2, 3] = 0.2
param v[3] = 0.5

fn step(x, rate) {
    return x * exp(-rate * 0.1) + 0.01
}

# a while loop whose trip count depends on the row and on the params
t = 0.0
y = h
vy = 0.0
n = 0
while y > 0.0 and n < 10000 {
    vy -= g * 0.01
    y += vy * 0.01
    t += 0.01
    n += 1
}
loss (t - 0.5 * h)^2

# nested loops, an if inside a loop, a function called inside a loop
s = 0.0
acc = zeros(3)
for i in 0..3 {
    for j in 0..4 {
        if (i + j) * 1.0 > k {
            s += e * step(s, e) * (1.0 * j)
        } else {
            s -= 0.1 * e^2
        }
        acc[i] += s * 0.1
    }
}
loss s^2 * 0.01 + sum(acc * acc)

# 2-D arrays with @, inside a loop
z = v
for r in 0..3 {
    z = tanh(W @ z) @ W + v * 0.1
}
loss sum(z * z) + mean(W @ v)
"""


def test_control_flow_gradients(tmp_path):
    csv = tmp_path / "cf.csv"
    csv.write_text("h,k\n1.0,2.5\n2.3,0.5\n4.1,4.5\n0.7,3.2\n")
    prog = compile_source(CONTROL_FLOW, "cf.dl")
    rows = read_rows(prog, str(csv))
    trips = set()
    for r in rows:  # the trip count really differs from row to row
        y, vy, n = r["h"], 0.0, 0
        while y > 0.0:
            vy -= 9.81 * 0.01
            y += vy * 0.01
            n += 1
        trips.add(n)
    assert len(trips) == len(rows)
    data = load_data(prog, str(csv))
    kernels = compile_kernels(prog)
    for params in (initial_params(prog), shifted(initial_params(prog))):
        loss, grads = kernels.grad(data, params)
        assert loss == pytest.approx(program_loss(prog, rows, params), rel=1e-12)
        fd = richardson_fd(lambda q: kernels.loss(data, q), params, step=1e-5)
        # the while loop's trip count is a constant of the derivative: keep the FD step inside it
        assert_grads_close(grads, fd, rel=1e-6, what="control flow")


def test_tape_grows_for_long_while_loops():
    prog = compile_source("param r = 0.99999\nx = 1.0\nn = 0\nwhile n < 200000 {\n x *= r\n n += 1\n}\nloss x\n", "long.dl")
    loss, grads = compile_kernels(prog).grad(np.zeros((1, 0)), {"r": 0.99999})
    assert loss == pytest.approx(0.99999 ** 200000, rel=1e-9)
    assert grads["r"] == pytest.approx(200000 * 0.99999 ** 199999, rel=1e-9)



def test_tapes_grow_between_rows_serial_and_parallel():
    """Rows of very different tape lengths, a long one after short ones, so the tape overflows
    and grows in the middle of a run (the overflowing row is run again); serial and chunked."""
    from dlang.abi import PARALLEL_MIN_ROWS

    prog = compile_source("data n, x\nparam r = 0.999\nparam c = 0.001\nv = x\nk = 0.0\n"
                          "while k < n {\n v = v * r + c * sin(v)\n k += 1.0\n}\nloss v^2\n", "grow.dl")
    kernels = compile_kernels(prog)
    params = {"r": 0.999, "c": 0.001}
    few = np.array([[0.0, 1.0], [10.0, 0.5], [3000.0, -1.2], [2.0, 0.3], [9000.0, 2.0], [7.0, -0.4]])
    loss, grads = kernels.grad(few, params)
    assert loss == pytest.approx(kernels.loss(few, params), rel=1e-13)
    assert_grads_close(grads, richardson_fd(lambda q: kernels.loss(few, q), params, step=1e-6),
                       rel=1e-6, what="growing tape")
    many = np.concatenate([few[[0, 1, 3, 5]]] * (PARALLEL_MIN_ROWS // 4) + [few])  # long rows last
    ploss, pgrads = kernels.grad(many, params)
    assert ploss == pytest.approx(kernels.loss(many, params), rel=1e-12)
    n_short = len(many) - len(few)
    short_loss, short_grads = kernels.grad(few[[0, 1, 3, 5]], params)
    for k in grads:
        expected = (short_grads[k] * n_short + grads[k] * len(few)) / len(many)
        assert pgrads[k] == pytest.approx(expected, rel=1e-10)


# ---- hygiene of the generated code -----------------------------------------------------------------

PYTHONIC_NAMES = """
# names that mean something in Python, NumPy, Numba or our generated code
data np, numba
param range = 0.7
param lambda = 1.3
param grad[2] = 0.4

fn tape(dl_np, math) {
    return dl_np * math + 1.0
}

None = np * range
class = 0.0
for len in 0..3 {
    class += tape(lambda, None) * (1.0 * len)
}
print = grad[0] * numba
float = sum(grad * grad)
dl_ftape = class + print + float
b_range = range * 2.0
t = b_range + dl_ftape
loss t^2
"""


def test_names_like_np_range_lambda_grad_tape_do_not_collide(tmp_path):
    csv = tmp_path / "n.csv"
    csv.write_text("np,numba\n0.5,1.5\n-1.0,2.0\n")
    prog = compile_source(PYTHONIC_NAMES, "names.dl")
    rows = read_rows(prog, str(csv))
    data = load_data(prog, str(csv))
    kernels = compile_kernels(prog)
    params = initial_params(prog)
    # an independent computation in plain Python
    def by_hand(p, row):
        none = row["np"] * p["range"]
        cls = 0.0
        for i in range(3):
            cls += (p["lambda"] * none + 1.0) * i
        prt = p["grad"][0] * row["numba"]
        flt = float(np.sum(p["grad"] * p["grad"]))
        t = p["range"] * 2.0 + cls + prt + flt
        return t * t
    expected = np.mean([by_hand(params, r) for r in rows])
    assert kernels.loss(data, params) == pytest.approx(expected, rel=1e-12)
    loss, grads = kernels.grad(data, params)
    assert_grads_close(grads, richardson_fd(lambda q: kernels.loss(data, q), params), what="names")


HOSTILE = '''
# ")); __import__("os").system("touch /tmp/dlang-pwned") #
const payload = 3   # '; import os; os.system("rm -rf /") ; '
data x
param w = 0.5       # """ exec("print(1)") """
y = w * x + payload # \\n import sys
loss (y - 1.0)^2
'''


def test_no_user_text_but_identifiers_reaches_the_generated_source():
    prog = compile_source(HOSTILE, "hostile.dl", {"payload": "7"})
    source = kernel_source(prog)
    for fragment in ("import__", "os.system", "pwned", "rm -rf", "exec(", "print(1)", "import sys", '"""'):
        assert fragment not in source
    identifiers = {"x", "w", "y", "payload"}
    allowed_strings = re.compile(r"""^("numpy")$""")
    names = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING:
            assert allowed_strings.match(tok.string), tok.string
        elif tok.type == tokenize.COMMENT:
            # our comments: fixed text, or a primal statement rendered from mangled names
            assert re.fullmatch(r"#[ A-Za-z0-9_.,:;()=+\-*/<>!\[\]'\"]*", tok.string), tok.string
            assert "import" not in tok.string.replace("import math", "").replace("import numpy", "")
        elif tok.type == tokenize.NAME:
            names.add(tok.string)
    assert identifiers - {"payload"} <= names  # the program's identifiers do reach the code, as names
    assert re.search(r"^\s+y = \w+ \+ 7(\.0)?$", source, re.M), "the --const value reaches the code as our number"


def _chain_program(k: int, steps: int = 100) -> str:
    lines = ["data x", "param w[3] = 0.5", "param a = 0.2", "fn f(u, v) {", "    return u * tanh(v) + w @ w", "}",
             "z = x"]
    for i in range(k):
        lines += [f"for i{i} in 0..{steps} {{", f"    if z > {i}.5 {{ z = f(z, a) }} else {{ z = z * a + sin(z) }}", "}"]
    lines.append("loss z^2")
    return "\n".join(lines) + "\n"


def test_generated_source_grows_linearly_and_loops_are_not_unrolled():
    def size(k, steps=100):
        prog = compile_source(_chain_program(k, steps), "chain.dl")
        return len(kernel_source(prog))

    s10, s20, s40 = size(10), size(20), size(40)
    assert 1.6 < s40 / s20 < 2.2 and 1.6 < s20 / s10 < 2.2, (s10, s20, s40)
    assert size(10, steps=99999) == size(10, steps=10000)  # the trip count is a number, not copies


def _array_statements(n: int) -> str:
    """n lines of `e += sum(sin(v))` over a 4-vector that varies by row (issue 11's program)."""
    return "data x\nparam w[4] = 0.1\nv = w * x\ne = 0.0\n" + "e += sum(sin(v))\n" * n + "loss e\n"


def test_generated_source_per_line_of_dlang_stays_constant():
    """Small arrays become scalars (passes.scalarize_small_arrays): no loop per array op, and
    the kernel source grows by the same number of lines for every line of the program."""
    lines = {n: len(kernel_source(compile_source(_array_statements(n), "sums.dl")).splitlines())
             for n in (50, 100, 200, 400)}
    per_line = [(lines[b] - lines[a]) / (b - a) for a, b in ((50, 100), (100, 200), (200, 400))]
    assert max(per_line) - min(per_line) <= 0.5, (lines, per_line)
    assert per_line[0] < 40, per_line  # the old kernels: 82 lines per line of dlang (5 copies, array loops)
    loops = [kernel_source(compile_source(_array_statements(n), "sums.dl")).count("for dl_i in") for n in (3, 50)]
    assert loops[0] == loops[1], loops  # no loop per array op (only the gradients' copy into the output)


def test_generated_source_is_readable():
    prog = load_program(str(PROGRAMS / "projectile.dl"))
    source = kernel_source(prog)
    assert "# grad of:" in source
    assert "b_drag" in source and "b_vx" in source
    assert "def dl_forward(dl_data, dl_lo, dl_hi, drag, angle, dl_losses, dl_outs):" in source
    assert "v0 = dl_data[dl_r, 0]" in source
    assert "dl_ft0[dl_fp0 + 0] = " in source and "= dl_ft0[dl_fp0]" in source


def test_parallel_kernels_are_bitwise_identical_whatever_the_thread_count(tmp_path):
    import numba

    from dlang.abi import PARALLEL_MIN_ROWS

    prog = compile_source("data x, y\nparam a = 0.3\nparam w[2] = 0.5\n"
                          "loss (a * x + w[0] * sin(x) - y)^2 + 0.01 * dot(w, w)\n", "par.dl")
    rng = np.random.default_rng(1)
    rows = PARALLEL_MIN_ROWS + 1001
    data = np.column_stack([rng.normal(size=rows), rng.normal(size=rows)])
    kernels = compile_kernels(prog)
    params = initial_params(prog)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            results.append((kernels.grad(data, params), kernels.forward_rows(data, params)[0]))
    finally:
        numba.set_num_threads(before)
    (g1, f1), (g2, f2) = results
    assert g1[0] == g2[0] and all(np.array_equal(g1[1][k], g2[1][k]) for k in g1[1])
    assert np.array_equal(f1, f2)
    # and the parallel kernels agree with the serial ones (which differ only in summation order)
    serial = kernels.grad(data[:PARALLEL_MIN_ROWS - 1], params)
    parallel = kernels.grad(np.concatenate([data[:PARALLEL_MIN_ROWS - 1]] * 2), params)
    assert parallel[0] == pytest.approx(serial[0], rel=1e-12)
    for k in serial[1]:
        np.testing.assert_allclose(parallel[1][k], serial[1][k], rtol=1e-11)
    assert kernels.loss(data, params) == pytest.approx(program_loss(prog, [{"x": x, "y": y} for x, y in data], params),
                                                       rel=1e-12)


def test_faults_in_parallel_kernels_are_reported_with_line_and_row():
    from dlang.errors import RuntimeFault
    from dlang.abi import PARALLEL_MIN_ROWS

    prog = compile_source("data k\nparam a = 1.0\nv = zeros(3)\ns = 0.0\nn = 0\n"
                          "while k > 0.5 and n < 5 {\n  s += v[n] * a\n  n += 1\n}\nloss s + k\n", "oob.dl")
    kernels = compile_kernels(prog)
    data = np.zeros((PARALLEL_MIN_ROWS + 10, 1))
    data[1500, 0] = 1.0  # only this row reads past the end of v
    for run in (lambda: kernels.grad(data, {"a": 1.0}), lambda: kernels.loss(data, {"a": 1.0})):
        with pytest.raises(RuntimeFault) as err:
            run()
        assert "oob.dl:7:8" in str(err.value) and "data row 1501" in str(err.value)
    data[1500, 0] = 0.0
    assert kernels.loss(data, {"a": 1.0}) == 0.0  # and without that row, no fault
