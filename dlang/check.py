"""The checker: resolves names, infers types and shapes, checks definite assignment, and
lowers the AST to IR in the same walk.

Checking and lowering share one walk because in dlang the type of every value, which
locals are carried through a loop, and which are defined after an `if` all fall out of the
same flow-sensitive pass. Errors are collected, not raised one by one: a bad value becomes a
poisoned atom (type `error`) that silences follow-on errors, and the walk goes on, so one run
reports every independent problem. Functions are inlined at each call.
"""
from __future__ import annotations

import math

import difflib
from dataclasses import dataclass

from . import ir
from . import nodes as n
from .consts import INT_MAX, ConstEvaluator
from .errors import Diagnostic, ProgramError, Span
from .ir import BOOL, F64, I64, Block, Eqn, ForLoop, IfElse, Lit, Type, Var, WhileLoop
from .prims import BUILTINS as PRIMITIVE_BUILTINS
from .prims import builtin_op
from .prims import OPERATOR_SPELLING, TypeRuleError, result_type

ERR = Type("error")
POISON = Lit(0.0, ERR)
LOSS = "$loss"  # the hidden local that accumulates `loss` statements

# The builtins a program may call: the registry's, and len, which the checker folds to an int.
BUILTINS = set(PRIMITIVE_BUILTINS) | {"len"}
ARITY = {**{name: p.call_arity for name, p in PRIMITIVE_BUILTINS.items()}, "len": (1,)}
_OP_WORD = OPERATOR_SPELLING
_CHAIN_OPS = ("add", "sub", "mul", "div", "matmul")  # left-associative: a + b + c is (a + b) + c
_KIND_WORD = {"f64": "a float", "i64": "an int", "bool": "a true/false condition"}


def describe(t: Type) -> str:
    if t.shape:
        return f"an array of shape [{', '.join(map(str, t.shape))}]"
    return _KIND_WORD.get(t.kind, "an invalid value")


def _loc(node: n.Node) -> ir.Loc:
    return (node.span.line, node.span.col)


@dataclass
class _Binding:
    atom: ir.Atom
    first: Span  # where the local was first assigned
    is_index: bool = False


@dataclass
class _Scope:
    """What a body (the program's, or one inlined function's) can see and change."""

    locals: dict[str, _Binding]
    maybe: dict[str, str]  # locals that may be unassigned here -> why
    fn: n.FnDef | None = None
    depth: int = 0  # nesting of loops and branches


