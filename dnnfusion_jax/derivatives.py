"""Derivatives of an optimised function that run fused kernels, forward and backward.

An optimised function is a chain of compiled kernels (custom calls) that JAX cannot
differentiate. Its derivative is therefore defined on the traced jaxpr, the *reference*,
which still holds the user's ``custom_jvp``, ``custom_vjp`` and ``stop_gradient``. Instead
of evaluating that reference unfused, reverse mode runs two more optimised functions:

* the **forward**: ``jax.vjp`` of the reference, traced, returns the outputs and the
  residuals the backward needs (``tanh(x)`` for ``tanh``'s derivative), optimised by the same
  pipeline: one fused pass computes both;
* the **backward**: the VJP applied to output cotangents, traced from the residuals and
  optimised: the ``add_any`` fan-in adds, broadcasts transposed to reductions, and the
  elementwise chain rule become fused kernels.

Both are built on the first derivative of a signature and kept with it. The plumbing is
JAX's own: the optimised call is a ``custom_jvp`` whose rule runs the fused forward and binds
``linear_p``, a primitive linear in its tangents. Under ``jax.jvp`` that primitive is the
reference's linear map (evaluated by XLA); under ``jax.grad``/``jax.vjp`` JAX transposes it,
and its transpose rule is the fused backward. Higher derivatives (the derivative of the
forward or of the backward) use the reference graphs.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import dnnfusion_jax as dnnfusion
    >>> f = dnnfusion.jit(lambda x: jnp.sum(jnp.tanh(x) * x))
    >>> g = jax.grad(f)(jnp.ones(3))
    >>> bool(jnp.allclose(g, jax.grad(f.fun)(jnp.ones(3))))
    True
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

Optimizer = Callable[[Callable, list[jax.ShapeDtypeStruct], str], Any]
"""``(flat function, abstract inputs, name) -> callable on flat inputs returning a list``:
how the pipeline optimises the forward and backward functions (``pipeline.py`` passes
``optimize`` with the function's own options)."""


def call_differentiable(run: Callable[..., list], reference: Callable[..., list],
                        inputs: Sequence[Any], vjp: Callable[[], "FusedVjp"] | None) -> list:
    """``run(*inputs)``, differentiable: by ``vjp()`` (built on first use) when given, by the
    reference otherwise.

    >>> call_differentiable(lambda x: [x * 2], lambda x: [x * 2], [jnp.ones(2)], None)[0]
    Array([2., 2.], dtype=float32)
    """
    call = jax.custom_jvp(lambda *xs: tuple(run(*xs)))
    if vjp is None:
        call.defjvp(lambda primals, tangents: jax.jvp(lambda *xs: tuple(reference(*xs)),
                                                      primals, tangents))
    else:
        call.defjvp(lambda primals, tangents: vjp().jvp(primals, tangents))
    return list(call(*inputs))


class FusedVjp:
    """The optimised forward (outputs and residuals) and backward of one signature.

    ``optimizer`` optimises a flat function at abstract inputs (see ``Optimizer``). Only
    floating-point inputs and outputs carry tangents; the others get float0 zeros.
    """

    def __init__(self, reference: Callable[..., list], in_avals: Sequence[Any],
                 out_avals: Sequence[Any], optimizer: Optimizer, name: str) -> None:
        self.reference = reference
        self.in_avals = [_struct(a) for a in in_avals]
        self.out_avals = [_struct(a) for a in out_avals]
        self.differentiable_in = [_inexact(a) for a in self.in_avals]
        self.differentiable_out = [_inexact(a) for a in self.out_avals]
        self._treedefs: list[Any] = []
        self.forward = optimizer(self._forward_reference, self.in_avals, f"{name}.forward")
        residual_avals = self.forward.out_avals[len(self.out_avals):]
        self.num_residuals = len(residual_avals)
        self._vjp_tree = self._treedefs[-1]
        self.cotangent_avals = [a for a, d in zip(self.out_avals, self.differentiable_out) if d]
        self.backward = optimizer(self._backward_reference,
                                  [*residual_avals, *self.cotangent_avals], f"{name}.backward")

    # -- the reference functions the forward and backward are traced from -------------------
    def _forward_reference(self, *inputs: Any) -> list:
        outputs, vjp_fn = jax.vjp(lambda *xs: tuple(self.reference(*xs)), *inputs)
        residuals, tree = jax.tree_util.tree_flatten(vjp_fn)
        self._treedefs.append(tree)
        return [*outputs, *residuals]

    def _backward_reference(self, *residuals_and_cotangents: Any) -> list:
        residuals = residuals_and_cotangents[:self.num_residuals]
        given = iter(residuals_and_cotangents[self.num_residuals:])
        cotangents = tuple(next(given) if d else _float0_zeros(a)
                           for a, d in zip(self.out_avals, self.differentiable_out))
        vjp_fn = jax.tree_util.tree_unflatten(self._vjp_tree, residuals)
        grads = vjp_fn(cotangents)
        return [g for g, d in zip(grads, self.differentiable_in) if d]

    def linear_reference(self, *residuals_and_tangents: Any) -> list:
        """Forward mode: the output tangents, as the transpose of the backward (XLA)."""
        residuals = residuals_and_tangents[:self.num_residuals]
        tangents = residuals_and_tangents[self.num_residuals:]
        transpose = jax.linear_transpose(
            lambda *cts: self._backward_reference(*residuals, *cts), *self.cotangent_avals)
        return list(transpose(list(tangents)))

    # -- the rules ----------------------------------------------------------------------------
    def jvp(self, primals: Sequence[Any], tangents: Sequence[Any]) -> tuple[tuple, tuple]:
        """The custom_jvp rule: fused forward, then the linear map of the tangents."""
        values = self.forward(list(primals))
        outputs, residuals = values[:len(self.out_avals)], values[len(self.out_avals):]
        moving = [t for t, d in zip(tangents, self.differentiable_in) if d]
        linear = iter(linear_p.bind(*residuals, *moving, vjp=self))
        out_tangents = tuple(next(linear) if d else _float0_zeros(a)
                             for a, d in zip(self.out_avals, self.differentiable_out))
        return tuple(outputs), out_tangents

    def transpose(self, cotangents: Sequence[Any], residuals: Sequence[Any]) -> list:
        """The fused backward on the given output cotangents (symbolic zeros made real)."""
        cts = [jnp.zeros(a.shape, a.dtype) if type(ct) is ad.Zero else ct
               for ct, a in zip(cotangents, self.cotangent_avals)]
        return self.backward([*residuals, *cts])


# ----------------------------------------------------------------------------------------
# linear_p: the tangent map of an optimised function, transposed by its fused backward

linear_p = Primitive("dnnfusion_linear")
"""``linear_p.bind(*residuals, *tangents, vjp=FusedVjp)``: the output tangents."""
linear_p.multiple_results = True


def _abstract_eval(*args: Any, vjp: FusedVjp) -> list:
    return [jax.core.ShapedArray(a.shape, a.dtype) for a in vjp.cotangent_avals]


def _impl(*args: Any, vjp: FusedVjp) -> list:
    return vjp.linear_reference(*args)


def _jvp(primals: Sequence[Any], tangents: Sequence[Any], *, vjp: FusedVjp) -> tuple:
    tangents = [ad.instantiate_zeros(t) for t in tangents]
    outputs, out_tangents = jax.jvp(lambda *a: vjp.linear_reference(*a), list(primals),
                                    tangents)
    return outputs, out_tangents


def _transpose(cotangents: Sequence[Any], *args: Any, vjp: FusedVjp) -> list:
    residuals, tangents = args[:vjp.num_residuals], args[vjp.num_residuals:]
    if any(ad.is_undefined_primal(r) for r in residuals):
        raise NotImplementedError("dnnfusion: transposing with respect to residuals")
    grads = vjp.transpose(cotangents, residuals)
    return [None] * len(residuals) + [g if ad.is_undefined_primal(t) else None
                                      for g, t in zip(grads, tangents)]


def _batch(args: Sequence[Any], dims: Sequence[Any], *, vjp: FusedVjp) -> tuple:
    outputs = jax.vmap(lambda *a: vjp.linear_reference(*a), in_axes=list(dims))(*args)
    return outputs, [0] * len(outputs)


linear_p.def_abstract_eval(_abstract_eval)
linear_p.def_impl(_impl)
mlir.register_lowering(linear_p, mlir.lower_fun(_impl, multiple_results=True))
ad.primitive_jvps[linear_p] = _jvp
ad.primitive_transposes[linear_p] = _transpose
batching.primitive_batchers[linear_p] = _batch


def _struct(aval: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(aval.shape), aval.dtype,
                                weak_type=bool(getattr(aval, "weak_type", False)))


def _inexact(aval: Any) -> bool:
    return bool(jnp.issubdtype(aval.dtype, jnp.inexact))


def _float0_zeros(aval: Any) -> np.ndarray:
    return np.zeros(aval.shape, dtype=jax.dtypes.float0)
