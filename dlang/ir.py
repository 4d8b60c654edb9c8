"""The IR: SSA equations `outs = op[params] ins` with structured regions for for, while and if.

Values are immutable (arrays included: `setindex` makes a new array value, which codegen may
update in place when the old one is dead). A region (`Block`) may read any value defined
before it in an enclosing block; values it changes across iterations or branches flow in
through its params and out through its results, as in MLIR's `scf` dialect.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Union


@dataclass(frozen=True)
class Type:
    """f64, i64 or bool; f64 values may be arrays of a fixed shape."""

    kind: str  # "f64", "i64", "bool"
    shape: tuple[int, ...] = ()

    @property
    def is_array(self) -> bool:
        return bool(self.shape)

    @property
    def scalar(self) -> "Type":
        return Type(self.kind)

    def __str__(self) -> str:
        if self.shape:
            return f"{self.kind}[{','.join(map(str, self.shape))}]"
        return self.kind


DEFAULT_MAX_ITERATIONS = 100_000_000  # a while loop's trips in one row, unless --max-iterations says

F64 = Type("f64")
I64 = Type("i64")
BOOL = Type("bool")


def array(*shape: int) -> Type:
    return Type("f64", tuple(shape))


@dataclass(frozen=True)
class Var:
    """An SSA value. `hint` is the source name it came from, used only for printing."""

    id: int
    type: Type
    hint: str = ""


@dataclass(frozen=True)
class Lit:
    value: float | int | bool
    type: Type

    def __post_init__(self):
        # 1 and 1.0 compare equal in Python; keep literals of different types distinct.
        object.__setattr__(self, "value", _normalise(self.value, self.type))


def _normalise(value, type_: Type):
    if type_ == BOOL:
        return bool(value)
    if type_ == I64:
        return int(value)
    return float(value)


Atom = Union[Var, Lit]
Loc = tuple[int, int]  # source line and column, for messages about a running program


@dataclass(frozen=True)
class Eqn:
    outs: tuple[Var, ...]
    op: str
    params: tuple[tuple[str, object], ...]
    ins: tuple[Atom, ...]
    loc: Loc | None = None

    def param(self, name: str):
        return dict(self.params)[name]


@dataclass(frozen=True)
class Block:
    """A region: params bound on entry, equations in order, results handed back."""

    params: tuple[Var, ...]
    eqns: tuple["Stmt", ...]
    results: tuple[Atom, ...]


@dataclass(frozen=True)
class ForLoop:
    """outs = for lo..hi with carried values: body.params = (index, *carried)."""

    outs: tuple[Var, ...]
    lo: Atom
    hi: Atom
    inits: tuple[Atom, ...]
    body: Block
    loc: Loc | None = None


@dataclass(frozen=True)
class WhileLoop:
    """outs = while cond(carried) { body(carried) }; cond.results = (bool,)."""

    outs: tuple[Var, ...]
    inits: tuple[Atom, ...]
    cond: Block
    body: Block
    loc: Loc | None = None


@dataclass(frozen=True)
class IfElse:
    """outs = then.results if cond else orelse.results; both blocks take no params."""

    outs: tuple[Var, ...]
    cond: Atom
    then: Block
    orelse: Block
    loc: Loc | None = None


Stmt = Union[Eqn, ForLoop, WhileLoop, IfElse]


@dataclass(frozen=True)
class DataInput:
    name: str
    type: Type
    whole: bool = False  # `data x[]`: the whole column (every row's value); the body runs once


@dataclass(frozen=True)
class ParamInput:
    """A learnable input; init is ("value", x), ("normal", mean, sd) or ("uniform", lo, hi)."""

    name: str
    type: Type
    init: tuple
    bounds: tuple[float, float] | None = None  # the open interval (lo, hi) its values stay in


@dataclass(frozen=True)
class GradSum:
    """How a kernel adds up one gradient over the rows (set by passes.split_gradient_sums):
    each row adds its `rows` row terms (body results, in order); the terms the same for every
    row (`fixed`: prelude values or literals) are added once, times the number of rows."""

    rows: int
    fixed: tuple[Atom, ...] = ()


@dataclass(frozen=True)
class Program:
    """One row's computation. body.params = data vars then param vars; body.results =
    (loss, *outputs, *gradients of the params named in grads); with `sums`, each gradient is
    given by its GradSum's row terms instead of one result.

    `prelude` holds equations that read only params, literals and each other (moved there by
    passes.hoist_invariants): a kernel runs them once per call, before the rows, and the body
    reads their values. An adjoint program's body holds one `sweep` statement at its top
    level: the forward pass is before it, the reverse sweep after it."""

    consts: tuple[tuple[str, float | int], ...]
    data: tuple[DataInput, ...]
    params: tuple[ParamInput, ...]
    outputs: tuple[str, ...]
    body: Block
    has_loss: bool = True
    source_path: str | None = field(default=None, compare=False)
    grads: tuple[str, ...] = ()  # set on an adjoint program: d(loss)/d(param) for these params
    prelude: tuple[Eqn, ...] = ()
    sums: tuple[GradSum, ...] = ()

    @property
    def whole_columns(self) -> bool:
        """Whether the program reads whole columns (`data x[]`) and so runs once on all rows."""
        return any(d.whole for d in self.data)

    @property
    def data_vars(self) -> tuple[Var, ...]:
        return self.body.params[:len(self.data)]

    @property
    def param_vars(self) -> tuple[Var, ...]:
        return self.body.params[len(self.data):]

    def grad_types(self) -> list[Type]:
        """The type of each gradient slot: that of the param it is named by."""
        types = {p.name: p.type for p in self.params}
        return [types[name] for name in self.grads]

    def grad_terms(self) -> list[tuple[tuple[Atom, ...], tuple[Atom, ...]]]:
        """Per gradient: (its row terms among the body results, its fixed terms)."""
        rest = list(self.body.results[1 + len(self.outputs):])
        if not self.sums:
            return [((r,), ()) for r in rest]
        out = []
        for s in self.sums:
            out.append((tuple(rest[:s.rows]), s.fixed))
            del rest[:s.rows]
        return out


def blocks_of(stmt: Stmt) -> tuple[Block, ...]:
    """The regions nested directly in a statement."""
    if isinstance(stmt, ForLoop):
        return (stmt.body,)
    if isinstance(stmt, WhileLoop):
        return (stmt.cond, stmt.body)
    if isinstance(stmt, IfElse):
        return (stmt.then, stmt.orelse)
    return ()


def walk(block: Block) -> Iterator[Stmt]:
    """Every statement in a block and its nested regions, outer before inner, in order."""
    stack = [iter(block.eqns)]
    while stack:
        try:
            stmt = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        yield stmt
        for inner in reversed(blocks_of(stmt)):
            stack.append(iter(inner.eqns))


def size(t: Type) -> int:
    """The number of elements of a value of type t (1 for a scalar)."""
    n = 1
    for k in t.shape:
        n *= k
    return n


def reads(stmt: Stmt) -> tuple[Atom, ...]:
    """The atoms a statement itself reads (not those its nested blocks read)."""
    if isinstance(stmt, Eqn):
        return stmt.ins
    if isinstance(stmt, ForLoop):
        return (stmt.lo, stmt.hi, *stmt.inits)
    if isinstance(stmt, WhileLoop):
        return stmt.inits
    return (stmt.cond,)


def vars_read(block: Block) -> list[Var]:
    """Vars read anywhere in a block and its nested blocks (results included), first use first."""
    seen: dict[int, Var] = {}

    def note(atoms) -> None:
        for a in atoms:
            if isinstance(a, Var):
                seen.setdefault(a.id, a)

    stack = [block]
    while stack:
        b = stack.pop()
        for s in b.eqns:
            note(reads(s))
            stack.extend(blocks_of(s))
        note(b.results)
    return list(seen.values())


def defined_in(block: Block) -> set[int]:
    """Ids a block defines itself: its params and its statements' outputs (not nested ones)."""
    ids = {v.id for v in block.params}
    for s in block.eqns:
        ids |= {v.id for v in s.outs}
    return ids


