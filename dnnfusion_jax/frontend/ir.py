"""The graph IR every stage shares: SSA values, primitive nodes, a graph in topological order.

The IR mirrors a flattened jaxpr (no nested calls) so that any node can be replayed with
``primitive.bind``; later stages (rewriting, planning, code generation) read and rebuild it.

Example:
    >>> import jax.numpy as jnp
    >>> from dnnfusion_jax.frontend.trace import trace_function
    >>> graph = trace_function(lambda x: jnp.exp(x) + 1.0, [jnp.ones((2, 3))]).graph
    >>> [node.op for node in graph.nodes]
    ['exp', 'add']
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_ids = itertools.count()


def _dtype_name(dtype: Any) -> str:
    short = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16",
             "int32": "i32", "int64": "i64", "int8": "i8", "uint8": "u8", "uint32": "u32",
             "bool": "bool"}
    name = str(getattr(dtype, "name", dtype))
    return short.get(name, name)


@dataclass(frozen=True, eq=False)
class Var:
    """One SSA value: a tensor of fixed shape and dtype. Identity is the object itself.

    Example:
        >>> import numpy as np
        >>> v = Var((2, 3), np.dtype("float32"))
        >>> v.size, v.nbytes
        (6, 24)
    """

    shape: tuple[int, ...]
    dtype: Any
    weak_type: bool = False
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def itemsize(self) -> int:
        try:
            return np.dtype(self.dtype).itemsize
        except TypeError:  # extended dtypes (PRNG keys) have no numpy itemsize
            return int(getattr(self.dtype, "itemsize", 8) or 8)

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    @property
    def type_str(self) -> str:
        return f"{_dtype_name(self.dtype)}[{','.join(map(str, self.shape))}]"

    def __repr__(self) -> str:
        return f"%{self.id}:{self.type_str}"


@dataclass(frozen=True, eq=False)
class Node:
    """One primitive application: ``outputs = primitive.bind(*inputs, **params)``.

    Example:
        >>> import numpy as np, jax.numpy as jnp
        >>> from jax import lax
        >>> x, y = Var((2,), np.dtype("float32")), Var((2,), np.dtype("float32"))
        >>> node = Node(lax.exp_p, (x,), (y,), {"accuracy": None})
        >>> node.op, [float(v) for v in node.bind(jnp.zeros(2))[0]]
        ('exp', [1.0, 1.0])
    """

    primitive: Any
    inputs: tuple[Var, ...]
    outputs: tuple[Var, ...]
    params: Mapping[str, Any]
    effects: frozenset = frozenset()

    @property
    def op(self) -> str:
        return self.primitive.name

    @property
    def out(self) -> Var:
        """The single output of a single-output node."""
        assert len(self.outputs) == 1, f"{self.op} has {len(self.outputs)} outputs"
        return self.outputs[0]

    def bind(self, *values: Any) -> list[Any]:
        """Run the primitive on concrete values or tracers; always returns a list."""
        result = self.primitive.bind(*values, **self.params)
        return list(result) if self.primitive.multiple_results else [result]

    def __repr__(self) -> str:
        outs = " ".join(map(repr, self.outputs))
        params = " ".join(f"{k}={_short(v)}" for k, v in self.params.items()
                          if v is not None and k not in _HIDDEN_PARAMS)
        ins = " ".join(f"%{v.id}" for v in self.inputs)
        return f"{outs} = {self.op}{'[' + params + ']' if params else ''} {ins}"


_HIDDEN_PARAMS = {"sharding", "out_sharding", "accuracy", "precision"}


def _short(value: Any) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class Graph:
    """A flattened, side-effect-ordered dataflow graph.

    ``inputs`` are the flattened arguments, preceded by ``num_consts`` closed-over constants
    that the caller passes at run time; ``constants`` maps literal and baked-in constant
    values; ``nodes`` are in a topological order that also preserves the order of effects.

    Example:
        >>> import jax.numpy as jnp
        >>> from dnnfusion_jax.frontend.trace import trace_function
        >>> g = trace_function(lambda x: x * 2.0, [jnp.ones(3)]).graph
        >>> len(g.inputs), len(g.constants), len(g.nodes), g.outputs[0].type_str
        (1, 1, 1, 'f32[3]')
    """

    inputs: list[Var]
    constants: dict[Var, Any]
    nodes: list[Node]
    outputs: list[Var]
    num_consts: int = 0

    def producers(self) -> dict[Var, Node]:
        """Maps each node output to the node that computes it."""
        return {out: node for node in self.nodes for out in node.outputs}

    def consumers(self) -> dict[Var, list[Node]]:
        """Maps each value to the nodes that read it (a node reading twice is listed once)."""
        users: dict[Var, list[Node]] = {}
        for node in self.nodes:
            for var in dict.fromkeys(node.inputs):
                users.setdefault(var, []).append(node)
        return users

    def read_counts(self) -> dict[Var, int]:
        """Maps each value to the number of nodes reading it, a graph output counting as one
        more reader (a value read once, and not returned, may be rewritten in place)."""
        readers = {var: len(users) for var, users in self.consumers().items()}
        readers.update((var, readers.get(var, 0) + 1) for var in self.outputs)
        return readers

    def validate(self) -> None:
        """Checks that every value is defined before use; raises AssertionError otherwise."""
        defined = set(self.inputs) | set(self.constants)
        for node in self.nodes:
            for var in node.inputs:
                assert var in defined, f"{node!r} reads undefined {var!r}"
            defined.update(node.outputs)
        for var in self.outputs:
            assert var in defined, f"output {var!r} is undefined"

    def replace(self, nodes: Sequence[Node], outputs: Sequence[Var] | None = None,
                constants: Mapping[Var, Any] | None = None) -> Graph:
        """A copy of this graph with other nodes (and optionally outputs and constants)."""
        return Graph(list(self.inputs), dict(self.constants if constants is None else constants),
                     list(nodes), list(self.outputs if outputs is None else outputs),
                     self.num_consts)

    def __str__(self) -> str:
        lines = ["graph(" + ", ".join(map(repr, self.inputs)) + ") {"]
        for var, value in self.constants.items():
            lines.append(f"  {var!r} = constant {_short(np.asarray(value)) if np.ndim(value) == 0 else '<array>'}")
        lines += [f"  {node!r}" for node in self.nodes]
        lines.append("  return " + ", ".join(f"%{v.id}" for v in self.outputs))
        lines.append("}")
        return "\n".join(lines)

