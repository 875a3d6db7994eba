"""The registry of primitives: every fact about a lax primitive, one row each.

A row (``Primitive``) says how the primitive maps output to input elements (its DNNFusion
mapping type and the shape refinement that can change it), how many FLOPs it counts and what
one element costs inside a kernel, which kernel IR operation computes it, which e-graph term
it becomes, which rule-language builder names it, and what the e-graph's analyses may assume
of its values. Every stage reads its tables from here: mapping types and FLOPs
(``mapping_types``, ``cost``), transcendental weights (extraction, profitability, row
caching), the terms and facts of the e-graph, the rule language's builders, the lowering's
elementwise table. Renderers keep their own spelling of each kernel IR operation.

Adding an elementwise primitive is one row here, its spelling in each renderer
(``codegen/c/spelling.py``, ``codegen/pallas/spelling.py``) and its math where it is a
transcendental neither library has (``codegen/c/prelude.h``, ``codegen/pallas/math.py``).
A primitive without a row is opaque: never fused, reported as such.

Example:
    >>> row = lookup("tanh")
    >>> row.mapping.label, row.kernel, row.term, row.transcendental
    ('One-to-One', 'tanh', 'un', True)
    >>> lookup("while").mapping.label, lookup("while").kernel
    ('Opaque', None)
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class MappingType(enum.IntEnum):
    """Mapping types ordered by complexity, as in the paper (a fused pair takes the larger).

    >>> MappingType.ONE_TO_ONE < MappingType.MANY_TO_MANY, MappingType.SHUFFLE.label
    (True, 'Shuffle')
    """

    ONE_TO_ONE = 0    # out[i] reads in[i] of each operand through a 1-1 index map
    REORGANIZE = 1    # pure copy keeping element order (reshape, squeeze, size-1 broadcast)
    SHUFFLE = 2       # permutation of dimensions or of element order (transpose, rev)
    ONE_TO_MANY = 3   # an input element feeds many outputs (broadcast, gather, size-1 broadcast)
    MANY_TO_MANY = 4  # an output reads many inputs (dot, conv, reductions, pooling, cumsum)
    OPAQUE = 5        # not analysed: run as it is by XLA, never fused (control flow, RNG, sort)

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    MappingType.ONE_TO_ONE: "One-to-One",
    MappingType.REORGANIZE: "Reorganize",
    MappingType.SHUFFLE: "Shuffle",
    MappingType.ONE_TO_MANY: "One-to-Many",
    MappingType.MANY_TO_MANY: "Many-to-Many",
    MappingType.OPAQUE: "Opaque",
}


# Shape refinements of a row's mapping type (``mapping_types.node_mapping_type``)
BROADCASTING = "broadcasting"  # elementwise: an operand smaller than the output → One-to-Many
UNIT_DIMS = "unit_dims"        # broadcast_in_dim keeping the element count → Reorganize

# How a row counts FLOPs (``cost.node_flops``)
NO_FLOPS = "none"       # data movement, or not estimated
PER_OUTPUT = "output"   # one per output element (elementwise)
PER_INPUT = "input"     # one per element of the first operand (reductions, scans)
DOT = "dot"             # 2·M·N·K
CONV = "conv"           # 2·out·(Cin/groups)·kernel
WINDOW = "window"       # one per window element per output (pooling)

# Analysis facts of an e-graph term (``egraph_terms``): what its values are, for any input
FACTS = frozenset({
    "nonneg",                # never negative: ±0 in, +0 out (exp, abs, logistic)
    "nonneg_if_nonneg",      # nonneg when every operand is
    "nonneg_if_either",      # nonneg when any operand is (max)
    "nonneg_if_same",        # nonneg when both operands are one value (x*x)
    "finite",                # never ±inf, whatever the input (NaN allowed)
    "finite_if_finite",      # never ±inf when its operand is not
    "moderate_if_moderate",  # in [1e-18, 1e18] when its operand is
})

TRANSCENDENTAL_COST = 5
"""A row whose ``cost`` reaches this is a transcendental (a library call, or sqrt and rsqrt's
long-latency instructions) for the extractor's and the profitability model's weights; a
division (4) is not."""


@dataclass(frozen=True)
class Primitive:
    """Everything the pipeline knows about one lax primitive.

    ``cost`` is one element inlined into a kernel, in simple vector operations: 0 for index
    transforms, 1 for arithmetic, range reduction plus a polynomial for transcendentals (the
    one set of weights extraction, profitability and row caching read). ``kernel`` is the
    kernel IR operation computing it elementwise (None: no operation of its own; the lowering
    may still expand it, as integer_pow into multiplies). ``term`` is its e-graph term kind
    (``un``, ``bin``, ``ipow``, ``reduce``, ``dot``, ``conv``, ``transpose``, ``reshape``,
    ``bcast``; None: an opaque app). ``rule`` names its rule-language builder.

    >>> lookup("abs").rule, lookup("add").operands, lookup("exp").facts
    ('abs_', 2, ('nonneg',))
    """

    name: str
    mapping: MappingType
    refine: str | None = None
    flops: str = NO_FLOPS
    cost: int = 1
    operands: int = 1
    kernel: str | None = None
    term: str | None = None
    rule: str | None = None
    facts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert set(self.facts) <= FACTS, (self.name, self.facts)

    @property
    def transcendental(self) -> bool:
        """Whether cost models weight it as a transcendental.

        >>> lookup("exp").transcendental, lookup("div").transcendental
        (True, False)
        """
        return self.cost >= TRANSCENDENTAL_COST


_ONE, _REORG, _SHUFFLE = MappingType.ONE_TO_ONE, MappingType.REORGANIZE, MappingType.SHUFFLE
_MANY, _M2M = MappingType.ONE_TO_MANY, MappingType.MANY_TO_MANY


def _ew(name: str, operands: int = 1, cost: int = 1, kernel: bool = True, term: str | None = None,
        rule: str | None = None, facts: tuple[str, ...] = (), flops: str = PER_OUTPUT) -> Primitive:
    """An elementwise row (One-to-One, refined by broadcasting); ``kernel``: same-named op."""
    return Primitive(name, _ONE, BROADCASTING, flops, cost, operands,
                     name if kernel else None, term, rule, facts)


def _row(name: str, mapping: MappingType, flops: str = NO_FLOPS, cost: int = 1,
         term: str | None = None, refine: str | None = None,
         facts: tuple[str, ...] = ()) -> Primitive:
    """A structural row: layout, data movement, contractions, reductions."""
    return Primitive(name, mapping, refine, flops, cost, term=term, facts=facts)


_ROWS = (
    # elementwise float math: e-graph terms, rule builders
    _ew("neg", term="un", rule="neg", facts=("finite_if_finite",)),
    _ew("abs", term="un", rule="abs_", facts=("nonneg", "finite_if_finite")),
    _ew("exp", cost=16, term="un", rule="exp", facts=("nonneg",)),
    _ew("exp2", cost=16, term="un", rule="exp2", facts=("nonneg",)),
    _ew("expm1", cost=20, term="un", rule="expm1"),
    _ew("log", cost=16, term="un", rule="log"),
    _ew("log1p", cost=16, term="un", rule="log1p"),
    _ew("sqrt", cost=5, term="un", rule="sqrt",
        facts=("nonneg_if_nonneg", "moderate_if_moderate")),  # sqrt(-0.0) is -0.0
    _ew("rsqrt", cost=5, term="un", rule="rsqrt", facts=("nonneg_if_nonneg",)),  # rsqrt(-0) -inf
    _ew("cbrt", cost=20, term="un", rule="cbrt"),
    _ew("tanh", cost=24, term="un", rule="tanh", facts=("finite",)),
    _ew("logistic", cost=20, term="un", rule="logistic", facts=("nonneg", "finite")),
    _ew("sin", cost=20, term="un", rule="sin", facts=("finite",)),
    _ew("cos", cost=20, term="un", rule="cos", facts=("finite",)),
    _ew("tan", cost=30, term="un", rule="tan"),
    _ew("erf", cost=30, term="un", rule="erf", facts=("finite",)),
    _ew("erfc", cost=30, term="un", rule="erfc", facts=("finite",)),
    _ew("square", kernel=False, term="un", rule="square", facts=("nonneg",)),  # x*x
    _ew("sign", term="un", rule="sign"),
    _ew("floor", term="un"),
    _ew("ceil", term="un"),
    _ew("add", 2, term="bin", facts=("nonneg_if_nonneg",)),
    _ew("sub", 2, term="bin"),
    _ew("mul", 2, term="bin", facts=("nonneg_if_nonneg", "nonneg_if_same")),
    _ew("div", 2, cost=4, term="bin", facts=("nonneg_if_nonneg",)),
    _ew("max", 2, term="bin", facts=("nonneg_if_nonneg", "nonneg_if_either")),
    _ew("min", 2, term="bin", facts=("nonneg_if_nonneg",)),
    _ew("pow", 2, cost=40, term="bin"),
    _ew("atan2", 2, cost=30, term="bin"),
    _ew("integer_pow", kernel=False, term="ipow"),  # square-and-multiply in the lowering
    # elementwise math the kernels compute, opaque to the e-graph
    _ew("sinh", cost=20), _ew("cosh", cost=20), _ew("asinh", cost=30), _ew("acosh", cost=30),
    _ew("atanh", cost=30), _ew("asin", cost=30), _ew("acos", cost=30), _ew("atan", cost=30),
    _ew("erf_inv", cost=30), _ew("is_finite"), _ew("nextafter", 2),
    _ew("rem", 2, cost=8), _ew("not"), _ew("and", 2), _ew("or", 2), _ew("xor", 2),
    _ew("eq", 2), _ew("ne", 2), _ew("lt", 2), _ew("le", 2), _ew("gt", 2), _ew("ge", 2),
    # elementwise, expanded by the lowering (a method each), or left to XLA
    *(_ew(name, kernel=False) for name in "round select_n clamp".split()),
    _ew("convert_element_type", kernel=False, cost=0, flops=NO_FLOPS),
    _ew("copy", kernel=False, cost=0, flops=NO_FLOPS),
    _ew("stop_gradient", kernel=False, cost=0, flops=NO_FLOPS),
    *(_ew(name, kernel=False) for name in """bessel_i0e bessel_i1e clz complex conj digamma
      igamma igamma_grad_a igammac imag lgamma polygamma population_count real
      reduce_precision regularized_incomplete_beta shift_left shift_right_arithmetic
      shift_right_logical zeta""".split()),
    # One-to-One structure: each output element copies at most one input element
    _row("slice", _ONE, cost=0),
    *(_row(name, _ONE) for name in "concatenate stack split unstack pad iota".split()),
    _row("reshape", _REORG, cost=0, term="reshape"),
    _row("squeeze", _REORG, cost=0),
    _row("transpose", _SHUFFLE, cost=0, term="transpose"),
    _row("rev", _SHUFFLE, cost=0),
    _row("broadcast_in_dim", _MANY, cost=0, term="bcast", refine=UNIT_DIMS),
    *(_row(name, _MANY) for name in "gather dynamic_slice tile".split()),
    _row("dot_general", _M2M, DOT, term="dot"),
    _row("conv_general_dilated", _M2M, CONV, term="conv"),
    _row("reduce_sum", _M2M, PER_INPUT, term="reduce", facts=("nonneg_if_nonneg",)),
    # not reduce_max's nonneg: over an empty axis it is -inf
    *(_row(name, _M2M, PER_INPUT, term="reduce") for name in "reduce_max reduce_min "
      "reduce_prod".split()),
    *(_row(name, _M2M, PER_INPUT) for name in """reduce_and reduce_or reduce_xor argmax
      argmin cumsum cumprod cummax cummin cumlogsumexp""".split()),
    *(_row(name, _M2M, WINDOW) for name in """reduce_window_sum reduce_window_max
      reduce_window_min reduce_window""".split()),
    *(_row(name, _M2M) for name in """select_and_scatter_add select_and_gather_add
      dynamic_update_slice scatter scatter-add scatter-sub scatter-mul scatter-min scatter-max
      fft""".split()),
)

INDEXED_OPERAND = {"gather": 0, "dynamic_slice": 0, "dynamic_update_slice": 1}
"""Primitive → the operand it reads at positions that are runtime values (a label, a token,
an offset): a kernel reads it from memory, so its producer never joins the reader's block."""

PRIMITIVES: dict[str, Primitive] = {row.name: row for row in _ROWS}
"""Primitive name → its row; a primitive without one is opaque.

>>> PRIMITIVES["dot_general"].mapping.label, PRIMITIVES["reduce_sum"].flops
('Many-to-Many', 'input')
"""
assert len(PRIMITIVES) == len(_ROWS), "a primitive has two rows"


def lookup(name: str) -> Primitive:
    """The row of ``name``; an opaque row (cost 1, nothing known) for an unknown primitive.

    >>> lookup("custom_jvp_call").mapping.label, lookup("custom_jvp_call").cost
    ('Opaque', 1)
    """
    return PRIMITIVES.get(name) or Primitive(name, MappingType.OPAQUE)


def names(**where) -> tuple[str, ...]:
    """The primitives whose fields equal ``where``, in table order.

    >>> names(term="bin")
    ('add', 'sub', 'mul', 'div', 'max', 'min', 'pow', 'atan2')
    """
    return tuple(row.name for row in _ROWS
                 if all(getattr(row, field) == value for field, value in where.items()))