def defined_anywhere(block: Block) -> set[int]:
    """Ids a block and the blocks nested in it define."""
    ids = defined_in(block)
    for s in walk(block):
        for inner in blocks_of(s):
            ids |= defined_in(inner)
    return ids


def with_blocks(stmt: Stmt, fn) -> Stmt:
    """The statement with fn applied to each of its nested blocks."""
    if isinstance(stmt, ForLoop):
        return replace(stmt, body=fn(stmt.body))
    if isinstance(stmt, WhileLoop):
        return replace(stmt, cond=fn(stmt.cond), body=fn(stmt.body))
    if isinstance(stmt, IfElse):
        return replace(stmt, then=fn(stmt.then), orelse=fn(stmt.orelse))
    return stmt


def tape_ops(block: Block) -> Iterator[Eqn]:
    """The push and pop equations of a block and its nested blocks, in order."""
    for s in walk(block):
        if isinstance(s, Eqn) and s.op in ("push", "pop"):
            yield s


def initial_params(prog: Program, seed: int = 0) -> dict:
    """Each param's starting value (float or NumPy array). Random starts draw from a generator
    seeded by (seed, name), so adding a param does not change the others' values."""
    import zlib

    import numpy as np

    values: dict = {}
    for p in prog.params:
        kind, a, *rest = p.init
        if kind == "value":
            values[p.name] = np.full(p.type.shape, a) if p.type.shape else float(a)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(p.name.encode())])
        b = rest[0]
        draw = rng.normal(a, b, p.type.shape) if kind == "normal" else rng.uniform(a, b, p.type.shape)
        if p.bounds is not None:  # a draw outside the bounds: just inside them
            lo, hi = p.bounds
            gap = 1e-6 * max(1.0, min(abs(lo) if np.isfinite(lo) else 1.0, abs(hi) if np.isfinite(hi) else 1.0))
            draw = np.clip(draw, lo + gap if np.isfinite(lo) else -np.inf, hi - gap if np.isfinite(hi) else np.inf)
        values[p.name] = draw if p.type.shape else float(draw)
    return values


