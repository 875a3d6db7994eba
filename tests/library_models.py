"""Small models written with the model libraries' own modules: Flax (linen and nnx), Haiku,
Equinox and Optax, for ``test_libraries.py`` and ``benchmarks/libraries.py``.

``LIBRARY_MODELS`` maps a name to a zero-argument builder returning ``(fn, args)``; ``fn(*args)``
is a pure function of arrays and pytrees. Parameters are arguments, never closed over, so that
gradients with respect to them can be taken; only the modules' static structure (a linen
module, a Haiku ``apply``, an nnx graph definition, Equinox's static half) is closed over.

* ``INFERENCE`` models are ``fn(params, x) -> y``;
* ``TRAINING`` models are full Optax steps, ``fn(params, opt_state, x, labels) ->
  (new_params, new_opt_state, loss)`` with integer-label cross entropy;
* ``training_step(name)`` turns any inference model into an SGD-with-momentum step
  ``(params, opt_state, x, target) -> (params, opt_state, loss)`` on the mean squared error
  against a fixed target.

Weights come from fixed PRNG keys. Every parameter that a library initialises to a constant
(biases, norm scales, Haiku's zero-initialised layers) is given random values, and batch-norm
statistics are made non-trivial, so that a comparison against ``jax.jit`` is not vacuous.
Shapes are small: each model compiles and runs in well under two seconds on two CPU cores.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Builder = Callable[[], tuple[Callable, tuple]]
LIBRARY_MODELS: dict[str, Builder] = {}
INFERENCE: list[str] = []
TRAINING: list[str] = []
LIBRARIES: dict[str, tuple[str, ...]] = {}
"""Model name → the modules its builder imports (for ``pytest.importorskip``)."""

BATCH, SEQ, DIM, HEADS, CLASSES = 2, 16, 64, 4, 10


def registrar(models: dict, libraries: dict) -> Callable[..., Callable]:
    """``register(*modules)``: a decorator that files a model builder under its name in
    ``models``, with the modules it imports in ``libraries`` (for ``pytest.importorskip``)."""
    def register(*modules: str) -> Callable:
        def add(builder: Callable) -> Callable:
            models[builder.__name__] = builder
            libraries[builder.__name__] = modules
            return builder
        return add
    return register


_file = registrar(LIBRARY_MODELS, LIBRARIES)


def _register(kind: list[str], *libraries: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        kind.append(builder.__name__)
        return _file(*libraries)(builder)
    return add


def _normal(seed: int, *shape: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def randomize_constants(tree: Any, seed: int = 0, scale: float = 0.1) -> Any:
    """``tree`` with every float leaf whose elements are all equal (a zero bias, a unit scale)
    moved by ``scale`` times a standard normal: constant parameters hide wrong results."""
    rng = np.random.default_rng(seed)

    def leaf(x):
        if not jnp.issubdtype(x.dtype, jnp.floating) or x.size == 0:
            return x  # counters, keys
        value = np.asarray(x)  # numpy, not jnp: each eager jnp operation compiles a program
        if value.size > 1 and not np.all(value == value.reshape(-1)[0]):
            return x
        return jnp.asarray(value + scale * rng.standard_normal(value.shape), x.dtype)
    return jax.tree_util.tree_map(leaf, tree)


def _batch_stats(stats: Any, seed: int) -> Any:
    """Linen batch statistics with real values: means around 0, variances in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)

    def leaf(path, x):
        is_var = jax.tree_util.keystr(path).endswith("['var']")
        value = rng.uniform(0.5, 1.5, x.shape) if is_var else 0.2 * rng.standard_normal(x.shape)
        return jnp.asarray(value, x.dtype)
    return jax.tree_util.tree_map_with_path(leaf, stats)


# --------------------------------------------------------------------------------------------
# Flax linen
# --------------------------------------------------------------------------------------------

def _linen_variables(module, x, seed: int) -> dict:
    """Initialised linen variables (under jax.jit: an eager init compiles every operation),
    constant parameters randomised, batch statistics given real values."""
    variables = dict(jax.jit(module.init)(jax.random.key(seed), x))
    variables["params"] = randomize_constants(variables["params"], seed)
    if "batch_stats" in variables:
        variables["batch_stats"] = _batch_stats(variables["batch_stats"], seed + 1)
    return variables


