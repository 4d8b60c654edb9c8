"""One walk over the whole primitive registry (dlang/prims.py): every op's type rule, its
compiled kernel against the reference interpreter, and its derivative against Richardson
central differences, on scalars and arrays.

Every op gets cases here; a new op without cases fails test_every_op_is_walked. An op's cases
go into one IR program (separate params per case), built directly in IR so that ops the
language has no spelling for are reached too. (One program per op: Numba's compile time grows
faster than a function's size, so many small programs compile sooner than one large one.)
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pytest

from dlang import ir
from dlang.ir import BOOL, F64, I64, Block, Eqn, IfElse, Lit, ParamInput, Program, Type, Var
from dlang.interp import grad_row, run_body
from dlang.pipeline import compile_kernels
from dlang.prims import BUILTINS, REGISTRY, TypeRuleError, result_type
from dlang.reverse import reverse_ad
from dlang.verify import verify

from conftest import ROOT
from forward_helpers import forward_gradient_interpreted, hvp_interpreted
from test_ad import assert_grads_close, richardson_fd

STRUCTURAL = {"push", "pop", "seal", "sweep"}  # tested by test_second_order.py and the verifier tests

# (low, mid, high) sample points per op and argument; the default keeps away from kinks
DOMAIN = {
    "log": [(0.4, 1.3, 2.2)], "log2": [(0.4, 1.3, 2.2)], "log10": [(0.4, 1.3, 2.2)], "sqrt": [(0.4, 1.3, 2.2)],
    "log1p": [(-0.3, 0.5, 1.7)], "asin": [(-0.6, 0.2, 0.7)], "acos": [(-0.6, 0.2, 0.7)], "tan": [(-1.0, 0.3, 0.9)],
    "pow": [(0.6, 1.4, 2.1), (-1.2, 0.5, 1.7)], "div": [(-0.8, 0.3, 1.1), (0.7, -1.3, 1.9)],
    "div_or_zero": [(-0.8, 0.3, 1.1), (0.7, -1.3, 1.9)],
    "min": [(-0.8, 0.3, 1.1), (0.2, -1.1, 1.9)], "max": [(-0.8, 0.3, 1.1), (0.2, -1.1, 1.9)],
    "lt_weight": [(-0.8, 0.3, 1.1), (0.2, -1.1, 1.9)], "mask_gt": [(-0.8, 0.3, 1.1), (0.2, -1.1, 1.9)],
    "clamp": [(-0.8, 0.3, 1.1), (-0.5, -0.6, 0.2), (0.4, 0.9, 0.7)],
    "smoothstep": [(-0.8, 0.3, 1.1), (0.2, 0.5, 0.9)], "softmax2": [(-0.8, 0.3, 1.1), (-0.8, 0.3, 1.1), (0.2, 0.5, 0.9)],
    "softmin2": [(-0.8, 0.3, 1.1), (-0.8, 0.3, 1.1), (0.2, 0.5, 0.9)],
    "floor": [(-1.3, 0.3, 1.7)], "ceil": [(-1.3, 0.3, 1.7)], "round": [(-1.3, 0.3, 1.7)],
}
DEFAULT = (-0.8, 0.3, 1.1)


@dataclass
class _Builder:
    """A program built directly in IR: ops the language has no spelling for are reachable."""

    params: list = field(default_factory=list)  # (ParamInput, Var, value)
    eqns: list = field(default_factory=list)
    next_id: int = 0
    cases: dict = field(default_factory=dict)  # op -> [param names]
    loss: object = None

    def var(self, t: Type, hint: str = "") -> Var:
        self.next_id += 1
        return Var(self.next_id, t, hint)

    def param(self, op: str, value) -> Var:
        name = f"p{len(self.params)}_{op}"
        value = np.asarray(value, dtype=float)
        t = Type("f64", value.shape)
        v = self.var(t, name)
        self.params.append((ParamInput(name, t, ("value", 0.0)), v, value if value.shape else float(value)))
        self.cases.setdefault(op, []).append(name)
        return v

    def op(self, name: str, *ins, **params) -> Var:
        out = self.var(result_type(name, [a.type for a in ins], params))
        self.eqns.append(Eqn((out,), name, tuple(sorted(params.items())), tuple(ins), (1, 1)))
        return out

    def add_to_loss(self, value: Var) -> None:
        """loss += sum(sin(value)): nonlinear, so a derivative rule that sends a contribution to
        the wrong element or scales it wrongly shows."""
        term = self.op("sin", value)
        if term.type.shape:
            term = self.op("sum", term)
        self.loss = term if self.loss is None else self.op("add", self.loss, term)

    def program(self) -> Program:
        block = Block(tuple(v for _, v, _ in self.params), tuple(self.eqns), (self.loss,))
        prog = Program((), (), tuple(p for p, _, _ in self.params), (), block)
        return ir.renumber(prog)

    def values(self) -> dict:
        return {p.name: value for p, _, value in self.params}


def _points(op: str, arg: int, shape: tuple = ()) -> np.ndarray:
    lo, mid, hi = DOMAIN.get(op, [DEFAULT] * 3)[min(arg, len(DOMAIN.get(op, [DEFAULT])) - 1)]
    if not shape:
        return np.array(mid)
    n = int(np.prod(shape))
    return np.linspace(lo, hi, n).reshape(shape)


def _elementwise_cases(b: _Builder, op: str, arity: int) -> None:
    shapes = [()] * arity, [(3,)] * arity, [(2, 2)] * arity, [(3,)] + [()] * (arity - 1)
    if arity >= 2:
        shapes += ([()] + [(3,)] * (arity - 1),)
    for case in shapes:
        ins = [b.param(op, _points(op, k, shape)) for k, shape in enumerate(case)]
        b.add_to_loss(b.op(op, *ins))


def _cases(b: _Builder, op: str) -> None:
    prim = REGISTRY[op]
    if prim.elementwise:
        _elementwise_cases(b, op, prim.arity)
        return
    v3 = lambda k=0: b.param(op, np.linspace(-0.7, 0.9, 3) + 0.1 * k)  # noqa: E731
    m23 = lambda k=0: b.param(op, np.linspace(-0.6, 0.8, 6).reshape(2, 3) + 0.1 * k)  # noqa: E731
    m32 = lambda: b.param(op, np.linspace(0.5, -0.9, 6).reshape(3, 2))  # noqa: E731
    s = lambda k=0: b.param(op, 0.37 + 0.2 * k)  # noqa: E731
    one = b.op("add", Lit(0, I64), Lit(1, I64))  # an int index the kernel checks at run time
    if op == "zeros":
        b.add_to_loss(b.op("add", b.op("zeros", shape=(3,)), v3()))
        b.add_to_loss(b.op("mul", b.op("zeros", shape=(2, 3)), m23()))
    elif op in ("sum", "mean"):
        b.add_to_loss(b.op(op, v3()))
        b.add_to_loss(b.op(op, b.op("mul", m23(), m23(1))))
    elif op == "dot":
        b.add_to_loss(b.op("dot", v3(), v3(1)))
    elif op == "matmul":
        b.add_to_loss(b.op("matmul", m23(), v3()))        # matrix @ vector
        b.add_to_loss(b.op("matmul", b.param(op, [0.3, -0.5]), m23()))  # vector @ matrix
        b.add_to_loss(b.op("matmul", m23(), m32()))       # matrix @ matrix
        b.add_to_loss(b.op("matmul", v3(), v3(2)))        # vector @ vector
    elif op == "index":
        b.add_to_loss(b.op("index", v3(), one))
        b.add_to_loss(b.op("index", m23(), one))          # a row
        b.add_to_loss(b.op("index", m23(), one, Lit(2, I64)))
    elif op in ("setindex", "addindex"):
        b.add_to_loss(b.op(op, v3(), s(), one))
        b.add_to_loss(b.op(op, m23(), v3(1), one))        # a row
        b.add_to_loss(b.op(op, m23(), s(1), Lit(0, I64), one))
    elif op == "transpose":
        b.add_to_loss(b.op("mul", b.op("transpose", m23()), m32()))
    elif op == "outer":
        b.add_to_loss(b.op("outer", v3(), b.param(op, [0.4, -0.2])))
    elif op == "pack":
        b.add_to_loss(b.op("pack", s(), s(1), s(2), shape=(3,)))
        b.add_to_loss(b.op("mul", b.op("pack", *(s(k) for k in range(6)), shape=(2, 3)), m23()))
    elif op == "logsumexp":
        b.add_to_loss(b.op("logsumexp", v3()))
        b.add_to_loss(b.op("logsumexp", m23()))
    elif op == "softmax":  # of an array, with a temperature
        b.add_to_loss(b.op("mul", b.op("softmax", v3(), b.param(op, 0.7)), v3(1)))
        b.add_to_loss(b.op("mul", b.op("softmax", m23(), b.param(op, 1.3)), m23(1)))
    elif REGISTRY[op].expand is not None:  # a composite (softrank, softsort): built from other ops
        b.add_to_loss(b.op("mul", REGISTRY[op].expand(b, v3(), b.param(op, 0.6)), v3(1)))
    elif op == "broadcast":
        b.add_to_loss(b.op("mul", b.op("broadcast", s(), shape=(2, 3)), m23()))
    elif op in ("lt", "le", "gt", "ge", "eq", "ne"):
        for x, y in ((0.3, 0.9), (0.9, 0.3)):  # the comparison true, then false
            a, c = b.param(op, x), b.param(op, y)
            cond = b.op(op, a, c)
            then = Block((), (), (a,))
            orelse = Block((), (), (c,))
            out = b.var(F64)
            b.eqns.append(IfElse((out,), cond, then, orelse, (1, 1)))
            b.add_to_loss(b.op("mul", out, out))
        k = b.op("add", Lit(2, I64), Lit(1, I64))  # and on ints
        flag = b.op(op, k, Lit(3, I64))
        out = b.var(F64)
        x = s()
        b.eqns.append(IfElse((out,), flag, Block((), (), (x,)), Block((), (), (Lit(0.0, F64),)), (1, 1)))
        b.add_to_loss(out)
    elif op == "not":
        a, c = s(), s(1)
        flag = b.op("not", b.op("lt", a, c))
        out = b.var(F64)
        b.eqns.append(IfElse((out,), flag, Block((), (), (a,)), Block((), (), (c,)), (1, 1)))
        b.add_to_loss(out)
    elif op == "to_float":
        b.add_to_loss(b.op("mul", b.op("to_float", b.op("add", Lit(2, I64), Lit(1, I64))), s()))
    elif op == "to_int":  # an int from a param's value, used as an index (zero derivative)
        k = b.op("to_int", b.op("mul", s(), Lit(4.0, F64)))
        b.add_to_loss(b.op("mul", b.op("index", v3(), k), s(1)))
    else:
        raise AssertionError(f"no cases for op {op}: add them to this test")


def _walk(op: str):
    b = _Builder()
    _cases(b, op)
    prog = b.program()
    verify(prog)
    return b, prog


def test_every_op_is_walked():
    for op in set(REGISTRY) - STRUCTURAL:
        b, _ = _walk(op)
        assert b.cases.get(op), op
    assert {op for op, p in REGISTRY.items() if p.structural} == STRUCTURAL


@pytest.mark.parametrize("op", sorted(set(REGISTRY) - STRUCTURAL))
def test_kernel_matches_the_interpreter_and_derivative_matches_finite_differences(op):
    b, prog = _walk(op)
    kernels = compile_kernels(prog)
    values = b.values()
    data = np.zeros((1, 0))
    for shift in (0.0, 0.07):  # two points per case
        params = {k: v + shift for k, v in values.items()}
        loss = kernels.loss(data, params)
        assert loss == pytest.approx(run_body(prog, {}, params)[0], rel=1e-12, abs=1e-12)
        _, grads = kernels.grad(data, params)
        mine = {name: grads[name] for name in b.cases[op]}
        fd = richardson_fd(lambda q: kernels.loss(data, {**params, **q}), {n: params[n] for n in mine})
        assert_grads_close(mine, fd, rel=1e-6, what=f"{op} (shift {shift})")
        interpreted = grad_row(reverse_ad(prog), {}, params)[1]
        for name in mine:
            np.testing.assert_allclose(mine[name], interpreted[name], rtol=1e-11, atol=1e-13)
        if not REGISTRY[op].differentiable:
            assert all(np.all(np.asarray(mine[n]) == 0.0) for n in mine if _only_through(b, op, n))


@pytest.mark.parametrize("op", sorted(set(REGISTRY) - STRUCTURAL))
def test_forward_mode_and_hessian_vector_products_of_every_op(op):
    """The JVP rule against the VJP rule (the compiled reverse-mode gradient) and finite
    differences; forward over reverse (H v) against central differences of the gradient."""
    b, prog = _walk(op)
    kernels = compile_kernels(prog)
    values = b.values()
    data = np.zeros((1, 0))
    rng = np.random.default_rng(len(op))
    for shift in (0.0, 0.07, -0.05):  # several points per case
        params = {k: v + shift for k, v in values.items()}
        loss, reverse = kernels.grad(data, params)
        fwd_loss, forward = forward_gradient_interpreted(prog, [{}], params)
        assert fwd_loss == pytest.approx(loss, rel=1e-12, abs=1e-14)
        mine = {name: forward[name] for name in b.cases[op]}
        for name in mine:
            assert_grads_close({name: mine[name]}, {name: reverse[name]}, rel=1e-12, what=f"{op} forward vs reverse")
        fd = richardson_fd(lambda q: kernels.loss(data, {**params, **q}), {n: params[n] for n in mine})
        assert_grads_close(mine, fd, rel=1e-6, what=f"{op} forward mode (shift {shift})")
        direction = {k: rng.standard_normal(np.shape(v)) if np.ndim(v) else float(rng.standard_normal())
                     for k, v in params.items()}
        _, grads, hv = hvp_interpreted(prog, [{}], params, direction)
        h = 1e-5
        plus = kernels.grad(data, {k: params[k] + h * direction[k] for k in params})[1]
        minus = kernels.grad(data, {k: params[k] - h * direction[k] for k in params})[1]
        cd = {k: (np.asarray(plus[k]) - np.asarray(minus[k])) / (2 * h) for k in mine}

        assert_grads_close({k: hv[k] for k in mine}, cd, rel=1e-5, what=f"{op} H v (shift {shift})")


def _only_through(b: _Builder, op: str, name: str) -> bool:
    """Whether the param reaches the loss only through op (true for an elementwise op's cases)."""
    return REGISTRY[op].elementwise


@pytest.mark.parametrize("op", sorted(set(REGISTRY) - STRUCTURAL))
def test_type_rule_refuses_what_it_should(op):
    prim = REGISTRY[op]
    bad = {1: [[BOOL]], 2: [[Type("f64", (2,)), Type("f64", (3,))], [BOOL, BOOL]],
           3: [[Type("f64", (2,)), Type("f64", (3,)), F64]]}.get(prim.arity, [[]])
    if op in ("zeros",):
        with pytest.raises(TypeRuleError):
            result_type(op, [], {"shape": (0,)})
        return
    if op in ("lt", "le", "gt", "ge", "eq", "ne"):
        bad = [[F64, I64], [Type("f64", (2,)), Type("f64", (2,))]]
    elif op == "not":
        bad = [[F64]]
    elif op == "outer":
        bad = [[F64, F64]]
    for ins in bad:
        with pytest.raises(TypeRuleError):
            result_type(op, ins, {"shape": (2,)})


def test_every_builtin_is_documented_and_has_a_kernel_template():
    docs = (ROOT / "docs" / "language.md").read_text()
    for name, prim in BUILTINS.items():
        assert re.search(rf"`{name}\b", docs), f"builtin {name} is not in docs/language.md"
        assert prim.doc, name
    import dlang.runtime as runtime

    for prim in REGISTRY.values():
        if prim.structural or prim.expand is not None:  # a composite is made of other ops
            continue
        assert prim.scalar or prim.render, f"{prim.name} has no kernel template"
        for helper in re.findall(r"dl_rt\.(\w+)", prim.scalar or ""):
            assert helper == prim.helper, f"{prim.name}: its template calls dl_rt.{helper}, its record says {prim.helper}"
            assert callable(getattr(runtime, helper, None)), f"dlang/runtime.py has no {helper}"
        assert prim.differentiable == (prim.vjp is not None), prim.name


def test_new_builtins_by_hand():
    """The five builtins added through the registry, against math."""
    from dlang.frontend import compile_source

    prog = compile_source("param x = 0.7\nparam y = -2.5\n"
                          "loss log2(x) + log10(x) + exp2(x) + hypot(x, y) + erf(x)\n", "new.dl")
    kernels = compile_kernels(prog)
    loss, grads = kernels.grad(np.zeros((1, 0)), {"x": 0.7, "y": -2.5})
    want = math.log2(0.7) + math.log10(0.7) + 2 ** 0.7 + math.hypot(0.7, -2.5) + math.erf(0.7)
    assert loss == pytest.approx(want, rel=1e-14)
    dx = (1 / (0.7 * math.log(2)) + 1 / (0.7 * math.log(10)) + math.log(2) * 2 ** 0.7
          + 0.7 / math.hypot(0.7, -2.5) + 2 / math.sqrt(math.pi) * math.exp(-0.49))
    assert grads["x"] == pytest.approx(dx, rel=1e-13)
    assert grads["y"] == pytest.approx(-2.5 / math.hypot(0.7, -2.5), rel=1e-13)
    at_zero = compile_kernels(compile_source("param x = 0.0\nparam y = 0.0\nloss hypot(x, y)\n", "h0.dl"))
    assert at_zero.grad(np.zeros((1, 0)), {"x": 0.0, "y": 0.0})[1] == {"x": 0.0, "y": 0.0}  # like abs'(0)