def renumber(program: Program) -> Program:
    """The same program with var ids 1, 2, 3 ... in the order the printer shows definitions.

    Lowering hands out ids as it goes; this makes them canonical, so that a program printed
    and parsed back compares equal to the original.
    """
    mapping: dict[int, Var] = {}

    def define(v: Var) -> Var:
        new = Var(len(mapping) + 1, v.type, v.hint)
        mapping[v.id] = new
        return new

    def atom(a: Atom) -> Atom:
        return mapping[a.id] if isinstance(a, Var) else a

    def block(b: Block) -> Block:
        params = tuple(define(p) for p in b.params)
        return Block(params, tuple(stmt(s) for s in b.eqns), tuple(atom(r) for r in b.results))

    def stmt(s: Stmt) -> Stmt:
        if isinstance(s, Eqn):
            ins = tuple(atom(a) for a in s.ins)
            return Eqn(tuple(define(v) for v in s.outs), s.op, s.params, ins, s.loc)
        outs = tuple(define(v) for v in s.outs)
        if isinstance(s, ForLoop):
            lo, hi, inits = atom(s.lo), atom(s.hi), tuple(atom(a) for a in s.inits)
            return ForLoop(outs, lo, hi, inits, block(s.body), s.loc)
        if isinstance(s, WhileLoop):
            inits = tuple(atom(a) for a in s.inits)
            return WhileLoop(outs, inits, block(s.cond), block(s.body), s.loc)
        cond = atom(s.cond)
        return IfElse(outs, cond, block(s.then), block(s.orelse), s.loc)

    params = tuple(define(p) for p in program.body.params)
    prelude = tuple(stmt(e) for e in program.prelude)
    body = program.body
    body = Block(params, tuple(stmt(s) for s in body.eqns), tuple(atom(r) for r in body.results))
    sums = tuple(replace(g, fixed=tuple(atom(a) for a in g.fixed)) for g in program.sums)
    return replace(program, body=body, prelude=prelude, sums=sums)
