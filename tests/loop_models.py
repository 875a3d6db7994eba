"""Models whose work is inside loops and branches, for ``test_loops.py`` and
``benchmarks/loops.py``: layers stacked with Flax's own ``nn.scan`` and ``nnx.scan``, an LSTM
through ``nn.RNN``, and ``lax`` control flow (``fori_loop`` with a data-dependent ``cond``
inside, ``switch``, a ``while_loop`` with a convergence test).

``LOOP_MODELS`` maps a name to a builder ``(unrolled: bool) -> (fn, args)``: with
``unrolled=True`` the same computation without the loop (a Python loop over the layers or
steps, the chosen branch called directly), which is what the benchmark compares against.
Parameters are arguments (never closed over), weights come from fixed seeds, and every
constant-initialised parameter is randomised (``library_models.randomize_constants``).
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from library_models import _linen_variables, _normal, randomize_constants, registrar

LoopBuilder = Callable[[bool], tuple[Callable, tuple]]
LOOP_MODELS: dict[str, LoopBuilder] = {}
LIBRARIES: dict[str, tuple[str, ...]] = {}
"""Model name → the modules its builder imports (for ``pytest.importorskip``)."""

BATCH, SEQ, DIM, HEADS, LAYERS, STEPS = 2, 16, 64, 4, 3, 8


_register = registrar(LOOP_MODELS, LIBRARIES)


def _linen_layer():
    import flax.linen as nn

    class EncoderLayer(nn.Module):
        """Pre-norm encoder layer; ``(x, None) -> (x, None)`` as ``nn.scan`` wants a body."""

        @nn.compact
        def __call__(self, x, _):
            h = nn.LayerNorm()(x)
            x = x + nn.MultiHeadDotProductAttention(num_heads=HEADS)(h)
            h = nn.Dense(DIM)(nn.gelu(nn.Dense(2 * DIM)(nn.LayerNorm()(x))))
            return x + h, None
    return EncoderLayer


@_register("flax")
def linen_scan_encoder(unrolled: bool = False):
    """``LAYERS`` encoder layers stacked by ``nn.scan`` (parameters with a leading layer axis);
    unrolled: the same parameters applied layer by layer in a Python loop."""
    import flax.linen as nn
    layer = _linen_layer()
    stack = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True},
                    length=LAYERS)()
    x = _normal(50, BATCH, SEQ, DIM)
    variables = dict(jax.jit(lambda key, x: stack.init(key, x, None))(jax.random.key(50), x))
    variables["params"] = randomize_constants(variables["params"], 50)
    if not unrolled:
        return (lambda variables, x: stack.apply(variables, x, None)[0]), (variables, x)

    def fn(variables, x):
        for i in range(LAYERS):
            layer_vars = jax.tree_util.tree_map(lambda p: p[i], variables)
            x = layer().apply(layer_vars, x, None)[0]
        return x
    return fn, (variables, x)


@_register("flax")
def nnx_scan_encoder(unrolled: bool = False):
    """``LAYERS`` nnx MLP blocks with LayerNorm, created with ``nnx.vmap`` and run with
    ``nnx.scan`` over the stacked state (the pattern of Flax's nnx scan guide)."""
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.norm = nnx.LayerNorm(DIM, rngs=rngs)
            self.up = nnx.Linear(DIM, 2 * DIM, rngs=rngs)
            self.down = nnx.Linear(2 * DIM, DIM, rngs=rngs)

        def __call__(self, x):
            return x + self.down(nnx.gelu(self.up(self.norm(x))))

    @nnx.vmap(in_axes=0, out_axes=0)
    def create(key):
        return Block(nnx.Rngs(key))
    graphdef, state = nnx.split(create(jax.random.split(jax.random.key(60), LAYERS)))
    state = randomize_constants(state, 60)
    x = _normal(61, BATCH, SEQ, DIM)

    def fn(state, x):
        blocks = nnx.merge(graphdef, state)

        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def run(x, block):
            return block(x)
        return run(x, blocks)

    if not unrolled:
        return fn, (state, x)
    block_def = nnx.split(Block(nnx.Rngs(0)))[0]

    def unrolled_fn(state, x):
        for i in range(LAYERS):
            x = nnx.merge(block_def, jax.tree_util.tree_map(lambda p: p[i], state))(x)
        return x
    return unrolled_fn, (state, x)


@_register("flax")
def linen_lstm(unrolled: bool = False):
    """``nn.RNN(nn.OptimizedLSTMCell)`` over ``SEQ`` steps; unrolled: the cell called step by
    step in a Python loop."""
    import flax.linen as nn
    rnn = nn.RNN(nn.OptimizedLSTMCell(DIM))
    x = _normal(70, BATCH, SEQ, DIM)
    variables = _linen_variables(rnn, x, 70)
    if not unrolled:
        return rnn.apply, (variables, x)
    cell = nn.OptimizedLSTMCell(DIM)

    def fn(variables, x):
        carry = cell.initialize_carry(jax.random.key(0), x[:, 0].shape)
        outputs = []
        for t in range(x.shape[1]):
            carry, y = cell.apply({"params": variables["params"]["cell"]}, carry, x[:, t])
            outputs.append(y)
        return jnp.stack(outputs, 1)
    return fn, (variables, x)


def _damped_step(c, w):
    """A step whose branch depends on the data: contract while the energy is large."""
    return lax.cond(jnp.mean(c * c) > 1.0, lambda c: jnp.tanh(c @ w) * 0.9,
                    lambda c: jax.nn.gelu(c @ w) + 0.1 * c, c)


@_register()
def fori_with_cond(unrolled: bool = False):
    """``STEPS`` iterations of ``lax.fori_loop`` whose body picks a branch by ``lax.cond`` on
    the carry's energy."""
    x, w = _normal(80, 32, DIM), _normal(81, DIM, DIM) * 0.2
    if not unrolled:
        return (lambda x, w: lax.fori_loop(0, STEPS, lambda i, c: _damped_step(c, w), x)), (x, w)

    def fn(x, w):
        for _ in range(STEPS):
            x = _damped_step(x, w)
        return x
    return fn, (x, w)


_BRANCHES = (lambda x: jax.nn.softmax(x * 2.0), lambda x: jax.nn.gelu(x) * x,
             lambda x: jnp.exp(-x * x) + jnp.tanh(x))


@_register()
def switch_branches(unrolled: bool = False):
    """``lax.switch`` among three elementwise/softmax branches, index an argument."""
    index, x = jnp.int32(1), _normal(90, 64, 128)
    if not unrolled:
        return (lambda index, x: lax.switch(index, _BRANCHES, x)), (index, x)
    return (lambda index, x: _BRANCHES[1](x)), (index, x)


def _newton(x, a):
    return 0.5 * (x + a / x)


@_register()
def while_converges(unrolled: bool = False):
    """Newton's square root by ``lax.while_loop`` until the mean squared residual is below
    1e-10 (at most 50 steps); unrolled: the 8 steps it takes on these inputs.

    Not ``max(|residual|) > tol``: XLA:CPU's vectorised max-reduction over 64x128 drops a NaN
    (jax 0.10.2: 3.399 where the NaN-propagating answer is NaN), so with a NaN input jax.jit's
    loop would run where lax's semantics (and our kernels) stop it. A mean is NaN either way."""
    a = jnp.abs(_normal(100, 64, 128)) + 0.5

    def loop(a):
        def cond(state):
            x, i = state
            return (jnp.mean(jnp.square(x * x - a)) > 1e-10) & (i < 50)
        return lax.while_loop(cond, lambda s: (_newton(s[0], a), s[1] + 1),
                              (jnp.ones_like(a), 0))[0]
    if not unrolled:
        return loop, (a,)

    def fn(a):
        x = jnp.ones_like(a)
        for _ in range(8):
            x = _newton(x, a)
        return x
    return fn, (a,)
