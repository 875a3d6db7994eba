"""Half-precision variants of the library models (issue 16): what bf16 users write.

``HALF_MODELS`` maps a name to a builder returning ``(fn, args, f32_fn, f32_args)``: ``fn``
computes in bfloat16; ``f32_fn(*f32_args)`` is the same model in float32 arithmetic on the
same values (the bf16 inputs widened), the reference both ``jax.jit`` and dnnfusion are
measured against: dnnfusion must be no less accurate than XLA.

* ``linen_transformer_bf16``: the linen encoder layer with ``dtype=jnp.bfloat16`` (parameters
  kept in float32, computation and activations in bf16, as Flax's mixed precision does);
* ``haiku_transformer_bf16``: the Haiku transformer block with parameters and inputs cast to
  bf16;
* ``linen_mlp_mixed_step``: a mixed-precision training step: float32 master weights cast to
  bf16 for the forward and backward, the loss and the SGD-with-momentum update in float32.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

try:  # tests/ imported as a package
    from .library_models import (BATCH, DIM, HEADS, SEQ, _haiku_block, _linen_variables,
                                 _normal, randomize_constants, registrar)
except ImportError:
    from library_models import (BATCH, DIM, HEADS, SEQ, _haiku_block, _linen_variables,
                                _normal, randomize_constants, registrar)

def scaled_errors(result, reference) -> list[float]:
    """Per float leaf: max|result - reference| / max(1, max|reference|), in float32."""
    errors = []
    for got, want in zip(jax.tree_util.tree_leaves(result), jax.tree_util.tree_leaves(reference)):
        if not jnp.issubdtype(want.dtype, jnp.floating):
            continue
        got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
        errors.append(float(np.max(np.abs(got - want))) / max(1.0, float(np.max(np.abs(want)))))
    return errors


HalfBuilder = Callable[[], tuple[Callable, tuple, Callable, tuple]]
HALF_MODELS: dict[str, HalfBuilder] = {}
HALF_LIBRARIES: dict[str, tuple[str, ...]] = {}


_register = registrar(HALF_MODELS, HALF_LIBRARIES)


def _bf16(tree):
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _f32(tree):
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _linen_encoder(dtype):
    import flax.linen as nn

    class EncoderLayer(nn.Module):
        @nn.compact
        def __call__(self, x):
            attention = nn.MultiHeadDotProductAttention(num_heads=HEADS, dtype=dtype)
            x = nn.LayerNorm(dtype=dtype)(x + attention(x))
            y = nn.Dense(DIM, dtype=dtype)(nn.gelu(nn.Dense(2 * DIM, dtype=dtype)(x)))
            return nn.LayerNorm(dtype=dtype)(x + y)
    return EncoderLayer()


@_register("flax")
def linen_transformer_bf16():
    """The linen encoder layer computing in bf16 (``dtype=jnp.bfloat16``), float32 params."""
    half, full = _linen_encoder(jnp.bfloat16), _linen_encoder(jnp.float32)
    x = _normal(3, BATCH, SEQ, DIM).astype(jnp.bfloat16)
    variables = _linen_variables(full, _f32(x), 31)
    return half.apply, (variables, x), full.apply, (variables, _f32(x))


@_register("haiku")
def haiku_transformer_bf16():
    """The Haiku transformer block with parameters and inputs cast to bf16."""
    import haiku as hk
    model = hk.without_apply_rng(hk.transform(_haiku_block))
    x = _normal(8, BATCH, SEQ, DIM)
    params = randomize_constants(jax.jit(model.init)(jax.random.key(81), x), 81)
    args = (_bf16(params), _bf16(x))
    return model.apply, args, model.apply, _f32(args)


@_register("flax", "optax")
def linen_mlp_mixed_step():
    """A mixed-precision training step: f32 master weights, bf16 forward and backward, f32
    loss and update (SGD with momentum: Adam's first steps amplify rounding, see
    ``library_models._warm_up``)."""
    import flax.linen as nn
    import optax

    def mlp(dtype):
        class MLP(nn.Module):
            @nn.compact
            def __call__(self, x):
                x = nn.gelu(nn.Dense(2 * DIM, dtype=dtype)(x))
                x = nn.LayerNorm(dtype=dtype)(x)
                return nn.Dense(DIM, dtype=dtype)(x)
        return MLP()

    optimizer = optax.sgd(1e-2, momentum=0.9)

    def make_step(module):
        def step(params, opt_state, x, target):
            def loss_fn(params):
                y = module.apply({"params": params}, x)
                return jnp.mean((y.astype(jnp.float32) - target) ** 2)
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss
        return step

    x = _normal(12, BATCH * SEQ, DIM).astype(jnp.bfloat16)
    target = _normal(13, BATCH * SEQ, DIM)
    params = _linen_variables(mlp(jnp.float32), _f32(x), 120)["params"]
    opt_state = optimizer.init(params)
    return (make_step(mlp(jnp.bfloat16)), (params, opt_state, x, target),
            make_step(mlp(jnp.float32)), (params, opt_state, _f32(x), target))