class _Checker:
    def __init__(self, prog: n.Program, overrides: dict, path: str | None, source: str | None,
                 column_rows: int | None = None):
        self.prog = prog
        self.column_rows = column_rows  # the data's rows: the length of a whole column (`data x[]`)
        self.path = path
        self.source = source
        self.diags: list[Diagnostic] = []
        self._next_id = 0
        self.stmts: list[ir.Stmt] = []
        self.consts: dict[str, n.ConstDecl] = {}
        self.data: dict[str, Var] = {}
        self.params: dict[str, Var] = {}
        self.fns: dict[str, n.FnDef] = {}
        self.declared: dict[str, tuple[str, Span]] = {}
        self.inline_stack: list[str] = []
        self.called: set[str] = set()
        self.outputs: dict[str, tuple[ir.Atom, Span]] = {}
        self.overrides = overrides
        self.const_eval = ConstEvaluator({}, overrides, self.report, path)

    # ---- plumbing ------------------------------------------------------------------------

    def report(self, message: str, span: Span | None, note: str | None = None) -> None:
        d = Diagnostic(message, span, self.path, note)
        if d not in self.diags:
            self.diags.append(d)

    def fresh(self, type_: Type, hint: str = "") -> Var:
        self._next_id += 1
        return Var(self._next_id, type_, hint)

    def emit(self, op: str, ins: list[ir.Atom], out: Type, node: n.Node, hint: str = "",
             **params) -> ir.Atom:
        if out == I64 and all(isinstance(a, Lit) for a in ins):  # fold int arithmetic now
            from .prims import evaluate

            value = evaluate(op, params, [a.value for a in ins], I64)
            if abs(value) > INT_MAX:
                self.report(f"this int arithmetic overflows: the result {value} is too large", node.span)
                return POISON
            return Lit(value, I64)
        if op == "to_float" and isinstance(ins[0], Lit):
            return Lit(float(ins[0].value), F64)
        var = self.fresh(out, hint)
        self.stmts.append(Eqn((var,), op, tuple(sorted(params.items())), tuple(ins), _loc(node)))
        return var

    def region(self, params: tuple[Var, ...], body) -> Block:
        """Lower `body()` into a new block; body returns the block's results."""
        saved, self.stmts = self.stmts, []
        results = body()
        block = Block(params, tuple(self.stmts), tuple(results))
        self.stmts = saved
        return block

    # ---- declarations --------------------------------------------------------------------

    def declare(self, name: str, kind: str, span: Span) -> bool:
        if name in self.declared:
            other_kind, other = self.declared[name]
            self.report(f"'{name}' is already declared as {other_kind} at line {other.line}", span)
            return False
        if kind == "a function" and name in BUILTINS:
            self.report(f"'{name}' is a builtin function and cannot be redefined", span)
            return False
        self.declared[name] = (kind, span)
        return True

    def collect_declarations(self) -> None:
        for item in self.prog.items:
            if isinstance(item, n.ConstDecl) and self.declare(item.name, "a const", item.span):
                self.consts[item.name] = item
            elif isinstance(item, n.FnDef) and self.declare(item.name, "a function", item.span):
                self.fns[item.name] = item
        self.const_eval.decls = self.consts
        for name in self.overrides:
            if name not in self.consts:
                close = difflib.get_close_matches(name, list(self.consts), 1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.report(f"--const {name}: the program has no const named '{name}'{hint}", None)
        for item in self.prog.items:  # a whole column's length is known before any const: const n = len(day)
            if isinstance(item, n.DataDecl):
                for d in item.items:
                    if d.whole:
                        self.note_length(d.name, self.data_type(d))
        for name, decl in self.consts.items():
            self.const_eval.value_of(name, decl.span)
        self.check_whole_columns()
        for item in self.prog.items:
            if isinstance(item, n.DataDecl):
                for d in item.items:
                    if self.declare(d.name, "data", d.span):
                        self.data[d.name] = self.fresh(self.data_type(d), d.name)
                        self.note_length(d.name, self.data[d.name].type)
            elif isinstance(item, n.ParamDecl) and self.declare(item.name, "a param", item.span):
                self.params[item.name] = self.fresh(self.shape_type(item.shape, f"param {item.name}"), item.name)
                self.note_length(item.name, self.params[item.name].type)

    def note_length(self, name: str, t: Type) -> None:
        """len(name) is known from here on in sizes (zeros(len(day)))."""
        if t.shape:
            self.const_eval.lengths[name] = t.shape[0]

    def shape_type(self, dims: tuple[n.Expr, ...], what: str) -> Type:
        if len(dims) > 2:
            self.report(f"{what} has {len(dims)} dimensions; arrays have 1 or 2", dims[2].span)
            return ERR
        sizes = [self.const_eval.size(d, f"the size of {what}") for d in dims]
        if any(s is None for s in sizes):
            return ERR
        return Type("f64", tuple(sizes))

    def check_whole_columns(self) -> None:
        """A program reads whole columns (`data x[]`, its body run once) or one row at a time."""
        items = [d for item in self.prog.items if isinstance(item, n.DataDecl) for d in item.items]
        whole = [d for d in items if d.whole]
        per_row = [d for d in items if not d.whole]
        if whole and per_row:
            self.report(f"data {per_row[0].name} is one row's value, but data {whole[0].name}[] reads a whole column; "
                        "a program reads either whole columns or one row at a time",
                        per_row[0].span, f"write data {per_row[0].name}[] to read its whole column too")

    def data_type(self, d: n.DataItem) -> Type:
        if d.whole:
            return Type("f64", (self.column_rows if self.column_rows is not None else COLUMN_ROWS_UNKNOWN,))
        if len(d.shape) > 1:
            self.report(f"data {d.name} has {len(d.shape)} dimensions; data vectors have one", d.shape[1].span)
            return ERR
        return self.shape_type(d.shape, f"data {d.name}")

    def param_inputs(self) -> tuple[ir.ParamInput, ...]:
        out = []
        for item in self.prog.items:
            if not isinstance(item, n.ParamDecl) or item.name not in self.params:
                continue
            init = item.init
            what = f"the starting value of param {item.name}"
            if isinstance(init, n.RandomInit):
                if init.dist not in ("normal", "uniform"):
                    self.report(f"unknown distribution '{init.dist}'; use normal(MEAN, SD) or uniform(LO, HI)",
                                init.dist_span)
                    continue
                if len(init.args) != 2:
                    self.report(f"{init.dist} takes 2 arguments, but {len(init.args)} were given", init.span)
                    continue
                a, b = (self.const_eval.eval(x, f"an argument of {init.dist}") for x in init.args)
                if a is None or b is None:
                    continue
                if init.dist == "normal" and b < 0:
                    self.report(f"the standard deviation of normal must not be negative, not {b}", init.args[1].span)
                if init.dist == "uniform" and b < a:
                    self.report(f"uniform(LO, HI) needs LO <= HI, not {a} > {b}", init.span)
                spec: tuple = (init.dist, float(a), float(b))
            else:
                value = self.const_eval.eval(init, what)
                if value is None:
                    continue
                spec = ("value", float(value))
            bounds = self.bounds(item, spec)
            if bounds is False:
                continue
            out.append(ir.ParamInput(item.name, self.params[item.name].type, spec, bounds))
        return tuple(out)

    def bounds(self, item: n.ParamDecl, spec: tuple):
        """A param's `in (lo, hi)`: the numbers, None without one, False after reporting an error."""
        b = item.bounds
        if b is None:
            return None

        def number(e):
            if isinstance(e, n.Name) and e.id == "inf":
                return math.inf
            if isinstance(e, n.Unary) and e.op == "neg" and isinstance(e.operand, n.Name) and e.operand.id == "inf":
                return -math.inf
            return self.const_eval.eval(e, f"a bound of param {item.name}")

        lo, hi = number(b.lo), number(b.hi)
        if lo is None or hi is None:
            return False
        lo, hi = float(lo), float(hi)
        if not lo < hi:
            self.report(f"the bounds of param {item.name} must have lo < hi, not ({lo:g}, {hi:g})", b.span)
            return False
        if spec[0] == "value" and not lo < spec[1] < hi:
            self.report(f"the starting value {spec[1]:g} of param {item.name} is not inside its bounds "
                        f"({lo:g}, {hi:g})", item.init.span)
            return False
        return (lo, hi)

    # ---- the program body ----------------------------------------------------------------

    def check_program(self) -> ir.Program:
        self.collect_declarations()
        param_inputs = self.param_inputs()
        scope = _Scope({LOSS: _Binding(Lit(0.0, F64), self.prog.span)}, {})
        body_items = [i for i in self.prog.items if not isinstance(i, (n.ConstDecl, n.DataDecl, n.ParamDecl, n.FnDef))]

        def body():
            self.block(body_items, scope)
            outs = [atom for atom, _ in self.outputs.values()]
            return [scope.locals[LOSS].atom, *outs]

        inputs = tuple(self.data.values()) + tuple(self.params.values())
        block = self.region(inputs, body)
        for name, fn in self.fns.items():  # check functions nobody calls, with unknown argument types
            if name not in self.called:
                self.stmts = []
                self.inline(fn, [POISON] * len(fn.params), fn.span)
        whole = {d.name for item in self.prog.items if isinstance(item, n.DataDecl) for d in item.items if d.whole}
        data = tuple(ir.DataInput(name, v.type, name in whole) for name, v in self.data.items())
        consts = tuple((k, v) for k, v in self.const_eval.values.items() if v is not None)
        has_loss = any(isinstance(s, n.Loss) for s in _all_statements(body_items))
        return ir.Program(consts, data, param_inputs, tuple(self.outputs), block, has_loss, self.path)

    def block(self, items, scope: _Scope) -> None:
        for k, item in enumerate(items):
            if isinstance(item, (n.ConstDecl, n.DataDecl, n.ParamDecl, n.FnDef)):
                kind = {n.ConstDecl: "const", n.DataDecl: "data", n.ParamDecl: "param", n.FnDef: "fn"}[type(item)]
                self.report(f"{kind} declarations belong at the top level of the program, "
                            f"not inside a {'function' if scope.fn and scope.depth == 0 else 'block'}", item.span)
            elif isinstance(item, n.Return):
                is_last = scope.fn is not None and scope.depth == 0 and k == len(items) - 1
                if scope.fn is None:
                    self.report("return is only allowed at the end of a function", item.span)
                elif not is_last:
                    self.report(f"return must be the last statement of function {scope.fn.name}", item.span)
            else:
                self.statement(item, scope)

    def statement(self, s, scope: _Scope) -> None:
        if isinstance(s, n.Assign):
            self.assign(s, scope)
        elif isinstance(s, n.For):
            self.for_loop(s, scope)
        elif isinstance(s, n.While):
            self.while_loop(s, scope)
        elif isinstance(s, n.If):
            self.if_else(s, scope)
        elif isinstance(s, n.Loss):
            self.loss(s, scope)
        elif isinstance(s, n.Output):
            self.output(s, scope)

    # ---- assignment ----------------------------------------------------------------------

    def writable(self, name: str, span: Span, scope: _Scope, element: bool = False) -> bool:
        what = "an element of " if element else ""
        if name in scope.locals and scope.locals[name].is_index:
            self.report(f"cannot assign to {what}the loop index '{name}'", span)
            return False
        if name in scope.locals or (scope.fn and name in scope.fn.params):
            return True
        if name in self.params:
            self.report(f"cannot assign to {what}param '{name}': params change only by training", span)
        elif name in self.data:
            self.report(f"cannot assign to {what}data '{name}': data is read from the CSV", span)
        elif name in self.consts:
            self.report(f"cannot assign to {what}const '{name}'", span)
        elif name in self.fns:
            self.report(f"cannot assign to '{name}': it is a function", span)
        else:
            return True
        return False

    def assign(self, s: n.Assign, scope: _Scope) -> None:
        target = s.target
        name = target.name
        if not self.writable(name, target.span, scope, element=bool(target.indices)):
            self.value(s.value, scope)
            return
        if target.indices:
            self.assign_element(s, scope)
            return
        if s.op is not None:
            current = self.read(name, target.span, scope)
            rhs = self.value(s.value, scope)
            new = self.binary(s.op, current, rhs, s, hint=name)
        else:
            new = self.value(s.value, scope, hint=name)
        self.bind(name, new, s, scope)

    def bind(self, name: str, new: ir.Atom, s: n.Node, scope: _Scope) -> None:
        old = scope.locals.get(name)
        if old is None or old.atom.type == ERR or new.type == ERR:
            first = old.first if old else s.span
            scope.locals[name] = _Binding(new, first)
            scope.maybe.pop(name, None)
            return
        if new.type == I64 and old.atom.type == F64:
            new = self.emit("to_float", [new], F64, s, hint=name)
        if new.type != old.atom.type:
            self.report(f"'{name}' is {describe(old.atom.type)} (since line {old.first.line}), "
                        f"so it cannot be assigned {describe(new.type)}", s.span,
                        note=_fixed_type_note(old.atom.type, new.type))
            return
        scope.locals[name] = _Binding(new, old.first)

    def assign_element(self, s: n.Assign, scope: _Scope) -> None:
        target = s.target
        array = self.read(target.name, target.span, scope)
        idx = [self.index_value(e, scope) for e in target.indices]
        rhs = self.value(s.value, scope)
        if array.type == ERR or rhs.type == ERR or any(i.type == ERR for i in idx):
            return
        if not array.type.shape:
            self.report(f"'{target.name}' is {describe(array.type)}, not an array, so it cannot be indexed", target.span)
            return
        elem_type = self.element_type(array.type, idx, target)
        if elem_type is None:
            return
        if s.op is not None:
            current = self.emit("index", [array, *idx], elem_type, target)
            rhs = self.binary(s.op, current, rhs, s)
            if rhs.type == ERR:
                return
        if rhs.type == I64 and elem_type == F64:
            rhs = self.emit("to_float", [rhs], F64, s)
        if rhs.type != elem_type:
            self.report(f"cannot store {describe(rhs.type)} into an element of '{target.name}', "
                        f"which holds {describe(elem_type)}", s.value.span)
            return
        new = self.emit("setindex", [array, rhs, *idx], array.type, s, hint=target.name)
        self.bind(target.name, new, s, scope)

    # ---- control flow --------------------------------------------------------------------

    def carried(self, items, scope: _Scope) -> list[str]:
        """Locals (certainly assigned now) that the statements may change: they flow through."""
        names = _assigned_names(items)
        return [k for k in scope.locals if k in names and not scope.locals[k].is_index]

    def for_loop(self, s: n.For, scope: _Scope) -> None:
        lo = self.int_value(s.lo, scope, "the start of a for range")
        hi = self.int_value(s.hi, scope, "the end of a for range")
        if self.name_taken(s.var, s.var_span, scope):
            return
        carried = self.carried(s.body, scope)
        index = self.fresh(I64, s.var)
        params = tuple(self.fresh(scope.locals[k].atom.type, _hint(k)) for k in carried)
        inner = self.nested(scope, carried, params)
        inner.locals[s.var] = _Binding(index, s.var_span, is_index=True)

        def body():
            self.block(s.body, inner)
            return [inner.locals[k].atom for k in carried]

        block = self.region((index, *params), body)
        outs = self.finish_loop(scope, inner, carried, s, "for loop")
        self.stmts.append(ForLoop(outs, lo, hi, tuple(scope_atoms(scope, carried)), block, _loc(s)))
        self.rebind(scope, carried, outs)

    def while_loop(self, s: n.While, scope: _Scope) -> None:
        carried = self.carried(s.body, scope)
        cond_params = tuple(self.fresh(scope.locals[k].atom.type, _hint(k)) for k in carried)
        cond_scope = self.nested(scope, carried, cond_params)
        cond_block = self.region(cond_params, lambda: [self.condition(s.cond, cond_scope, "while")])
        body_params = tuple(self.fresh(scope.locals[k].atom.type, _hint(k)) for k in carried)
        inner = self.nested(scope, carried, body_params)

        def body():
            self.block(s.body, inner)
            return [inner.locals[k].atom for k in carried]

        block = self.region(body_params, body)
        outs = self.finish_loop(scope, inner, carried, s, "while loop")
        self.stmts.append(WhileLoop(outs, tuple(scope_atoms(scope, carried)), cond_block, block, _loc(s)))
        self.rebind(scope, carried, outs)

    def if_else(self, s: n.If, scope: _Scope) -> None:
        cond = self.condition(s.cond, scope, "if")
        branches = []
        for items in (s.then, s.orelse):
            inner = self.nested(scope, [], ())
            block = self.region((), lambda: (self.block(items, inner), [])[1])
            branches.append((inner, block))
        (then_scope, then_block), (else_scope, else_block) = branches
        merged: list[str] = []
        for name in list(then_scope.locals) + list(else_scope.locals):
            if name in merged:
                continue
            a, b = then_scope.locals.get(name), else_scope.locals.get(name)
            before = scope.locals.get(name)
            if a is None or b is None:  # assigned in one branch only
                if (a or b).atom.type == ERR:
                    scope.locals[name] = a or b
                elif before is None and not (a or b).is_index:
                    scope.maybe[name] = f"it is assigned in only one branch of the if at line {s.span.line}"
                continue
            if before is not None and a.atom == before.atom and b.atom == before.atom:
                continue
            if a.atom.type != b.atom.type and ERR not in (a.atom.type, b.atom.type):
                self.report(f"'{name}' is {describe(a.atom.type)} in one branch of this if and "
                            f"{describe(b.atom.type)} in the other", s.span)
                scope.locals[name] = _Binding(POISON, s.span)
                scope.maybe.pop(name, None)
                continue
            merged.append(name)
        for name, why in then_scope.maybe.items() | else_scope.maybe.items():
            if name not in merged and name not in scope.locals:
                scope.maybe.setdefault(name, why)
        outs = tuple(self.fresh(then_scope.locals[k].atom.type, _hint(k)) for k in merged)
        then_block = Block((), then_block.eqns, tuple(then_scope.locals[k].atom for k in merged))
        else_block = Block((), else_block.eqns, tuple(else_scope.locals[k].atom for k in merged))
        self.stmts.append(IfElse(outs, cond, then_block, else_block, _loc(s)))
        for name, out in zip(merged, outs):
            first = scope.locals[name].first if name in scope.locals else then_scope.locals[name].first
            scope.locals[name] = _Binding(out, first)
            scope.maybe.pop(name, None)

    def nested(self, scope: _Scope, carried: list[str], params: tuple[Var, ...]) -> _Scope:
        inner = _Scope(dict(scope.locals), dict(scope.maybe), scope.fn, scope.depth + 1)
        for name, var in zip(carried, params):
            inner.locals[name] = _Binding(var, scope.locals[name].first)
        return inner

    def finish_loop(self, scope, inner, carried, s, what) -> tuple[Var, ...]:
        for name, binding in inner.locals.items():
            if name in scope.locals or binding.is_index:
                continue
            if binding.atom.type == ERR:  # already reported inside the loop
                scope.locals[name] = binding
            else:
                scope.maybe.setdefault(name, f"it is first assigned inside the {what} at line {s.span.line}, "
                                             "and a local first assigned in a loop is not defined after it")
        for name, why in inner.maybe.items():
            if name not in scope.locals:
                scope.maybe.setdefault(name, why)
        return tuple(self.fresh(scope.locals[k].atom.type, _hint(k)) for k in carried)

    def rebind(self, scope: _Scope, carried: list[str], outs) -> None:
        for name, out in zip(carried, outs):
            scope.locals[name] = _Binding(out, scope.locals[name].first)

    def name_taken(self, name: str, span: Span, scope: _Scope) -> bool:
        if name in scope.locals or name in scope.maybe:
            what = "a loop index" if name in scope.locals and scope.locals[name].is_index else "a local"
            self.report(f"the loop index '{name}' is already {what} here; choose another name", span)
            return True
        if name in self.declared and not (scope.fn and name in scope.fn.params):
            kind, other = self.declared[name]
            self.report(f"the loop index '{name}' is already declared as {kind} at line {other.line}", span)
            return True
        return False

    # ---- loss and output -----------------------------------------------------------------

    def loss(self, s: n.Loss, scope: _Scope) -> None:
        value = self.value(s.value, scope)
        if scope.fn is not None:
            self.report(f"loss is not allowed inside function {scope.fn.name}; return a value and "
                        "add it to the loss in the program body", s.span)
            return
        if value.type == ERR:
            return
        if value.type.shape:
            self.report(f"loss needs a number, but this is {describe(value.type)}", s.value.span,
                        note="use sum(...) or mean(...) to reduce an array to a number")
            return
        current = scope.locals[LOSS].atom
        if current == Lit(0.0, F64) and isinstance(value, Var):  # the first loss: nothing to add to
            new = self.to_float(value, s)
        else:
            new = self.binary("add", current, value, s, hint="loss")
        scope.locals[LOSS] = _Binding(new, s.span)

    def output(self, s: n.Output, scope: _Scope) -> None:
        value = self.value(s.value, scope)
        if scope.fn is not None or scope.depth > 0:
            self.report("output belongs at the top level of the program, not inside a loop, branch "
                        "or function", s.span, note="assign to a local inside, then output it after")
            return
        if s.name in self.outputs:
            line = self.outputs[s.name][1].line
            self.report(f"output '{s.name}' is already written at line {line}", s.span)
            return
        self.outputs[s.name] = (value, s.span)

    # ---- expressions -----------------------------------------------------------------------

    def value(self, e: n.Expr, scope: _Scope, hint: str = "") -> ir.Atom:
        """An expression used as a value (not a condition)."""
        atom = self.expr(e, scope, hint)
        if atom.type == BOOL:
            self.report("a comparison or true/false can only be used as the condition of if or while",
                        e.span)
            return POISON
        return atom

    def condition(self, e: n.Expr, scope: _Scope, what: str) -> ir.Atom:
        atom = self.expr(e, scope)
        if atom.type not in (BOOL, ERR):
            self.report(f"the condition of {what} must be a comparison or true/false, "
                        f"not {describe(atom.type)}", e.span, note="compare it, for example: x > 0")
            return POISON
        return atom

    def int_value(self, e: n.Expr, scope: _Scope, what: str) -> ir.Atom:
        atom = self.value(e, scope)
        if atom.type not in (I64, ERR):
            self.report(f"{what} must be an int, not {describe(atom.type)}", e.span)
            return POISON
        return atom

    def index_value(self, e: n.Expr, scope: _Scope) -> ir.Atom:
        return self.int_value(e, scope, "an index")

    def expr(self, e: n.Expr, scope: _Scope, hint: str = "") -> ir.Atom:
        if isinstance(e, n.Num):
            if e.is_int and e.value > INT_MAX:
                self.report(f"this integer is too large (the largest int is {INT_MAX})", e.span)
                return POISON
            if not e.is_int and e.value == float("inf"):
                self.report("this number is too large for a float", e.span)
                return POISON
            return Lit(e.value, I64 if e.is_int else F64)
        if isinstance(e, n.Bool):
            return Lit(e.value, BOOL)
        if isinstance(e, n.Name):
            return self.read(e.id, e.span, scope)
        if isinstance(e, n.Unary):
            return self.unary(e, scope, hint)
        if isinstance(e, n.Binary):
            if e.op in ("and", "or"):
                return self.logical(e, scope, hint)
            return self.binary_chain(e, scope, hint)
        if isinstance(e, n.Call):
            return self.call(e, scope, hint)
        if isinstance(e, n.Index):
            return self.index(e, scope, hint)
        raise AssertionError(f"unknown expression {e!r}")

    def read(self, name: str, span: Span, scope: _Scope) -> ir.Atom:
        if name in scope.locals:
            return scope.locals[name].atom
        if name in scope.maybe:
            self.report(f"'{name}' may be unassigned here: {scope.maybe[name]}", span,
                        note=f"assign '{name}' before, for example {name} = 0.0")
            scope.locals[name] = _Binding(POISON, span)
            return POISON
        if name in self.consts:
            value = self.const_eval.values.get(name)
            if value is None:
                return POISON
            return Lit(value, I64 if isinstance(value, int) else F64)
        if name in self.data:
            return self.data[name]
        if name in self.params:
            return self.params[name]
        if name in self.fns or name in BUILTINS:
            self.report(f"'{name}' is a function; call it, as in {name}(...)", span)
            return POISON
        if name in self.declared:  # a declaration that failed: already reported
            return POISON
        later = self.assigned_later(name, span)
        if later is not None and scope.fn is None:
            self.report(f"'{name}' is used before it is assigned (at line {later.line})", span,
                        note=f"assign '{name}' before this line, or move this use after line {later.line}")
        else:
            self.report(f"unknown name '{name}'{self.suggest(name, scope)}", span,
                        note=self.fn_scope_note(name, scope))
        scope.locals[name] = _Binding(POISON, span)
        return POISON

    def assigned_later(self, name: str, span: Span) -> Span | None:
        """Where the program body first assigns `name` after `span`, if it does."""
        if not hasattr(self, "_assigned"):
            self._assigned: dict[str, list[Span]] = {}

            def scan(items) -> None:
                for item in items:
                    if isinstance(item, n.Assign):
                        self._assigned.setdefault(item.target.name, []).append(item.span)
                    for inner in (getattr(item, "body", None), getattr(item, "then", None),
                                  getattr(item, "orelse", None)):
                        if inner and not isinstance(item, n.FnDef):
                            scan(inner)

            scan(self.prog.items)
        after = [s for s in self._assigned.get(name, []) if (s.line, s.col) > (span.line, span.col)]
        return after[0] if after else None

    def suggest(self, name: str, scope: _Scope) -> str:
        known = [k for k in scope.locals if not k.startswith("$")] + list(self.declared)
        close = difflib.get_close_matches(name, known, 1)
        return f"; did you mean '{close[0]}'?" if close else ""

    def fn_scope_note(self, name: str, scope: _Scope) -> str | None:
        if scope.fn is not None:
            return (f"function {scope.fn.name} sees its arguments, consts, params and data, "
                    "not the locals of the program body")
        return None

    def unary(self, e: n.Unary, scope: _Scope, hint: str) -> ir.Atom:
        if e.op == "not":
            operand = self.condition(e.operand, scope, "not")
            if operand.type == ERR:
                return POISON
            return self.emit("not", [operand], BOOL, e, hint)
        operand = self.expr(e.operand, scope)
        if operand.type == ERR:
            return POISON
        if operand.type == BOOL:
            self.report("cannot negate a comparison; use not", e.span)
            return POISON
        return self.emit("neg", [operand], operand.type, e, hint)

    def binary_chain(self, e: n.Binary, scope: _Scope, hint: str) -> ir.Atom:
        """`e` and the left-associative chain under it (a + b - c ...), folded in a loop, so a
        long flat sum does not recurse once per term. Only the outermost operation gets `hint`."""
        chain = [e]
        while isinstance(chain[-1].left, n.Binary) and chain[-1].left.op in _CHAIN_OPS:
            chain.append(chain[-1].left)
        left = self.expr(chain[-1].left, scope)
        for node in reversed(chain):
            right = self.expr(node.right, scope)
            left = self.binary(node.op, left, right, node, hint if node is e else "")
        return left

    def binary(self, op: str, left: ir.Atom, right: ir.Atom, e: n.Node, hint: str = "") -> ir.Atom:
        if ERR in (left.type, right.type):
            return POISON
        word = _OP_WORD[op]
        if BOOL in (left.type, right.type):
            self.report(f"'{word}' cannot take a comparison or true/false as an operand", e.span)
            return POISON
        if op in ("lt", "le", "gt", "ge", "eq", "ne") and (left.type.shape or right.type.shape):
            self.report(f"'{word}' compares numbers, but an operand is {describe((left.type.shape and left or right).type)}",
                        e.span, note="compare elements, for example v[i] > 0")
            return POISON
        if op in ("div", "pow") or left.type != right.type:  # int op int stays int
            left, right = self.to_float(left, e), self.to_float(right, e)
        try:
            out = result_type(op, [left.type, right.type], {})
        except TypeRuleError as err:
            self.report(_type_sentence(op, left.type, right.type, err), e.span)
            return POISON
        return self.emit(op, [left, right], out, e, hint)

    def to_int(self, x: ir.Atom, e: n.Call) -> ir.Atom:
        """int(x): an int as it is; a float rounded toward zero (checked when the program runs)."""
        if x.type == I64:
            return x
        if x.type != F64:
            self.report(f"int needs a number, but this is {describe(x.type)}", e.args[0].span)
            return POISON
        if isinstance(x, Lit):
            if not abs(x.value) < INT_MAX:
                self.report(f"int({x.value!r}): the value is not finite or too large for an int", e.span)
                return POISON
            return Lit(int(x.value), I64)
        return self.emit("to_int", [x], I64, e, "int")

    def to_float(self, atom: ir.Atom, e: n.Node) -> ir.Atom:
        return self.emit("to_float", [atom], F64, e) if atom.type == I64 else atom

    def logical(self, e: n.Binary, scope: _Scope, hint: str) -> ir.Atom:
        """`a and b` / `a or b`, short-circuit: b is evaluated only when it decides."""
        left = self.condition(e.left, scope, e.op)
        right_scope = self.nested(scope, [], ())
        right_block = self.region((), lambda: [self.condition(e.right, right_scope, e.op)])
        if ERR in (left.type, right_block.results[0].type):
            return POISON
        out = self.fresh(BOOL, hint)
        short = Block((), (), (Lit(e.op == "or", BOOL),))
        then, orelse = (right_block, short) if e.op == "and" else (short, right_block)
        self.stmts.append(IfElse((out,), left, then, orelse, _loc(e)))
        return out

    def index(self, e: n.Index, scope: _Scope, hint: str) -> ir.Atom:
        base = self.value(e.base, scope)
        idx = [self.index_value(i, scope) for i in e.indices]
        if base.type == ERR or any(i.type == ERR for i in idx):
            return POISON
        if not base.type.shape:
            self.report(f"only arrays can be indexed, but this is {describe(base.type)}", e.base.span)
            return POISON
        elem = self.element_type(base.type, idx, e)
        if elem is None:
            return POISON
        return self.emit("index", [base, *idx], elem, e, hint)

    def element_type(self, array: Type, idx: list[ir.Atom], e: n.Node) -> Type | None:
        if len(idx) > len(array.shape):
            self.report(f"{len(idx)} indices given for {describe(array)}", e.span)
            return None
        for k, (i, size) in enumerate(zip(idx, array.shape)):
            if isinstance(i, Lit) and not 0 <= i.value < size:
                self.report(f"index {i.value} is out of range for a dimension of size {size} "
                            f"(valid: 0 to {size - 1})", e.span)
                return None
        return Type("f64", array.shape[len(idx):])

    # ---- calls -----------------------------------------------------------------------------

    def call(self, e: n.Call, scope: _Scope, hint: str) -> ir.Atom:
        if e.func in BUILTINS:
            return self.builtin(e, scope, hint)
        fn = self.fns.get(e.func)
        if fn is None:
            args = [self.value(a, scope) for a in e.args]
            if e.func in self.declared or e.func in scope.locals:
                self.report(f"'{e.func}' is not a function, so it cannot be called", e.func_span)
            else:
                close = difflib.get_close_matches(e.func, list(BUILTINS) + list(self.fns), 1)
                did = f"; did you mean '{close[0]}'?" if close else ""
                self.report(f"unknown function '{e.func}'{did}", e.func_span)
            return POISON
        args = [self.value(a, scope) for a in e.args]
        if len(args) != len(fn.params):
            self.report(f"function {fn.name} takes {_count(len(fn.params), 'argument')}, "
                        f"but {len(args)} {'was' if len(args) == 1 else 'were'} given", e.span)
            return POISON
        self.called.add(fn.name)
        return self.inline(fn, args, e.span)

    def inline(self, fn: n.FnDef, args: list[ir.Atom], call_span: Span) -> ir.Atom:
        if fn.name in self.inline_stack:
            chain = " -> ".join(self.inline_stack[self.inline_stack.index(fn.name):] + [fn.name])
            self.report(f"recursion is not allowed: {chain}", call_span)
            return POISON
        if len(set(fn.params)) != len(fn.params):
            dup = next(p for p in fn.params if fn.params.count(p) > 1)
            self.report(f"function {fn.name} has two arguments named '{dup}'", fn.span)
            return POISON
        scope = _Scope({}, {}, fn)
        for name, atom, span in zip(fn.params, args, fn.param_spans):
            scope.locals[name] = _Binding(atom, span)
        self.inline_stack.append(fn.name)
        try:
            self.block(fn.body, scope)
        finally:
            self.inline_stack.pop()
        last = fn.body[-1] if fn.body else None
        if not isinstance(last, n.Return):
            self.report(f"function {fn.name} must end with a return statement", fn.span)
            return POISON
        self.inline_stack.append(fn.name)
        try:
            return self.value(last.value, scope, hint=fn.name)
        finally:
            self.inline_stack.pop()

    def builtin(self, e: n.Call, scope: _Scope, hint: str) -> ir.Atom:
        f = e.func
        if len(e.args) not in ARITY[f]:
            want = " or ".join(map(str, ARITY[f]))
            self.report(f"{f} takes {want} argument{'s' * (ARITY[f] != (1,))}, but {len(e.args)} "
                        f"{'was' if len(e.args) == 1 else 'were'} given", e.span)
            return POISON
        if f == "zeros":
            sizes = [self.const_eval.size(a, "the size given to zeros") for a in e.args]
            if any(s is None for s in sizes):
                return POISON
            return self.emit("zeros", [], Type("f64", tuple(sizes)), e, hint, shape=tuple(sizes))
        args = [self.value(a, scope) for a in e.args]
        if any(a.type == ERR for a in args):
            return POISON
        if f == "int":
            return self.to_int(args[0], e)
        if f == "len":
            if not args[0].type.shape:
                self.report(f"len needs an array, but this is {describe(args[0].type)}", e.args[0].span)
                return POISON
            return Lit(args[0].type.shape[0], I64)
        if f in ("sum", "mean", "dot"):
            for a, node in zip(args, e.args):
                if not a.type.shape:
                    self.report(f"{f} needs an array, but this is {describe(a.type)}", node.span)
                    return POISON
        args = [self.to_float(a, e) for a in args]
        prim = builtin_op(f, len(args))
        try:
            if prim.expand is not None:  # a composite: built from other ops, differentiated through them
                return prim.expand(_Expansion(self, e), *args)
            out = result_type(prim.name, [a.type for a in args], {})
        except TypeRuleError as err:
            self.report(f"{f}: {err}", e.span)
            return POISON
        return self.emit(prim.name, args, out, e, hint)


# ---- helpers -------------------------------------------------------------------------------

class _Expansion:
    """What a composite builtin's expand(b, ...) builds with: b.op(name, *ins, **params)."""

    def __init__(self, checker: "_Checker", node: n.Node):
        self.checker, self.node = checker, node

    def op(self, name: str, *ins: ir.Atom, **params) -> ir.Atom:
        out = result_type(name, [a.type for a in ins], params)
        return self.checker.emit(name, list(ins), out, self.node, "", **params)


def scope_atoms(scope: _Scope, names: list[str]) -> list[ir.Atom]:
    return [scope.locals[k].atom for k in names]


def _hint(name: str) -> str:
    return "loss" if name == LOSS else name


def _count(k: int, word: str) -> str:
    return f"{k} {word}{'s' if k != 1 else ''}"


def _fixed_type_note(old: Type, new: Type) -> str | None:
    if old == I64 and new == F64:
        return "a local keeps the type of its first assignment; start it as a float, for example 0.0"
    if old.shape or new.shape:
        return "a local keeps the shape of its first assignment"
    return None


def _type_sentence(op: str, a: Type, b: Type, err: TypeRuleError) -> str:
    word = _OP_WORD.get(op, op)
    if op == "matmul":
        return str(err)
    if a.shape and b.shape and a.shape != b.shape:
        return (f"'{word}' needs arrays of the same shape, but got {describe(a)} and {describe(b)}")
    return f"'{word}' cannot combine {describe(a)} and {describe(b)}"


def _all_statements(items):
    stack = list(items)
    while stack:
        s = stack.pop()
        yield s
        if isinstance(s, (n.For, n.While)):
            stack.extend(s.body)
        elif isinstance(s, n.If):
            stack.extend(s.then)
            stack.extend(s.orelse)


def _assigned_names(items) -> set[str]:
    names = set()
    for s in _all_statements(items):
        if isinstance(s, n.Assign):
            names.add(s.target.name)
        elif isinstance(s, n.Loss):
            names.add(LOSS)
    return names


# The length whole columns are checked with before the data are read (`dlang check`, `emit`);
# a program that runs is checked again with the data's number of rows.
COLUMN_ROWS_UNKNOWN = 1000


def check(prog: n.Program, overrides: dict | None = None, path: str | None = None,
          source: str | None = None, column_rows: int | None = None) -> ir.Program:
    """Check a parsed program and lower it to IR; every error found raises together. Whole
    columns (`data x[]`) are arrays of column_rows values (COLUMN_ROWS_UNKNOWN when None)."""
    checker = _Checker(prog, overrides or {}, path, source, column_rows)
    program = checker.check_program()
    if checker.diags:
        diags = sorted(checker.diags, key=lambda d: (d.span is not None, d.span.line if d.span else 0,
                                                     d.span.col if d.span else 0))
        raise ProgramError(diags, source)
    return ir.renumber(program)
