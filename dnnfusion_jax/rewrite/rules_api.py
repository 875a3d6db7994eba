"""The rule API: a small term language for both sides of a rule, guards, and ``Rule``.

The same term builds an egglog pattern (for saturation) and a JAX function (for
``rules check``), so a rule is written once. Variables are ``V("a")``; Python numbers are
float scalars; ``+ - * / @`` and unary ``-`` build elementwise ops and matmuls; parameters of
layout ops and dots are literals or ``P("p")`` parameter variables.

A guard is a tuple of conditions, each compiled to egglog facts and checked on samples:
``Scalar(v)``, ``SameShape(a, b)``, ``SameRank(a, b)``, ``KeepsShape(v)`` (v has the shape
of the whole left side), ``Broadcasts(v)`` (it has not), ``ShapeIs(v, p)``, ``Rank(v, k)``,
``Nonneg(v)``, ``Moderate(v)``, ``NonzeroConst(c)``, ``InversePerm(p, q)``,
``ComposePerm(p, q, r)``, ``ComplementAxes(dims, axes)``, ``ScaleRows(s, q)``,
``ScaleCols(s, k)``, ``ConvChannel(key, s, k)``, ``DotSwap(dims, a, b, perm, swapped)``.
``C("c")`` is a scalar constant whose value
is a variable and ``fold(op, c, d)`` (right side only) computes a constant.
``finite=(v, ...)`` names operands that must not hold ±inf (DNNFusion's distributive laws
turn ``inf*0 + inf*1 = NaN`` into ``inf*1 = inf``); those rules fire only where the analysis
proves it or under ``finite_math=True``.

Example:
    >>> a, b = V("a"), V("b")
    >>> r = Rule("exp-mul", "associative", "exp(a)*exp(b) -> exp(a+b)",
    ...          exp(a) * exp(b), exp(a + b))
    >>> r.name, str(r.lhs), str(r.rhs)
    ('exp-mul', 'mul(exp(a), exp(b))', 'exp(add(a, b))')
    >>> import jax.numpy as jnp
    >>> float(evaluate(r.rhs, {"a": jnp.float32(1.0), "b": jnp.float32(0.0)}))  # doctest: +ELLIPSIS
    2.718...
"""
from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnnfusion_jax.rewrite.egraph_terms import Term, dtype, int_vec, swap_dot  # noqa: F401
# The rule language is one import away for rule authors: terms and guards are re-exported.
from dnnfusion_jax.rewrite.rules_guards import (Broadcasts, ComplementAxes, ComposePerm, ConvChannel, DotSwap,  # noqa: F401
                           Finite, Guard, InversePerm, KeepsShape, Moderate, Nonneg, NonzeroConst, Rank,
                           SameRank, SameShape, ScaleCols, ScaleRows, Scalar, ShapeIs,
                           conv_channel_shapes)
from dnnfusion_jax.rewrite.rules_terms import (BATCHED, BINARY_OPS, BUILDERS, CONV_KEYS, MATMUL,  # noqa: F401
                          UNARY_OPS, C, P, Pat, V, _pat, _postorder, binary, broadcast, conv,
                          conv_key, dot, evaluate, fold, ipow, matmul, parse_dims, recip, reduce,
                          reduce_max, reduce_prod, reduce_sum, reshape, scalar, transpose, unary)

globals().update(BUILDERS)  # exp, log, tanh, abs_, ...: one per registry row that names one

VALUE_KINDS = ("nonneg", "moderate", "positive")
"""What ``Rule(values=...)`` may ask ``rules check`` to sample for a variable."""

__all__ = [
    # rules and rule files
    "Rule", "VALUE_KINDS", "Compiler", "compile_rule", "load_rules_file",
    # guards
    "Guard", "Scalar", "SameShape", "SameRank", "KeepsShape", "Broadcasts", "ShapeIs", "Rank",
    "Nonneg", "Moderate", "Finite", "NonzeroConst", "InversePerm", "ComposePerm",
    "ComplementAxes", "ScaleRows", "ScaleCols", "ConvChannel", "DotSwap", "conv_channel_shapes",
    "swap_dot",
    # terms: variables, constants, operations (the registry's builders too), their meaning
    "V", "P", "C", "Pat", "scalar", "fold", "unary", "binary", "recip", "ipow", "dot", "matmul",
    "conv", "conv_key", "CONV_KEYS", "transpose", "reshape", "broadcast", "reduce",
    "reduce_sum", "reduce_prod", "reduce_max", "evaluate", "parse_dims", "MATMUL", "BATCHED",
    "UNARY_OPS", "BINARY_OPS", *BUILDERS,
]


# ----------------------------------------------------------------------------- rules