@_register(INFERENCE, "flax")
def linen_resnet_block():
    """Linen ResNet basic block: Conv-BN-relu-Conv-BN, identity shortcut, relu (inference BN)."""
    import flax.linen as nn

    class ResNetBlock(nn.Module):
        @nn.compact
        def __call__(self, x):
            y = nn.Conv(16, (3, 3), use_bias=False)(x)
            y = nn.relu(nn.BatchNorm(use_running_average=True)(y))
            y = nn.Conv(16, (3, 3), use_bias=False)(y)
            y = nn.BatchNorm(use_running_average=True)(y)
            return nn.relu(x + y)

    module, x = ResNetBlock(), _normal(1, BATCH, 16, 16, 16)
    return module.apply, (_linen_variables(module, x, 10), x)


@_register(INFERENCE, "flax")
def linen_mobilenet():
    """Linen MobileNet-v1-style: a strided stem, two depthwise-separable blocks (depthwise conv
    by ``feature_group_count``, BN, relu6, pointwise conv, BN, relu6), global pool, classifier."""
    import flax.linen as nn

    def conv_bn(x, features, kernel, strides=1, groups=1):
        x = nn.Conv(features, kernel, strides=strides, feature_group_count=groups,
                    use_bias=False)(x)
        return nn.relu6(nn.BatchNorm(use_running_average=True)(x))

    class MobileNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = conv_bn(x, 16, (3, 3), strides=2)
            for features, strides in ((32, 1), (64, 2)):
                x = conv_bn(x, x.shape[-1], (3, 3), strides=strides, groups=x.shape[-1])
                x = conv_bn(x, features, (1, 1))
            return nn.Dense(CLASSES)(jnp.mean(x, axis=(1, 2)))

    module, x = MobileNet(), _normal(2, BATCH, 32, 32, 3)
    return module.apply, (_linen_variables(module, x, 20), x)


