"""Building blocks shared by the model zoo: seeded parameters and plain-JAX layers.

Layouts are NHWC activations and HWIO kernels (NDHWC/DHWIO in 3-D), the layouts XLA:CPU
prefers. Parameters come from ``Params``, a seeded generator (numpy, so that building a
138M-parameter VGG takes a second, not a minute); nothing is downloaded. Each zoo module
imports what it needs with ``from .layers import ...`` and defines ``example() -> (fn, args)``.

Example:
    >>> import jax.numpy as jnp
    >>> from examples.layers import Params, conv_bn_params, conv_bn_act
    >>> p = conv_bn_params(Params(0), 3, 3, 3, 8)
    >>> conv_bn_act(p, jnp.ones((1, 16, 16, 3)), stride=2).shape
    (1, 8, 8, 8)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


class Params:
    """Seeded parameter generator: He-style normal weights, unit-ish norm statistics."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def normal(self, shape: Sequence[int], std: float) -> jax.Array:
        return jnp.asarray(self._rng.standard_normal(tuple(shape), np.float32) * np.float32(std))

    def uniform(self, shape: Sequence[int], low: float, high: float) -> jax.Array:
        return jnp.asarray(self._rng.uniform(low, high, tuple(shape)).astype(np.float32))

    def fan_in(self, shape: Sequence[int], fan_in: int) -> jax.Array:
        return self.normal(shape, float(np.sqrt(2.0 / max(fan_in, 1))))


# ------------------------------------------------------------------------------ parameters

