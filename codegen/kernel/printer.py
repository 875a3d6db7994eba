"""What every renderer of the kernel IR does the same way, whatever its language: print an
integer ``Index`` and walk a stage's expression DAG. The C and Pallas renderers specialise
these two classes with their spelling only (tinygrad's renderer base with ``code_for_op``
overridden per language).

* ``IndexPrinter`` prints ``const + Σ coef·atom`` term by term, inner indices first; a language
  says how it spells a division, a remainder, a product by a coefficient and a sum.
* ``ExprWalker`` visits every distinct sub-expression of some roots once, operands before
  their users (common sub-expressions are computed once), asks the language for each node's
  code and binds it to a name; constants stay inline.

Example:
    >>> from codegen.kernel.index import Index, LoopVar
    >>> from codegen.kernel.kernel_ir import Expr, const
    >>> i = LoopVar("i", 12)
    >>> IndexPrinter()((Index.var(i) // 4) * 3 + Index.var(i) % 4 + 1)
    '(i)/4 * 3 + (i)%4 + 1'
    >>> x = Expr("load", (), "f32", ("x", Index.var(i)))
    >>> y = Expr("mul", (x, x), "f32")
    >>> class Listing(ExprWalker):
    ...     def operation(self, expr, operands):
    ...         return f"{expr.op}({', '.join(operands)})"
    ...     def bind(self, expr, code, operands, position):
    ...         print(f"t{position} = {code}")
    ...         return f"t{position}"
    >>> Listing().walk([Expr("add", (y, const(1.0, "f32")), "f32")])
    t0 = x[i]
    t1 = mul(t0, t0)
    t3 = add(t1, 1.0)
    ['t3']
"""
from __future__ import annotations

from collections.abc import Mapping

from codegen.kernel.index import Div, Index, LoopVar
from codegen.kernel.kernel_ir import Expr, expr_nodes


class IndexPrinter:
    """Prints an ``Index``; subclasses override the spelling hooks. ``names`` renames loop
    variables (a C lane loop reads ``j_v`` for ``j``); others print as their own name.

    >>> j = LoopVar("j", 8)
    >>> IndexPrinter()(Index.var(j) * 2 + 3, {j: "j_v"})
    'j_v * 2 + 3'
    """

    def __call__(self, index: Index, names: Mapping[LoopVar, str] = {}) -> str:
        parts = []
        for atom, coef in index.terms:
            if isinstance(atom, LoopVar):
                text = names.get(atom, atom.name)
            elif isinstance(atom, Div):
                text = self.div(self(atom.index, names), atom.divisor)
            else:
                text = self.mod(self(atom.index, names), atom.divisor, atom.modulus)
            parts.append(text if coef == 1 else self.times(text, coef))
        if index.const or not parts:
            parts.append(str(index.const))
        return self.sum(parts)

    def div(self, inner: str, divisor: int) -> str:
        """``inner // divisor`` (``inner`` is printed, never negative where it is read)."""
        return f"({inner})/{divisor}"

    def mod(self, inner: str, divisor: int, modulus: int) -> str:
        """``(inner // divisor) % modulus``; ``divisor`` may be 1."""
        divided = inner if divisor == 1 else f"({inner})/{divisor}"
        return f"({divided})%{modulus}"

    def times(self, text: str, coef: int) -> str:
        """An atom times its coefficient (not 1)."""
        return f"{text} * {coef}"

    def sum(self, parts: list[str]) -> str:
        """The terms, then the constant where it is not 0 (at least one part)."""
        return " + ".join(parts)


class ExprWalker:
    """Names the values of an expression DAG, each distinct sub-expression once, in dependency
    order. Subclasses spell the node kinds (the hooks return code) and ``bind`` a node's code
    to a name; ``walk`` returns the roots' names.

    >>> from codegen.kernel.kernel_ir import const
    >>> ExprWalker().walk([const(2.0, "f32")])  # a constant is its own spelling, unbound
    ['2.0']
    """

    def walk(self, roots: list[Expr]) -> list[str]:
        names: dict[Expr, str] = {}
        # position: the node's place in the walk, constants counted (C names values by it)
        for position, expr in enumerate(expr_nodes(roots)):
            if expr.op == "const":
                names[expr] = self.constant(expr)
                continue
            operands = [names[arg] for arg in expr.args]
            if expr.op == "load":
                code = self.load(expr)
            elif expr.op == "index":
                code = self.index(expr)
            elif expr.op == "convert":
                code = self.convert(expr, operands[0])
            elif expr.op == "gather":
                code = self.gather(expr, operands[0])
            else:
                code = self.operation(expr, operands)
            names[expr] = self.bind(expr, code, operands, position)
        return [names[root] for root in roots]

    def constant(self, expr: Expr) -> str:
        """A ``const`` node's literal (used inline, never bound)."""
        return repr(expr.attrs[0])

    def load(self, expr: Expr) -> str:
        """A ``load`` node: its buffer at its index."""
        name, index = expr.attrs
        return f"{name}[{index}]"

    def index(self, expr: Expr) -> str:
        """An ``index`` node: the value of an integer index, as ``expr.dtype``."""
        return f"({expr.attrs[0]})"

    def convert(self, expr: Expr, operand: str) -> str:
        """A ``convert`` node: ``operand`` as ``expr.dtype``."""
        return f"convert({operand})"

    def gather(self, expr: Expr, position: str) -> str:
        """A ``gather`` node: its buffer at the flat element ``position`` (an i64 value)."""
        return f"{expr.attrs[0]}[{position}]"

    def operation(self, expr: Expr, operands: list[str]) -> str:
        """Any other node: a kernel IR operation of ``operands``."""
        return f"{expr.op}({', '.join(operands)})"

    def bind(self, expr: Expr, code: str, operands: list[str], position: int) -> str:
        """The name ``code`` is known by from here on (by default, the code itself)."""
        return code