@_register(INFERENCE, "flax")
def linen_transformer():
    """Linen post-norm transformer encoder layer: self-attention, LayerNorm, gelu MLP."""
    import flax.linen as nn

    class EncoderLayer(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.LayerNorm()(x + nn.MultiHeadDotProductAttention(num_heads=HEADS)(x))
            y = nn.Dense(DIM)(nn.gelu(nn.Dense(2 * DIM)(x)))
            return nn.LayerNorm()(x + y)

    module, x = EncoderLayer(), _normal(3, BATCH, SEQ, DIM)
    return module.apply, (_linen_variables(module, x, 30), x)


# --------------------------------------------------------------------------------------------
# Flax nnx: split once, merge inside ``fn`` so the state is an argument
# --------------------------------------------------------------------------------------------

@_register(INFERENCE, "flax")
def nnx_transformer():
    """The same encoder layer in nnx; ``fn(state, x)`` merges the graph definition with the
    state passed in, so the function is pure."""
    from flax import nnx

    class EncoderLayer(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.attention = nnx.MultiHeadAttention(HEADS, DIM, decode=False, keep_rngs=False,
                                                    rngs=rngs)
            self.norm1, self.norm2 = nnx.LayerNorm(DIM, rngs=rngs), nnx.LayerNorm(DIM, rngs=rngs)
            self.up, self.down = nnx.Linear(DIM, 2 * DIM, rngs=rngs), nnx.Linear(2 * DIM, DIM,
                                                                                rngs=rngs)

        def __call__(self, x):
            x = self.norm1(x + self.attention(x))
            return self.norm2(x + self.down(nnx.gelu(self.up(x))))

    graphdef, state = nnx.split(EncoderLayer(nnx.Rngs(40)))

    def fn(state, x):
        return nnx.merge(graphdef, state)(x)
    return fn, (randomize_constants(state, 40), _normal(4, BATCH, SEQ, DIM))


# --------------------------------------------------------------------------------------------
# Equinox: partition into arrays (the argument) and static structure (closed over)
# --------------------------------------------------------------------------------------------

def _equinox_fn(model, call: Callable) -> tuple[Callable, Any]:
    import equinox as eqx
    params, static = eqx.partition(model, eqx.is_inexact_array)
    return (lambda params, x: call(eqx.combine(params, static), x)), randomize_constants(params)


@_register(INFERENCE, "equinox")
def equinox_mlp_vmap():
    """``eqx.nn.MLP`` (3 hidden layers of 64, gelu) mapped over a batch of 64 by ``jax.vmap``."""
    import equinox as eqx
    mlp = eqx.nn.MLP(32, CLASSES, 64, 3, activation=jax.nn.gelu, key=jax.random.key(50))
    fn, params = _equinox_fn(mlp, lambda model, x: jax.vmap(model)(x))
    return fn, (params, _normal(5, 64, 32))


@_register(INFERENCE, "equinox")
def equinox_attention():
    """Pre-norm self-attention: ``eqx.nn.LayerNorm`` vmapped over tokens, then
    ``eqx.nn.MultiheadAttention`` (with biases), residual; vmapped over the batch."""
    import equinox as eqx

    class Block(eqx.Module):
        norm: eqx.nn.LayerNorm
        attention: eqx.nn.MultiheadAttention

        def __call__(self, x):
            y = jax.vmap(self.norm)(x)
            return x + self.attention(y, y, y)

    block = Block(eqx.nn.LayerNorm(DIM), eqx.nn.MultiheadAttention(
        HEADS, DIM, use_query_bias=True, use_key_bias=True, use_value_bias=True,
        use_output_bias=True, key=jax.random.key(60)))
    fn, params = _equinox_fn(block, lambda model, x: jax.vmap(model)(x))
    return fn, (params, _normal(6, BATCH, SEQ, DIM))


# --------------------------------------------------------------------------------------------
# Haiku: hk.transform(_with_state), then .apply with the parameters as an argument
# --------------------------------------------------------------------------------------------

@_register(INFERENCE, "haiku")
def haiku_cnn():
    """Haiku CNN: Conv2D-BatchNorm-relu-max_pool, Conv2D-LayerNorm-relu-avg_pool, Linear. The
    batch-norm state comes from one training-mode pass; ``fn({"params", "state"}, x)``."""
    import haiku as hk

    def forward(x, is_training):
        x = hk.Conv2D(16, 3)(x)
        x = jax.nn.relu(hk.BatchNorm(True, True, 0.9)(x, is_training=is_training))
        x = hk.max_pool(x, window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1), padding="VALID")
        x = hk.Conv2D(32, 3)(x)
        x = jax.nn.relu(hk.LayerNorm(-1, create_scale=True, create_offset=True)(x))
        x = hk.avg_pool(x, window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1), padding="VALID")
        return hk.Linear(CLASSES)(hk.Flatten()(x))

    model = hk.transform_with_state(forward)
    x = _normal(7, BATCH, 16, 16, 3)
    params, state = jax.jit(model.init, static_argnums=2)(jax.random.key(70), x, True)
    params = randomize_constants(params, 70)
    # one training-mode pass gives the batch norm real running statistics
    _, state = jax.jit(model.apply, static_argnums=4)(params, state, None, 2.0 * x + 0.5, True)

    def fn(variables, x):
        return model.apply(variables["params"], variables["state"], None, x, False)[0]
    return fn, ({"params": params, "state": state}, x)