@dataclass(frozen=True, eq=False)
class Rule:
    """One rewrite ``lhs → rhs`` with a stable ``name``, its ``family`` and one-line ``law``.

    ``guard``: conditions (see the module docstring); ``finite``: operands that must not be
    ±inf. ``shapes`` (var → shape with symbolic dims such as ``("m", "k")``) and ``params``
    (param → candidate values, or a function of the drawn dims) tell ``rules check`` what to
    sample; by default every variable gets the same random shape. ``values`` (var → "nonneg",
    "moderate" or "positive") restricts sampled values where a guard needs it. ``ac`` marks
    associativity/commutativity rules, which run only in the first iterations (bounded AC).
    ``in_range`` says the rule regroups work so that it is exact only while every intermediate
    of both sides stays inside the float32 range (reassociating ``(a*b)*x`` can overflow
    where the original did not); ``rules check`` then excuses samples that leave the range.
    """

    name: str
    family: str
    law: str
    lhs: Pat
    rhs: Pat
    guard: tuple[Guard, ...] = ()
    finite: tuple[Pat, ...] = ()
    shapes: dict[str, tuple] | None = None
    params: dict[str, Any] | None = None
    values: dict[str, str] = field(default_factory=dict)
    ac: bool = False
    in_range: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a rule needs a non-empty name, got {self.name!r}")
        if not isinstance(self.lhs, Pat):
            raise TypeError(f"rule {self.name}: the left side must be a term built with "
                            f"rules_api (V, C and operations), got {self.lhs!r}")
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        fix("rhs", _pat(self.rhs))  # a Python number is a scalar
        fix("guard", _tuple_of(self.guard, Guard, self.name, "guard"))
        fix("finite", _tuple_of(self.finite, Pat, self.name, "finite"))
        bound = set(self.lhs.vars())
        missing = set(self.rhs.vars()) - bound
        if missing:
            raise ValueError(f"rule {self.name}: right side uses unbound {sorted(missing)}")
        if self.lhs.kind in ("var", "scalar"):
            raise ValueError(f"rule {self.name}: the left side must be an operation")
        # a condition on a variable the left side does not bind matches any term: always true
        # (parameters may be bound by a guard: ConvChannel computes its kernel shape)
        for condition in (*self.guard, *self.finite):
            unbound = sorted(_variables(condition) - bound)
            if unbound:
                what = (f"finite={condition}" if isinstance(condition, Pat) else
                        f"{type(condition).__name__}({', '.join(map(str, vars(condition).values()))})")
                raise ValueError(f"rule {self.name}: {what} names {unbound}, which the left "
                                 "side does not bind")
        for var, kind in self.values.items():
            if var not in bound or kind not in VALUE_KINDS:
                raise ValueError(f"rule {self.name}: values[{var!r}] = {kind!r}: expected a "
                                 f"left-side variable and one of {', '.join(VALUE_KINDS)}")

    @property
    def all_guards(self) -> tuple[Guard, ...]:
        return self.guard + tuple(Finite(v) for v in self.finite)

    def reverse(self, name: str, law: str | None = None) -> Rule:
        """The same law read right to left, under the same guard."""
        return Rule(name, self.family, law or _reverse_law(self.law), self.rhs, self.lhs,
                    self.guard, self.finite, self.shapes, self.params, self.values, self.ac,
                    self.in_range)

    def __repr__(self) -> str:
        return f"Rule({self.name}: {self.law})"


def _tuple_of(items: Any, kind: type, rule: str, option: str) -> tuple:
    """``items`` as a tuple of ``kind`` (one item alone is accepted as a tuple of one)."""
    items = () if items is None else (items,) if isinstance(items, kind) else items
    if not isinstance(items, (tuple, list)):
        raise TypeError(f"rule {rule}: {option} takes a tuple of {kind.__name__} objects, "
                        f"got {items!r}")
    items = tuple(items)
    for item in items:
        if not isinstance(item, kind):
            raise TypeError(f"rule {rule}: {option} takes {kind.__name__} objects, got {item!r}")
    return items


def _variables(condition: Guard | Pat) -> set[str]:
    """The variable names a guard or a ``finite`` operand refers to."""
    values = [condition] if isinstance(condition, Pat) else list(vars(condition).values())
    return {name for value in values if isinstance(value, Pat) for name in value.vars()}


def _reverse_law(law: str) -> str:
    left, _, right = law.partition("->")
    return f"{right.strip()} -> {left.strip()}"


