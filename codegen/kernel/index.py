"""Index algebra of the kernel IR: integer index expressions over loop variables.

``Index`` is an affine form over loop variables (``LoopVar``) whose atoms may also be
floor-divisions (``Div``) and modulos (``Mod``) of other indices; it simplifies
``(f // (s*e)) * e + (f // s) % e`` back to ``f // s``, so a reshape followed by its inverse
costs nothing, and ``upper`` bounds let it drop divisions that are no-ops. ``linearize`` and
``delinearize`` move between multi-dimensional and flat (row-major) indices; ``substitute``
replaces loop variables by indices.

Example:
    >>> i, j = LoopVar("i", 4), LoopVar("j", 8)
    >>> flat = Index.var(i) * 8 + Index.var(j)
    >>> str((flat // 8) * 8 + flat % 8)
    'i*8 + j'
    >>> str(Index.var(j) // 8), str(Index.var(j) % 8)
    ('0', 'j')
"""
from __future__ import annotations

import math
from dataclasses import dataclass

@dataclass(frozen=True)
class LoopVar:
    """A loop variable with its trip count (values 0 … extent-1)."""

    name: str
    extent: int

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Div:
    """``index // divisor`` (divisor > 1), an atom of an ``Index``."""

    index: "Index"
    divisor: int

    def __str__(self) -> str:
        return f"({self.index})/{self.divisor}"


@dataclass(frozen=True)
class Mod:
    """``(index // divisor) % modulus``, an atom of an ``Index``."""

    index: "Index"
    divisor: int
    modulus: int

    def __str__(self) -> str:
        inner = str(self.index) if self.divisor == 1 else f"({self.index})/{self.divisor}"
        return f"({inner})%{self.modulus}"


Atom = LoopVar | Div | Mod


