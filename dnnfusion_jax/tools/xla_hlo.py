"""Counting the kernels of XLA's optimised HLO: what stock ``jax.jit`` fusion produces.

``xla_kernels(fn, *args)`` compiles ``fn`` with ``jax.jit`` (default flags) and reads the
optimised HLO text (``jax.jit(fn).lower(*args).compile().as_text()``). In its ENTRY computation
every instruction that does work is one kernel: each ``fusion`` (kinds ``kLoop``, ``kInput``,
``kOutput``, and ``kCustom`` ones such as XLA:CPU's ``__ynn_fusion``), and each unfused op
(``dot``, ``convolution``, ``copy``, ``sort``, ``custom-call``, ...). A ``call`` counts one,
whatever its body holds; a ``while`` or ``conditional`` counts one, and the kernels of its
condition, body and branches count too (``loop_kernels``, nested loops included), as the
report counts the blocks of loop bodies. Free ops do not count:
``parameter``, ``constant``, ``get-tuple-element``, ``tuple``, ``bitcast``, a ``reshape``
between row-major layouts (a bitcast), and the ``-done``/``-update`` halves of async pairs.

``intermediate_bytes`` sums the buffers one kernel writes and another kernel reads, seen
through free ops (a ``tuple`` fed to a ``while`` is read by the ``while``); outputs of the
ENTRY computation and parameters are left out, as ``Report.summary()["intermediate_bytes"]``
leaves out the graph's inputs and outputs.

What XLA:CPU (jax 0.10) emits, for reference: an elementwise chain is one ``kLoop`` fusion; a
row softmax over 128 columns is six ``kLoop`` fusions (a reduce-window and a reduce for the
max, subtract+exp, a reduce-window and reduce+reciprocal for the sum, the final multiply); a
dense layer is a ``__ynn_fusion`` (the dot) followed by a ``kLoop`` fusion for its epilogue.

Example:
    >>> import jax.numpy as jnp
    >>> k = xla_kernels(lambda x: jnp.exp(x) * 2.0 + 1.0, jnp.ones((8, 128)))
    >>> k.count, k.by_kind, k.intermediate_bytes
    (1, {'fusion:kLoop': 1}, 0)
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax

FREE_OPS = frozenset({"parameter", "constant", "get-tuple-element", "tuple", "bitcast",
                      "after-all", "add-dependency", "opt-barrier", "domain"})
"""Opcodes that move no data: never a kernel."""

_ELEMENT_BYTES = {"pred": 1, "s2": 1, "u2": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "s16": 2,
                  "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8,
                  "u64": 8, "f64": 8, "c64": 8, "c128": 16, "token": 0}
_ARRAY = re.compile(r"([a-z][a-z0-9]*)\[([^\]]*)\](?:\{([^}]*)\})?")
_HEAD = re.compile(r"\s*(ROOT\s+)?%?([^\s=]+)\s*=\s*")
_OPCODE = re.compile(r"\s*([a-z][a-z0-9-]*)\(")
_COMPUTATION = re.compile(r"(ENTRY\s+)?%?([^\s(]+)\s*\(.*\{\s*$")


@dataclass(frozen=True)
class HloInstruction:
    """One instruction of the ENTRY computation, as far as kernel counting needs it."""

    name: str
    opcode: str
    shape: str
    operands: tuple[str, ...]
    attributes: str
    is_root: bool

    @property
    def kind(self) -> str:
        """``fusion:<kind>`` for fusions (kCustom ones by their config name), else the opcode."""
        if self.opcode != "fusion":
            return self.opcode
        custom = re.search(r'"kind"\s*:\s*"([^"]+)"', self.attributes)
        kind = re.search(r"\bkind=(k\w+)", self.attributes)
        if kind and kind.group(1) == "kCustom" and custom:
            return f"fusion:{custom.group(1)}"
        return f"fusion:{kind.group(1) if kind else 'unknown'}"


@dataclass(frozen=True)
class XlaKernels:
    """The kernels XLA runs for one function: count, count per kind, intermediate bytes.

    ``kernels`` lists ``(name, kind)`` of each kernel in ENTRY order. ``custom_fusion_ops``
    counts the working ops inside kCustom fusions: XLA:CPU hands whole subgraphs to XNNPACK as
    one ``__ynn_fusion`` (all 13 convolutions of VGG-16 can be one), so one such kernel may
    hold many operators.

    Example:
        >>> XlaKernels(2, {"fusion:kLoop": 2}, 4096, (("a", "fusion:kLoop"),
        ...            ("b", "fusion:kLoop"))).count
        2
    """

    count: int
    by_kind: dict[str, int]
    intermediate_bytes: int
    kernels: tuple[tuple[str, str], ...] = ()
    custom_fusion_ops: int = 0
    loop_kernels: int = 0


def xla_kernels(fn: Callable, *args: Any, **kwargs: Any) -> XlaKernels:
    """Compiles ``fn(*args, **kwargs)`` with ``jax.jit`` and counts the kernels of its HLO.

    Arguments may be arrays or ``jax.ShapeDtypeStruct``; nothing is executed. Pass an
    already ``jax.jit``-ed function (with its static arguments) as it is.
    """
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    return count_kernels(jitted.lower(*args, **kwargs).compile().as_text())


def count_kernels(hlo_text: str) -> XlaKernels:
    """Counts the kernels in the ENTRY computation of optimised HLO text.

    Example:
        >>> text = '''ENTRY %main (x: f32[4]) -> f32[4] {
        ...   %x = f32[4]{0} parameter(0)
        ...   %e = f32[4]{0} exponential(%x)
        ...   ROOT %n = f32[4]{0} negate(%e)
        ... }'''
        >>> k = count_kernels(text)
        >>> k.count, k.by_kind, k.intermediate_bytes
        (2, {'exponential': 1, 'negate': 1}, 16)
    """
    computations = parse_computations(hlo_text)
    if "ENTRY" not in computations:
        raise ValueError("no ENTRY computation in the HLO text")
    instructions = computations["ENTRY"]
    shapes = {inst.name: inst.shape for inst in instructions}
    kernels = [inst for inst in instructions if _is_kernel(inst, shapes)]
    inside = 0
    for kernel in kernels:
        called = re.search(r"\bcalls=%?([\w.\-]+)", kernel.attributes)
        if "kind=kCustom" in kernel.attributes and called:
            body = computations.get(called.group(1), [])
            body_shapes = {inst.name: inst.shape for inst in body}
            inside += sum(_is_kernel(inst, body_shapes) for inst in body)
    in_loops = _loop_kernels(computations, instructions)
    return XlaKernels(count=len(kernels) + in_loops,
                      by_kind=dict(sorted(Counter(k.kind for k in kernels).items())),
                      intermediate_bytes=_intermediate_bytes(instructions, shapes),
                      kernels=tuple((k.name, k.kind) for k in kernels),
                      custom_fusion_ops=inside, loop_kernels=in_loops)


_CALLED_BODIES = re.compile(r"\b(?:condition|body|true_computation|false_computation)=%?([\w.\-]+)"
                            r"|\bbranch_computations=\{([^}]*)\}")


def loop_bodies(inst: HloInstruction) -> list[str]:
    """The computations a ``while`` (condition, body) or ``conditional`` (branches) runs.

    Example:
        >>> inst = HloInstruction("w", "while", "f32[]", (), ", condition=%c, body=%b", False)
        >>> loop_bodies(inst)
        ['c', 'b']
    """
    if inst.opcode not in ("while", "conditional"):
        return []
    names = []
    for single, several in _CALLED_BODIES.findall(inst.attributes):
        names += [single] if single else re.findall(r"%?([\w.\-]+)", several)
    return names


def _loop_kernels(computations: dict[str, list[HloInstruction]],
                  instructions: list[HloInstruction]) -> int:
    """Kernels inside the loop and branch bodies that ``instructions`` run, nested ones too."""
    total = 0
    for inst in instructions:
        for name in loop_bodies(inst):
            body = computations.get(name, [])
            shapes = {i.name: i.shape for i in body}
            total += sum(_is_kernel(i, shapes) for i in body)
            total += _loop_kernels(computations, body)
    return total


def parse_entry(hlo_text: str) -> list[HloInstruction]:
    """The instructions of the ENTRY computation, in order (one instruction per line)."""
    computations = parse_computations(hlo_text)
    if "ENTRY" not in computations:
        raise ValueError("no ENTRY computation in the HLO text")
    return computations["ENTRY"]


def parse_computations(hlo_text: str) -> dict[str, list[HloInstruction]]:
    """Every computation's instructions by name; the entry computation is also ``"ENTRY"``.

    Operands are kept only where they name an instruction of the same computation.
    """
    computations: dict[str, list[HloInstruction]] = {}
    current: list[HloInstruction] | None = None
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = []
            computations[header.group(2)] = current
            if header.group(1):
                computations["ENTRY"] = current
        elif line.startswith("}"):
            current = None
        elif current is not None:
            inst = _parse_instruction(line)
            if inst is not None:
                current.append(inst)
    for body in computations.values():
        names = {inst.name for inst in body}
        body[:] = [HloInstruction(i.name, i.opcode, i.shape,
                                  tuple(o for o in i.operands if o in names), i.attributes,
                                  i.is_root) for i in body]
    return computations


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape; a tuple sums its elements.

    Example:
        >>> shape_bytes("f32[8,128]{1,0}"), shape_bytes("(s32[], bf16[2,3]{1,0})")
        (4096, 16)
    """
    return sum(_array_bytes(m) for m in _ARRAY.finditer(shape))