class Compiler:
    """Turns one Rule into an egglog rule (one per call of ``compile``)."""

    def __init__(self) -> None:
        from egglog import String, Vec, i64, var
        self._var, self._String, self._Vec, self._i64 = var, String, Vec, i64
        self.vars: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.consts: dict[str, tuple] = {}
        self._fresh = itertools.count()
        self.root = var("__root", Term)

    def term(self, v: Pat) -> Any:
        return self.vars.setdefault(v.op, self._var(v.op, Term))

    def param(self, p: P) -> Any:
        sort = self._Vec[self._i64] if p.kind == "vec" else self._String
        return self.params.setdefault(p.name, self._var("p_" + p.name, sort))

    def const(self, name: str) -> Any:
        """The scalar term of constant ``name`` (value, dtype and weak type are variables)."""
        from egglog import Bool, String, f64
        if name not in self.consts:
            self.consts[name] = (self._var("c_" + name, f64), self.fresh(String), self.fresh(Bool))
        return Term.scalar(*self.consts[name])

    def fresh_vec(self) -> Any:
        return self._var(f"__s{next(self._fresh)}", self._Vec[self._i64])

    def fresh(self, sort: Any) -> Any:
        return self._var(f"__f{next(self._fresh)}", sort)

    def _param_value(self, value: Any) -> Any:
        if isinstance(value, P):
            return self.param(value)
        if isinstance(value, str):
            return value
        return int_vec(tuple(value))

    def build(self, pat: Pat, side: str) -> Any:
        from egglog import Bool, String, f64, i64
        # iterative post-order so that deep terms cannot overflow the stack
        built: dict[int, Any] = {}
        for node in _postorder(pat):
            args = [built[id(a)] for a in node.args]
            k = node.kind
            if k == "var":
                out = self.term(node)
            elif k == "scalar":
                if side == "lhs":
                    out = Term.scalar(f64(node.op), self.fresh(String), self.fresh(Bool))
                else:
                    out = Term.scalar(f64(node.op), self.root_dtype, Bool(False))
            elif k == "const":
                out = self.const(node.op)
            elif k == "fold":
                out = Term.scalar(self._folded(node), self.root_dtype, Bool(False))
            elif k == "un":
                out = Term.un(self._param_value(node.op), *args)
            elif k == "bin":
                out = Term.bin(self._param_value(node.op), *args)
            elif k == "ipow":
                out = Term.ipow(i64(node.op), *args)
            elif k == "dot":
                out = Term.dot(self._param_value(node.op), *args)
            elif k == "conv":
                out = Term.conv(self._param_value(node.op), *args)
            elif k == "transpose":
                out = Term.transpose(self._param_value(node.op), *args)
            elif k == "reshape":
                out = Term.reshape(self._param_value(node.op), *args)
            elif k == "bcast":
                out = Term.bcast(self._param_value(node.op[0]), self._param_value(node.op[1]), *args)
            elif k == "reduce":
                out = Term.reduce(node.op[0], self._param_value(node.op[1]), *args)
            else:
                raise ValueError(f"unknown term kind {k!r}")
            built[id(node)] = out
        return built[id(pat)]

    def _folded(self, node: Pat) -> Any:
        """The egglog f64 expression of a ``fold`` node's constant."""
        (va, _, _), (vb, _, _) = self.consts[node.args[0].op], self.consts[node.args[1].op]
        return {"add": va + vb, "sub": va - vb, "mul": va * vb, "div": va / vb}[node.op]

    def compile(self, r: Rule) -> Any:
        from egglog import String, eq, f64, ne, rule, union
        self.root_dtype = self.fresh(String)
        facts = [eq(self.root).to(self.build(r.lhs, "lhs"))]
        for g in r.all_guards:
            facts += g.facts(self)
        # a folded zero would stand for +0.0 and -0.0 at once (egglog's f64 has -0.0 == 0.0),
        # and the two differ: 1/(c*d*x) is +inf or -inf
        facts += [ne(self._folded(n)).to(f64(0.0)) for n in r.rhs.walk() if n.kind == "fold"]
        if any(n.kind in ("scalar", "fold") for n in r.rhs.walk()):
            facts.append(dtype(self.root) == self.root_dtype)
        return rule(*facts, name=r.name).then(union(self.root).with_(self.build(r.rhs, "rhs")))


def compile_rule(r: Rule) -> Any:
    """The egglog rule of ``r`` (named ``r.name`` so that run reports count it)."""
    return Compiler().compile(r)


# ----------------------------------------------------------------------------- rule files

def load_rules_file(path: str | Path) -> list[Rule]:
    """The rules a Python file defines: its ``RULES`` list, else every module-level Rule."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no rule file {path}")
    spec = importlib.util.spec_from_file_location(f"_dnnfusion_rules_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: not a Python file (rule files are .py)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the author's mistake, whatever it is: say where, not how deep
        where = f" (line {error.lineno})" if isinstance(error, SyntaxError) else ""
        raise ValueError(f"{path}{where}: {type(error).__name__}: {error}") from error
    rules = getattr(module, "RULES", None)
    if rules is None:
        rules = [v for v in vars(module).values() if isinstance(v, Rule)]
        if not rules:
            raise ValueError(f"{path}: defines no rules (neither a RULES list nor Rule objects)")
    rules = [rules] if isinstance(rules, Rule) else rules
    if not isinstance(rules, (list, tuple)) or not all(isinstance(r, Rule) for r in rules):
        raise ValueError(f"{path}: RULES must be a list of dnnfusion_jax.rewrite.rules_api.Rule objects")
    return list(rules)