def conv_params(gen: Params, kh: int, kw: int, cin: int, cout: int, groups: int = 1,
                bias: bool = False) -> dict:
    """A 2-D convolution kernel (HWIO, input channels divided by ``groups``), optional bias."""
    p = {"w": gen.fan_in((kh, kw, cin // groups, cout), kh * kw * cin // groups)}
    if bias:
        p["b"] = jnp.zeros((cout,), jnp.float32)
    return p


RESIDUAL_GAMMA = 0.2
"""Scale factor of the last batch norm of a residual branch ("zero-gamma" init, Goyal et al.
2017, damped rather than zero): each residual addition then grows the variance by ~4%, not 2x."""


def bn_params(gen: Params, channels: int, gamma: float = 1.0) -> dict:
    """Inference-mode batch norm: scale (times ``gamma``), shift, running mean and variance."""
    return {"scale": gen.uniform((channels,), 0.8, 1.2) * gamma,
            "shift": gen.normal((channels,), 0.05),
            "mean": gen.normal((channels,), 0.05), "var": gen.uniform((channels,), 0.8, 1.2)}


def conv_bn_params(gen: Params, kh: int, kw: int, cin: int, cout: int, groups: int = 1,
                   gamma: float = 1.0) -> dict:
    """A bias-free convolution followed by batch norm (``gamma``: see ``bn_params``)."""
    return {"conv": conv_params(gen, kh, kw, cin, cout, groups),
            "bn": bn_params(gen, cout, gamma)}


def dense_params(gen: Params, d_in: int, d_out: int, std: float | None = None) -> dict:
    """A dense layer ``x @ w + b``; ``std`` defaults to He initialisation."""
    w = gen.normal((d_in, d_out), std) if std is not None else gen.fan_in((d_in, d_out), d_in)
    return {"w": w, "b": jnp.zeros((d_out,), jnp.float32)}


def ln_params(dim: int) -> dict:
    """Layer norm scale (ones) and shift (zeros)."""
    return {"scale": jnp.ones((dim,), jnp.float32), "shift": jnp.zeros((dim,), jnp.float32)}


# ---------------------------------------------------------------------------------- layers

def conv2d(p: dict, x: jax.Array, stride: int = 1, padding: str | Sequence = "SAME",
           groups: int = 1, dilation: int = 1) -> jax.Array:
    """NHWC convolution with an HWIO kernel (grouped when ``groups`` > 1), plus bias if any."""
    y = lax.conv_general_dilated(x, p["w"], (stride, stride), padding,
                                 rhs_dilation=(dilation, dilation),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 feature_group_count=groups)
    return y + p["b"] if "b" in p else y


def conv3d(p: dict, x: jax.Array, stride: Sequence[int] = (1, 1, 1),
           padding: str = "SAME") -> jax.Array:
    """NDHWC convolution with a DHWIO kernel, plus bias if any."""
    y = lax.conv_general_dilated(x, p["w"], tuple(stride), padding,
                                 dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return y + p["b"] if "b" in p else y


def batch_norm(p: dict, x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Inference-mode batch norm over the last (channel) axis."""
    return (x - p["mean"]) * lax.rsqrt(p["var"] + eps) * p["scale"] + p["shift"]


def conv_bn_act(p: dict, x: jax.Array, stride: int = 1, groups: int = 1,
                act: Callable[[jax.Array], jax.Array] | None = jax.nn.relu,
                padding: str | Sequence = "SAME") -> jax.Array:
    """Convolution, batch norm, then an activation (None for none)."""
    y = batch_norm(p["bn"], conv2d(p["conv"], x, stride, padding, groups))
    return act(y) if act is not None else y


def dense(p: dict, x: jax.Array) -> jax.Array:
    """``x @ w + b`` over the last axis."""
    return x @ p["w"] + p["b"]


def layer_norm(p: dict, x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Layer norm over the last axis."""
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + eps) * p["scale"] + p["shift"]


def max_pool(x: jax.Array, window: int, stride: int, padding: str = "VALID") -> jax.Array:
    """2-D max pooling over NHWC."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                             (1, stride, stride, 1), padding)


def avg_pool(x: jax.Array, window: int, stride: int, padding: str = "VALID") -> jax.Array:
    """2-D average pooling over NHWC (padding counted as zeros)."""
    summed = lax.reduce_window(x, 0.0, lax.add, (1, window, window, 1),
                               (1, stride, stride, 1), padding)
    return summed / float(window * window)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes of NHWC (or NDHWC): (N, C)."""
    return x.mean(axis=tuple(range(1, x.ndim - 1)))


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
    """Nearest-neighbour upsampling of NHWC by an integer factor."""
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, factor, w, factor, c))
    return x.reshape(n, h * factor, w * factor, c)


def multi_head_attention(p: dict, x: jax.Array, heads: int, bias: jax.Array | None = None,
                         causal: bool = False) -> jax.Array:
    """Self-attention with fused-free q/k/v dense layers ``p['q'|'k'|'v'|'o']``.

    ``bias`` is added to the (batch, heads, query, key) scores (e.g. a padding mask);
    ``causal`` masks future keys.
    """
    b, s, d = x.shape
    split = lambda t: t.reshape(b, s, heads, d // heads).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = (split(dense(p[name], x)) for name in ("q", "k", "v"))
    scores = (q @ k.transpose(0, 1, 3, 2)) / np.sqrt(d // heads).astype(np.float32)
    if bias is not None:
        scores = scores + bias
    if causal:
        mask = jnp.tril(jnp.ones((s, s), bool))
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    context = jax.nn.softmax(scores, axis=-1) @ v
    return dense(p["o"], context.transpose(0, 2, 1, 3).reshape(b, s, d))


def attention_params(gen: Params, dim: int, std: float = 0.02) -> dict:
    """q, k, v and output projections of ``multi_head_attention``."""
    return {name: dense_params(gen, dim, dim, std) for name in ("q", "k", "v", "o")}


# ----------------------------------------------------------------------- BERT-style encoders

def bert_inputs(vocab: int, seq_len: int = 128, batch: int = 1,
                seed: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Random int32 token ids, segment ids (second half is segment 1) and a 0/1 mask whose
    last eighth is padding: the inputs of the zoo's BERT-style encoders."""
    ids = np.random.default_rng(seed).integers(0, vocab, (batch, seq_len))
    positions = np.arange(seq_len)
    segments = np.broadcast_to(positions >= seq_len // 2, (batch, seq_len))
    mask = np.broadcast_to(positions < seq_len - seq_len // 8, (batch, seq_len))
    return tuple(jnp.asarray(a, jnp.int32) for a in (ids, segments, mask))


def mask_bias(mask: jax.Array, dtype=jnp.float32) -> jax.Array:
    """BERT's additive attention bias from a (batch, key) 0/1 mask: (batch, 1, 1, key)."""
    return ((1.0 - mask.astype(dtype)) * -10000.0)[:, None, None, :]


def post_ln_layer_params(gen: Params, hidden: int, ffn: int, std: float) -> dict:
    """Parameters of ``post_ln_layer``: attention, two layer norms, the FFN's two dense layers."""
    return {"attn": attention_params(gen, hidden, std), "attn_ln": ln_params(hidden),
            "ffn_in": dense_params(gen, hidden, ffn, std),
            "ffn_out": dense_params(gen, ffn, hidden, std), "ffn_ln": ln_params(hidden)}


def bert_embeddings(emb: dict, input_ids: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """Token + learned position + segment embeddings (before the embedding norm)."""
    return (jnp.take(emb["token"], input_ids, axis=0)
            + emb["position"][: input_ids.shape[1]][None]
            + jnp.take(emb["segment"], segment_ids, axis=0))


def post_ln_layer(p: dict, x: jax.Array, bias: jax.Array, heads: int, eps: float,
                  approximate_gelu: bool = False) -> jax.Array:
    """One post-LN encoder layer: attention + residual + LN, GELU FFN + residual + LN.

    ``p`` holds ``attn`` (``attention_params``), ``attn_ln``, ``ffn_in``, ``ffn_out``, ``ffn_ln``.
    """
    x = layer_norm(p["attn_ln"], x + multi_head_attention(p["attn"], x, heads, bias), eps)
    h = jax.nn.gelu(dense(p["ffn_in"], x), approximate=approximate_gelu)
    return layer_norm(p["ffn_ln"], x + dense(p["ffn_out"], h), eps)