def _haiku_block(x):
    """A Haiku post-norm transformer block (used by the inference model and the classifier)."""
    import haiku as hk
    attention = hk.MultiHeadAttention(HEADS, DIM // HEADS, w_init=hk.initializers.VarianceScaling())
    x = hk.LayerNorm(-1, True, True)(x + attention(x, x, x))
    y = hk.Linear(DIM)(jax.nn.gelu(hk.Linear(2 * DIM)(x)))
    return hk.LayerNorm(-1, True, True)(x + y)


@_register(INFERENCE, "haiku")
def haiku_transformer():
    """Haiku transformer block: ``hk.MultiHeadAttention``, ``hk.LayerNorm``, ``hk.Linear``."""
    import haiku as hk
    model = hk.without_apply_rng(hk.transform(_haiku_block))
    x = _normal(8, BATCH, SEQ, DIM)
    return model.apply, (randomize_constants(jax.jit(model.init)(jax.random.key(80), x), 80), x)


# --------------------------------------------------------------------------------------------
# Optax training steps
# --------------------------------------------------------------------------------------------

def _optax_step(apply: Callable, optimizer) -> Callable:
    """One step of ``optimizer`` on the mean integer-label cross entropy of ``apply``."""
    import optax

    def loss_fn(params, x, labels):
        logits = apply(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def step(params, opt_state, x, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
    return step


def _warm_up(step: Callable, params, opt_state, x, target, steps: int = 3):
    """A few ``jax.jit`` steps first: Adam's first step is about lr * sign(g), which turns
    rounding differences in near-zero gradients into lr-sized parameter differences."""
    jitted = jax.jit(step)
    for _ in range(steps):
        params, opt_state, _ = jitted(params, opt_state, x, target)
    return params, opt_state


def _labels(seed: int, n: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).integers(0, CLASSES, n), jnp.int32)


@_register(TRAINING, "haiku", "optax")
def haiku_transformer_adam():
    """Haiku transformer classifier (block, mean over tokens, Linear) trained by optax.adam."""
    import haiku as hk
    import optax

    def classifier(x):
        return hk.Linear(CLASSES)(jnp.mean(_haiku_block(x), axis=1))

    model = hk.without_apply_rng(hk.transform(classifier))
    x, labels = _normal(9, BATCH, SEQ, DIM), _labels(9, BATCH)
    params = randomize_constants(jax.jit(model.init)(jax.random.key(90), x), 90)
    # The key projection's bias cannot change the attention (softmax is shift-invariant): its
    # gradient is rounding noise (~1e-10), and Adam's m / (sqrt(v) + eps) with the default
    # eps = 1e-8 turns noise into lr-sized steps that differ between any two compilers.
    optimizer = optax.adam(1e-3, eps=1e-6)
    step = _optax_step(model.apply, optimizer)
    params, opt_state = _warm_up(step, params, optimizer.init(params), x, labels)
    return step, (params, opt_state, x, labels)


@_register(TRAINING, "flax", "optax")
def linen_cnn_adamw():
    """Flax linen CNN (Conv-relu-avg_pool, Conv-relu-max_pool, Dense) trained by optax.adamw."""
    import flax.linen as nn
    import optax

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.avg_pool(nn.relu(nn.Conv(8, (3, 3))(x)), (2, 2), strides=(2, 2))
            x = nn.max_pool(nn.relu(nn.Conv(16, (3, 3))(x)), (2, 2), strides=(2, 2))
            return nn.Dense(CLASSES)(x.reshape(x.shape[0], -1))

    module = CNN()
    x, labels = _normal(10, 4, 16, 16, 3), _labels(10, 4)
    params = _linen_variables(module, x, 100)["params"]
    optimizer = optax.adamw(1e-3, weight_decay=1e-2)
    step = _optax_step(lambda p, x: module.apply({"params": p}, x), optimizer)
    params, opt_state = _warm_up(step, params, optimizer.init(params), x, labels)
    return step, (params, opt_state, x, labels)


def training_step(name: str) -> tuple[Callable, tuple]:
    """An SGD-with-momentum step of inference model ``name`` on the mean squared error against
    a fixed random target: ``(step, (params, opt_state, x, target))``, ``step`` returning
    ``(params, opt_state, loss)``. Every float leaf of the model's first argument is trained
    (batch-norm statistics included: to the loss they are just numbers); other leaves (Haiku's
    integer moving-average counters) pass through unchanged."""
    import optax
    fn, (params, x) = LIBRARY_MODELS[name]()
    target = _normal(11, *jax.eval_shape(fn, params, x).shape)
    optimizer = optax.sgd(1e-2, momentum=0.9)

    def split(params):
        leaves, treedef = jax.tree_util.tree_flatten(params)
        floats = [i for i, leaf in enumerate(leaves) if jnp.issubdtype(leaf.dtype, jnp.floating)]
        def join(trained):
            merged = list(leaves)
            for i, leaf in zip(floats, trained):
                merged[i] = leaf
            return jax.tree_util.tree_unflatten(treedef, merged)
        return [leaves[i] for i in floats], join

    def step(params, opt_state, x, target):
        trained, join = split(params)
        loss_fn = lambda trained: jnp.mean((fn(join(trained), x) - target) ** 2)  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(trained)
        updates, opt_state = optimizer.update(grads, opt_state, trained)
        return join(optax.apply_updates(trained, updates)), opt_state, loss
    # a warmed-up momentum buffer, so the step's optimizer state is not all zeros
    opt_state = optimizer.init(split(params)[0])
    params, opt_state = _warm_up(step, params, opt_state, x, target, steps=1)
    return step, (params, opt_state, x, target)