@dataclass(frozen=True)
class Index:
    """An integer expression ``const + Σ coef·atom`` with non-negative values."""

    terms: tuple[tuple[Atom, int], ...] = ()
    const: int = 0

    @staticmethod
    def var(var: LoopVar) -> Index:
        return Index(((var, 1),)) if var.extent > 1 else Index()

    @staticmethod
    def constant(value: int) -> Index:
        return Index((), int(value))

    def __add__(self, other: Index | int) -> Index:
        other = other if isinstance(other, Index) else Index.constant(other)
        merged: dict[Atom, int] = dict(self.terms)
        for atom, coef in other.terms:
            merged[atom] = merged.get(atom, 0) + coef
        return _normalise(merged, self.const + other.const)

    def __mul__(self, factor: int) -> Index:
        if factor == 0:
            return Index()
        return Index(tuple((a, c * factor) for a, c in self.terms), self.const * factor)

    def __floordiv__(self, divisor: int) -> Index:
        if divisor == 1:
            return self
        # split self = divisor·quotient + rest; when 0 ≤ rest < divisor the division is exact
        quotient = Index(tuple((a, c // divisor) for a, c in self.terms if c % divisor == 0),
                         self.const // divisor)
        rest = Index(tuple((a, c) for a, c in self.terms if c % divisor), self.const % divisor)
        low, high = rest.bounds()
        if 0 <= low and high < divisor:
            return quotient
        split = self._factor_out(divisor)
        if split is not None:
            factor, outer = split
            return outer // (divisor // factor)
        if not self.const and len(self.terms) == 1 and isinstance(self.terms[0][0], Div) \
                and self.terms[0][1] == 1:  # (e // a) // b = e // (a·b)
            inner = self.terms[0][0]
            return inner.index // (inner.divisor * divisor)
        return Index(((Div(self, divisor), 1),))

    def _factor_out(self, divisor: int) -> tuple[int, Index] | None:
        """``(f, e)`` with ``self = f·e + r``, ``0 <= r < f`` and ``f`` a divisor of
        ``divisor`` greater than 1 (largest first), so that ``self // divisor`` is
        ``e // (divisor / f)``; None when there is none. Nearest-neighbour upsampling reads
        ``(c + 256·w) // 512`` for channels ``c < 256``: that is ``w // 2``, which keeps the
        channel loop contiguous (a division of the inner loop variable defeats vectorising)."""
        for factor in sorted({math.gcd(divisor, c) for _, c in self.terms} - {1}, reverse=True):
            outer = Index(tuple((a, c // factor) for a, c in self.terms if c % factor == 0),
                          self.const // factor)
            rest = Index(tuple((a, c) for a, c in self.terms if c % factor),
                         self.const % factor)
            low, high = rest.bounds()
            if 0 <= low and high < factor:
                return factor, outer
        return None

    def __mod__(self, modulus: int) -> Index:
        return self.digit(1, modulus)

    def digit(self, divisor: int, modulus: int) -> Index:
        """``(self // divisor) % modulus``."""
        if modulus == 1:
            return Index()
        period = divisor * modulus  # terms that are multiples of the period never matter
        reduced = Index(tuple((a, c) for a, c in self.terms if c % period), self.const % period)
        low, high = reduced.bounds()
        if low >= 0 and high // divisor < modulus:
            return reduced // divisor
        split = reduced._factor_out(divisor) if divisor > 1 else None
        if split is not None:  # (f·e + r) // divisor = e // (divisor / f), as in __floordiv__
            factor, outer = split
            return outer.digit(divisor // factor, modulus)
        return Index(((Mod(reduced, divisor, modulus), 1),))

    def evaluate(self, env: dict[LoopVar, int]) -> int:
        """The value at one point: ``env`` gives every loop variable's value."""
        return self.const + sum(c * _atom_value(a, env) for a, c in self.terms)

    def bounds(self) -> tuple[int, int]:
        """(smallest, largest) value the expression can take, in one pass over its atoms."""
        low = high = self.const
        for atom, coef in self.terms:
            atom_low, atom_high = _atom_bounds(atom)
            low += coef * (atom_low if coef > 0 else atom_high)
            high += coef * (atom_high if coef > 0 else atom_low)
        return low, high

    def upper(self) -> int:
        """The largest value the expression can take."""
        return self.bounds()[1]

    def lower(self) -> int:
        """The smallest value the expression can take."""
        return self.bounds()[0]

    def __str__(self) -> str:
        parts = [str(a) if c == 1 else f"{a}*{c}" for a, c in self.terms]
        if self.const or not parts:
            parts.append(str(self.const))
        return " + ".join(parts)


def _atom_value(atom: Atom, env: dict[LoopVar, int]) -> int:
    if isinstance(atom, LoopVar):
        return env[atom]
    if isinstance(atom, Div):
        return atom.index.evaluate(env) // atom.divisor
    return atom.index.evaluate(env) // atom.divisor % atom.modulus


def _atom_bounds(atom: Atom) -> tuple[int, int]:
    """(lowest, highest) value of an atom. A Div or Mod of an index that can be negative (the
    unselected branch of a predicated pad/concatenate read) is bounded for both floor division
    (the IR's meaning) and C's truncating ``/`` and ``%``, so that bounds checks stay safe."""
    if isinstance(atom, LoopVar):
        return 0, atom.extent - 1
    low, high = atom.index.bounds()  # one walk: separate lower()/upper() doubled per level
    if isinstance(atom, Div):
        return low // atom.divisor, high // atom.divisor
    if low >= 0:
        return 0, min(atom.modulus - 1, high // atom.divisor)
    return -(atom.modulus - 1), atom.modulus - 1


def _normalise(terms: dict[Atom, int], const: int) -> Index:
    """Drops zero terms and folds digit chains of one value ``f``:

    ``((f//s) % e)·k + (f//(s·e))·e·k → (f//s)·k`` and
    ``((f//s) % e)·k + ((f//(s·e)) % e2)·e·k → ((f//s) % (e·e2))·k``.
    """
    changed = True
    while changed:
        changed = False
        for atom, coef in list(terms.items()):
            if not isinstance(atom, Mod) or not coef:
                continue
            higher = atom.divisor * atom.modulus
            for partner, partner_coef in list(terms.items()):
                same_value = (isinstance(partner, (Div, Mod)) and partner.index == atom.index
                              and partner.divisor == higher)
                if not same_value or partner_coef != coef * atom.modulus:
                    continue
                del terms[atom], terms[partner]
                if isinstance(partner, Div):
                    folded = atom.index // atom.divisor
                else:
                    folded = atom.index.digit(atom.divisor, atom.modulus * partner.modulus)
                for a, c in folded.terms:
                    terms[a] = terms.get(a, 0) + c * coef
                const += folded.const * coef
                changed = True
                break
            if changed:
                break
    return Index(tuple((a, c) for a, c in terms.items() if c != 0), const)


def linearize(indices: list[Index], shape: tuple[int, ...]) -> Index:
    """Row-major flat index of ``indices`` in ``shape``."""
    flat, stride = Index(), 1
    for index, extent in zip(reversed(indices), reversed(shape)):
        flat = flat + index * stride
        stride *= extent
    return flat


def delinearize(flat: Index, shape: tuple[int, ...]) -> list[Index]:
    """The multi-index of row-major ``flat`` in ``shape`` (inverse of ``linearize``)."""
    indices, stride = [], 1
    for position, extent in reversed(list(enumerate(shape))):
        # the top digit needs no modulo: flat < size
        indices.append(flat // stride if position == 0 else flat.digit(stride, extent))
        stride *= extent
    indices.reverse()
    return indices


def substitute(index: Index, mapping: dict[LoopVar, Index]) -> Index:
    """``index`` with loop variables replaced, inside divisions and remainders too (rebuilt
    with Index's simplifying operations).

    >>> i, j = LoopVar("i", 4), LoopVar("j", 6)
    >>> substitute(Index.var(i) * 6 + 1, {i: Index.var(j) + 2}) == Index.var(j) * 6 + 13
    True
    """
    result = Index.constant(index.const)
    for atom, coef in index.terms:
        if isinstance(atom, LoopVar):
            term = mapping.get(atom, Index.var(atom))
        elif isinstance(atom, Div):
            term = substitute(atom.index, mapping) // atom.divisor
        else:
            term = substitute(atom.index, mapping).digit(atom.divisor, atom.modulus)
        result = result + term * coef
    return result