def _parse_instruction(line: str) -> HloInstruction | None:
    head = _HEAD.match(line)
    if head is None:
        return None
    pos = head.end()
    if line.startswith("(", pos):
        end = _matching(line, pos)
        shape = line[pos:end + 1]
        pos = end + 1
    else:
        end = line.find(" ", pos)
        shape, pos = line[pos:end], end
    opcode = _OPCODE.match(line, pos)
    if opcode is None:
        return None
    open_paren = opcode.end() - 1
    close_paren = _matching(line, open_paren)
    operand_text = line[open_paren + 1:close_paren]
    operands = tuple(re.findall(r"%?([A-Za-z_][\w.\-]*)", operand_text))
    return HloInstruction(head.group(2), opcode.group(1), shape, operands,
                          line[close_paren + 1:], bool(head.group(1)))


def _matching(text: str, open_index: int) -> int:
    depth = 0
    for i in range(open_index, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced parentheses in HLO line: {text!r}")


def _is_kernel(inst: HloInstruction, shapes: dict[str, str]) -> bool:
    if inst.opcode in FREE_OPS or inst.opcode.endswith(("-done", "-update")):
        return False
    return not (inst.opcode == "reshape" and _is_bitcast_reshape(inst, shapes))


def _is_bitcast_reshape(inst: HloInstruction, shapes: dict[str, str]) -> bool:
    """A reshape between row-major (default) layouts moves no data."""
    operand = shapes.get(inst.operands[0], "") if inst.operands else ""
    arrays = [_ARRAY.search(inst.shape), _ARRAY.search(operand)]
    return all(m is not None and _is_row_major(m) for m in arrays)


def _is_row_major(match: re.Match) -> bool:
    rank = len([d for d in match.group(2).split(",") if d.strip()])
    layout = match.group(3)
    if layout is None:
        return True
    minor_to_major = [int(d) for d in re.findall(r"\d+", layout.split(":")[0])]
    return minor_to_major == list(range(rank - 1, -1, -1))


def _array_bytes(match: re.Match) -> int:
    element, dims = match.group(1), match.group(2)
    if element not in _ELEMENT_BYTES:
        return 0  # not an array type (a word inside a layout, say)
    sizes = [int(re.sub(r"\D", "", d)) for d in dims.split(",") if re.sub(r"\D", "", d)]
    return _ELEMENT_BYTES[element] * math.prod(sizes)


def _split_tuple(shape: str) -> list[str] | None:
    """The top-level element shapes of a tuple shape, or None for an array shape."""
    shape = shape.strip()
    if not shape.startswith("("):
        return None
    parts, depth, current = [], 0, []
    for char in shape[1:-1]:
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        depth += char in "([{"
        depth -= char in ")]}"
        current.append(char)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def _buffers(shape: str, owner: str | None, path: tuple = ()) -> Any:
    """A value as a tree of leaves ``(buffer id or None, bytes)``; lists are tuples."""
    elements = _split_tuple(shape)
    if elements is None:
        return ((owner, path) if owner else None, shape_bytes(shape))
    return [_buffers(e, owner, (*path, i)) for i, e in enumerate(elements)]


def _leaves(value: Any) -> list[tuple]:
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _intermediate_bytes(instructions: list[HloInstruction], shapes: dict[str, str]) -> int:
    values: dict[str, Any] = {}
    read: set = set()
    sizes: dict = {}
    root = None
    for inst in instructions:
        operands = [values[o] for o in inst.operands if o in values]
        if inst.opcode in ("parameter", "constant"):
            value = _buffers(inst.shape, None)
        elif inst.opcode == "tuple":
            value = operands
        elif inst.opcode == "get-tuple-element" and operands and isinstance(operands[0], list):
            index = int(re.search(r"index=(\d+)", inst.attributes).group(1))
            value = operands[0][index]
        elif inst.opcode in ("bitcast", "opt-barrier", "add-dependency") or (
                inst.opcode == "reshape" and not _is_kernel(inst, shapes)):
            value = operands[0] if operands else _buffers(inst.shape, None)
        else:
            value = _buffers(inst.shape, inst.name)
            if _is_kernel(inst, shapes):
                read.update(b for o in operands for b, _ in _leaves(o) if b is not None)
        for buffer, nbytes in _leaves(value):
            if buffer is not None:
                sizes[buffer] = nbytes
        values[inst.name] = value
        if inst.is_root:
            root = value
    outputs = {b for b, _ in _leaves(root)} if root is not None else set()
    return sum(sizes[b] for b in read - outputs)
