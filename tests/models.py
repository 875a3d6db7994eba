"""Small but architecturally faithful plain-JAX models for end-to-end correctness tests.

Every entry of ``MODELS`` is a zero-argument builder returning ``(fn, args)``: ``fn(*args)`` is
the forward pass (pure JAX: ``jax.numpy``, ``jax.nn``, ``jax.lax``), ``args`` a tuple of
arrays and parameter pytrees. Weights are random and generated here; nothing is downloaded.
Shapes are kept small so that one forward pass compiles and runs in well under a second on
two CPU cores.

``EXPECTED_OPAQUE`` names, per model, primitives that must survive tracing and rewriting as
Opaque (unfused) nodes: control flow (whose bodies the report lists as loops), sorting and
random number generation.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Builder = Callable[[], tuple[Callable, tuple]]


# --------------------------------------------------------------------------------------------
# helpers: deterministic random parameters
# --------------------------------------------------------------------------------------------

class _Init:
    """Hands out deterministic random float32/int32 arrays (numpy generator: no compilation)."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def normal(self, shape: tuple[int, ...], scale: float | None = None) -> jax.Array:
        """Gaussian weights; default scale 1/sqrt(fan_in) with fan_in the product of all but the last dim."""
        if scale is None:
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
            scale = 1.0 / math.sqrt(max(fan_in, 1))
        return jnp.asarray(scale * self._rng.standard_normal(shape), jnp.float32)

    def uniform(self, shape: tuple[int, ...], low: float, high: float) -> jax.Array:
        return jnp.asarray(self._rng.uniform(low, high, shape), jnp.float32)

    def ints(self, shape: tuple[int, ...], high: int) -> jax.Array:
        return jnp.asarray(self._rng.integers(0, high, shape), jnp.int32)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-5) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + eps) * scale + bias


def rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-6) -> jax.Array:
    return x * lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def dense(x: jax.Array, p: dict) -> jax.Array:
    return x @ p["w"] + p["b"]


def _dense_params(init: _Init, d_in: int, d_out: int) -> dict:
    return {"w": init.normal((d_in, d_out)), "b": init.normal((d_out,), 0.02)}


def _ln_params(init: _Init, d: int) -> dict:
    return {"scale": 1.0 + init.normal((d,), 0.1), "bias": init.normal((d,), 0.1)}


# --------------------------------------------------------------------------------------------
# transformer encoder block: masked multi-head self-attention, layer norm, GELU MLP, residuals
# --------------------------------------------------------------------------------------------

def multi_head_attention(x: jax.Array, p: dict, num_heads: int,
                         mask: jax.Array | None = None) -> jax.Array:
    """Self-attention; ``mask`` broadcasts against (batch, heads, query, key), True = attend."""
    batch, seq, d_model = x.shape
    head_dim = d_model // num_heads

    def split_heads(t: jax.Array) -> jax.Array:
        return t.reshape(batch, seq, num_heads, head_dim).transpose(0, 2, 1, 3)

    q, k, v = (split_heads(dense(x, p[name])) for name in ("q", "k", "v"))
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(head_dim)
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    ctx = jnp.einsum("bhqk,bhkd->bhqd", weights, v)
    ctx = ctx.transpose(0, 2, 1, 3).reshape(batch, seq, d_model)
    return dense(ctx, p["o"])


def _attention_params(init: _Init, d_model: int) -> dict:
    return {name: _dense_params(init, d_model, d_model) for name in ("q", "k", "v", "o")}


def encoder_block(x: jax.Array, mask: jax.Array, p: dict, *, num_heads: int,
                  approximate_gelu: bool) -> jax.Array:
    """Post-LN (BERT-style) encoder block; ``mask`` is (batch, seq) with 1 for real tokens."""
    attn_mask = mask[:, None, None, :] > 0.5
    h = layer_norm(x + multi_head_attention(x, p["attn"], num_heads, attn_mask),
                   p["ln1"]["scale"], p["ln1"]["bias"])
    ff = dense(jax.nn.gelu(dense(h, p["ff1"]), approximate=approximate_gelu), p["ff2"])
    return layer_norm(h + ff, p["ln2"]["scale"], p["ln2"]["bias"])


def _encoder_params(init: _Init, d_model: int, d_ff: int) -> dict:
    return {"attn": _attention_params(init, d_model), "ln1": _ln_params(init, d_model),
            "ff1": _dense_params(init, d_model, d_ff), "ff2": _dense_params(init, d_ff, d_model),
            "ln2": _ln_params(init, d_model)}


def _encoder_builder(approximate_gelu: bool) -> Builder:
    def build() -> tuple[Callable, tuple]:
        init = _Init(1 if approximate_gelu else 0)
        batch, seq, d_model, d_ff = 2, 8, 32, 64
        x = init.normal((batch, seq, d_model), 1.0)
        mask = jnp.array([[1.0] * seq, [1.0] * 5 + [0.0] * (seq - 5)], jnp.float32)
        params = _encoder_params(init, d_model, d_ff)

        def transformer_encoder(x, mask, params):
            return encoder_block(x, mask, params, num_heads=4, approximate_gelu=approximate_gelu)

        return transformer_encoder, (x, mask, params)
    return build


# --------------------------------------------------------------------------------------------
# mini-BERT: token/position/segment embeddings by gather, 2 encoder layers, pooler, MLM head
# --------------------------------------------------------------------------------------------

def build_mini_bert() -> tuple[Callable, tuple]:
    init = _Init(2)
    vocab, max_len, types, d_model, d_ff, batch, seq = 50, 16, 2, 32, 64, 2, 10
    params = {
        "embeddings": {"word": init.normal((vocab, d_model), 0.5),
                       "position": init.normal((max_len, d_model), 0.1),
                       "token_type": init.normal((types, d_model), 0.1),
                       "ln": _ln_params(init, d_model)},
        "layers": [_encoder_params(init, d_model, d_ff) for _ in range(2)],
        "pooler": _dense_params(init, d_model, d_model),
        "mlm": {"transform": _dense_params(init, d_model, d_model),
                "ln": _ln_params(init, d_model),
                "bias": init.normal((vocab,), 0.02)},
    }
    input_ids = init.ints((batch, seq), vocab)
    token_type_ids = jnp.concatenate([jnp.zeros((batch, seq // 2), jnp.int32),
                                      jnp.ones((batch, seq - seq // 2), jnp.int32)], axis=1)
    attention_mask = jnp.array([[1] * seq, [1] * 7 + [0] * (seq - 7)], jnp.int32)

    def mini_bert(params, input_ids, token_type_ids, attention_mask):
        emb = params["embeddings"]
        positions = jnp.arange(input_ids.shape[1])
        h = (jnp.take(emb["word"], input_ids, axis=0)          # gather via take
             + emb["position"][positions][None]                  # gather via indexing
             + emb["token_type"][token_type_ids])
        h = layer_norm(h, emb["ln"]["scale"], emb["ln"]["bias"], eps=1e-12)
        mask = attention_mask.astype(jnp.float32)
        for layer in params["layers"]:
            h = encoder_block(h, mask, layer, num_heads=4, approximate_gelu=False)
        pooled = jnp.tanh(dense(h[:, 0], params["pooler"]))
        mlm = params["mlm"]
        t = jax.nn.gelu(dense(h, mlm["transform"]), approximate=False)
        t = layer_norm(t, mlm["ln"]["scale"], mlm["ln"]["bias"], eps=1e-12)
        logits = t @ emb["word"].T + mlm["bias"]                # tied output embedding
        predictions = jnp.argmax(logits, axis=-1)
        return {"pooled": pooled, "logits": logits, "predictions": predictions}

    return mini_bert, (params, input_ids, token_type_ids, attention_mask)


# --------------------------------------------------------------------------------------------
# GPT-style causal block: RMS norm, causal mask, SwiGLU MLP with SiLU, tied LM head
# --------------------------------------------------------------------------------------------

def causal_attention(x: jax.Array, p: dict, num_heads: int) -> jax.Array:
    """nanoGPT-style causal attention: heads split by transpose, scores as q @ k^T."""
    batch, seq, d_model = x.shape
    head_dim = d_model // num_heads
    q, k, v = (dense(x, p[name]).reshape(batch, seq, num_heads, head_dim).transpose(0, 2, 1, 3)
               for name in ("q", "k", "v"))
    scores = (q @ jnp.swapaxes(k, -2, -1)) * (1.0 / math.sqrt(head_dim))   # transpose of transpose
    causal = jnp.tril(jnp.ones((seq, seq), bool))
    scores = jnp.where(causal[None, None], scores, -jnp.inf)
    ctx = jax.nn.softmax(scores, axis=-1) @ v
    return dense(ctx.transpose(0, 2, 1, 3).reshape(batch, seq, d_model), p["o"])


def build_gpt_block() -> tuple[Callable, tuple]:
    init = _Init(3)
    vocab, batch, seq, d_model, d_ff, heads = 40, 2, 12, 32, 64, 4
    params = {
        "wte": init.normal((vocab, d_model), 0.5),
        "norm1": 1.0 + init.normal((d_model,), 0.1),
        "attn": _attention_params(init, d_model),
        "norm2": 1.0 + init.normal((d_model,), 0.1),
        "w_gate": init.normal((d_model, d_ff)),
        "w_up": init.normal((d_model, d_ff)),
        "w_down": init.normal((d_ff, d_model)),
        "norm_f": 1.0 + init.normal((d_model,), 0.1),
    }
    tokens = init.ints((batch, seq), vocab)

    def gpt_block(params, tokens):
        x = params["wte"][tokens]
        x = x + causal_attention(rms_norm(x, params["norm1"]), params["attn"], heads)
        h = rms_norm(x, params["norm2"])
        x = x + (jax.nn.silu(h @ params["w_gate"]) * (h @ params["w_up"])) @ params["w_down"]
        logits = rms_norm(x, params["norm_f"]) @ params["wte"].T
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        next_token_nll = -jnp.take_along_axis(log_probs[:, :-1], tokens[:, 1:, None], axis=-1)
        return logits, jnp.mean(next_token_nll)

    return gpt_block, (params, tokens)


# --------------------------------------------------------------------------------------------
# CNN: conv + batch norm (inference) + relu + max pool, conv + bn + relu + avg pool, dense head
# --------------------------------------------------------------------------------------------

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv2d(x: jax.Array, w: jax.Array, stride: int = 1, groups: int = 1,
           padding: str = "SAME") -> jax.Array:
    return lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=_NHWC,
                                    feature_group_count=groups)


def batch_norm(x: jax.Array, p: dict, eps: float = 1e-5) -> jax.Array:
    """Inference-form batch norm over the channel (last) axis."""
    return (x - p["mean"]) * lax.rsqrt(p["var"] + eps) * p["scale"] + p["shift"]


def _bn_params(init: _Init, c: int) -> dict:
    return {"mean": init.normal((c,), 0.1), "var": init.uniform((c,), 0.5, 1.5),
            "scale": 1.0 + init.normal((c,), 0.1), "shift": init.normal((c,), 0.1)}


def max_pool(x: jax.Array, size: int = 2) -> jax.Array:
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, size, size, 1), (1, size, size, 1), "VALID")


def avg_pool(x: jax.Array, size: int = 2) -> jax.Array:
    summed = lax.reduce_window(x, 0.0, lax.add, (1, size, size, 1), (1, size, size, 1), "VALID")
    return summed / (size * size)


def build_cnn() -> tuple[Callable, tuple]:
    init = _Init(4)
    params = {
        "conv1": init.normal((3, 3, 3, 8)), "bn1": _bn_params(init, 8),
        "conv2": init.normal((3, 3, 8, 16)), "bn2": _bn_params(init, 16),
        "head": _dense_params(init, 16, 10),
    }
    images = init.normal((2, 16, 16, 3), 1.0)

    def cnn(params, images):
        h = max_pool(jax.nn.relu(batch_norm(conv2d(images, params["conv1"]), params["bn1"])))
        h = avg_pool(jax.nn.relu(batch_norm(conv2d(h, params["conv2"]), params["bn2"])))
        features = jnp.mean(h, axis=(1, 2))
        return jax.nn.log_softmax(dense(features, params["head"]))

    return cnn, (params, images)


# --------------------------------------------------------------------------------------------
# MobileNet-style block: depthwise conv (feature_group_count=C), squeeze-excite, pointwise conv
# --------------------------------------------------------------------------------------------

def build_mobilenet_block() -> tuple[Callable, tuple]:
    init = _Init(5)
    c, c_exp = 8, 32
    params = {
        "expand": init.normal((1, 1, c, c_exp)), "bn0": _bn_params(init, c_exp),
        "depthwise": init.normal((3, 3, 1, c_exp), 1.0 / 3.0), "bn1": _bn_params(init, c_exp),
        "se_reduce": _dense_params(init, c_exp, 8), "se_expand": _dense_params(init, 8, c_exp),
        "project": init.normal((1, 1, c_exp, c)), "bn2": _bn_params(init, c),
    }
    x = init.normal((2, 12, 12, c), 1.0)

    def mobilenet_block(x, params):
        h = jax.nn.relu6(batch_norm(conv2d(x, params["expand"]), params["bn0"]))
        h = conv2d(h, params["depthwise"], groups=c_exp)              # depthwise
        h = jax.nn.hard_swish(batch_norm(h, params["bn1"]))
        se = jnp.mean(h, axis=(1, 2))
        se = jax.nn.sigmoid(dense(jax.nn.relu(dense(se, params["se_reduce"])), params["se_expand"]))
        h = h * se[:, None, None, :]
        h = batch_norm(conv2d(h, params["project"]), params["bn2"])
        return x + h

    return mobilenet_block, (x, params)


# --------------------------------------------------------------------------------------------
# ResNeXt-style block: grouped conv (4 groups), group norm, strided downsample, residual
# --------------------------------------------------------------------------------------------

def group_norm(x: jax.Array, groups: int, scale: jax.Array, bias: jax.Array,
               eps: float = 1e-5) -> jax.Array:
    n, h, w, c = x.shape
    g = x.reshape(n, h * w, c).reshape(n, h * w, groups, c // groups)  # flatten, then group
    mean = jnp.mean(g, axis=(1, 3), keepdims=True)
    var = jnp.var(g, axis=(1, 3), keepdims=True)
    g = (g - mean) / jnp.sqrt(var + eps)
    return g.reshape(n, h, w, c) * scale + bias


def build_resnext_block() -> tuple[Callable, tuple]:
    init = _Init(6)
    c_in, width, c_out = 8, 16, 16
    params = {
        "reduce": init.normal((1, 1, c_in, width)), "gn1": _ln_params(init, width),
        "grouped": init.normal((3, 3, width // 4, width)), "gn2": _ln_params(init, width),
        "expand": init.normal((1, 1, width, c_out)), "gn3": _ln_params(init, c_out),
        "shortcut": init.normal((1, 1, c_in, c_out)),
    }
    x = init.normal((2, 12, 12, c_in), 1.0)

    def resnext_block(x, params):
        gn = lambda t, p: group_norm(t, 4, p["scale"], p["bias"])  # noqa: E731
        h = jax.nn.relu(gn(conv2d(x, params["reduce"]), params["gn1"]))
        h = jax.nn.relu(gn(conv2d(h, params["grouped"], stride=2, groups=4), params["gn2"]))
        h = gn(conv2d(h, params["expand"]), params["gn3"])
        shortcut = conv2d(x, params["shortcut"], stride=2)
        return jax.nn.relu(h + shortcut)

    return resnext_block, (x, params)


# --------------------------------------------------------------------------------------------
# LSTM over a sequence with lax.scan (the scan must stay one Opaque node), dense head
# --------------------------------------------------------------------------------------------

def build_lstm() -> tuple[Callable, tuple]:
    init = _Init(7)
    seq, batch, d_in, hidden, classes = 10, 2, 8, 16, 5
    params = {"w_x": init.normal((d_in, 4 * hidden)), "w_h": init.normal((hidden, 4 * hidden)),
              "b": init.normal((4 * hidden,), 0.1), "head": _dense_params(init, hidden, classes)}
    xs = init.normal((seq, batch, d_in), 1.0)

    def lstm(params, xs):
        x_proj = xs @ params["w_x"] + params["b"]       # input projection hoisted out of the loop

        def cell(carry, x_t):
            h, c = carry
            gates = x_t + h @ params["w_h"]
            i, f, g, o = jnp.split(gates, 4, axis=-1)
            c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((xs.shape[1], hidden), xs.dtype)
        (h_last, c_last), hs = lax.scan(cell, (zeros, zeros), x_proj)
        logits = dense(h_last, params["head"])
        return {"logits": logits, "hidden_states": hs, "cell": c_last}

    return lstm, (params, xs)


# --------------------------------------------------------------------------------------------
# MLP-Mixer block: token mixing through transposes, channel mixing
# --------------------------------------------------------------------------------------------

def build_mlp_mixer() -> tuple[Callable, tuple]:
    init = _Init(8)
    batch, image, patch, channels, d_model, tokens_hidden, channels_hidden, classes = \
        2, 16, 4, 3, 32, 24, 64, 10
    num_tokens = (image // patch) ** 2
    params = {
        "stem": init.normal((patch, patch, channels, d_model)),
        "ln1": _ln_params(init, d_model),
        "token1": _dense_params(init, num_tokens, tokens_hidden),
        "token2": _dense_params(init, tokens_hidden, num_tokens),
        "ln2": _ln_params(init, d_model),
        "channel1": _dense_params(init, d_model, channels_hidden),
        "channel2": _dense_params(init, channels_hidden, d_model),
        "ln_f": _ln_params(init, d_model),
        "head": _dense_params(init, d_model, classes),
    }
    images = init.normal((batch, image, image, channels), 1.0)

    def mlp_mixer(params, images):
        x = conv2d(images, params["stem"], stride=patch, padding="VALID")   # patch embedding
        x = x.reshape(batch, num_tokens, d_model)
        y = layer_norm(x, **params["ln1"])
        y = jnp.transpose(y, (0, 2, 1))                                     # (B, C, T)
        y = dense(jax.nn.gelu(dense(y, params["token1"])), params["token2"])
        x = x + jnp.swapaxes(y, 1, 2)
        y = layer_norm(x, **params["ln2"])
        x = x + dense(jax.nn.gelu(dense(y, params["channel1"])), params["channel2"])
        x = layer_norm(x, **params["ln_f"])
        return dense(jnp.mean(x, axis=1), params["head"])

    return mlp_mixer, (params, images)


# --------------------------------------------------------------------------------------------
# function transformations inside the model: jax.checkpoint, nested jax.jit, custom_jvp/vjp
# --------------------------------------------------------------------------------------------

@jax.custom_jvp
def safe_norm(x: jax.Array) -> jax.Array:
    """Euclidean norm over the last axis whose derivative is 0 (not NaN) at the origin."""
    return jnp.sqrt(jnp.sum(x * x, axis=-1))


@safe_norm.defjvp
def _safe_norm_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    norm = safe_norm(x)
    safe = jnp.where(norm > 0, norm, 1.0)
    return norm, jnp.where(norm > 0, jnp.sum(x * t, axis=-1) / safe, 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def clip_gradient(x: jax.Array, bound: float) -> jax.Array:
    """Identity going forward; clips the cotangent to [-bound, bound] going backward."""
    return x


def _clip_fwd(x, bound):
    return x, None


def _clip_bwd(bound, _, g):
    return (jnp.clip(g, -bound, bound),)


clip_gradient.defvjp(_clip_fwd, _clip_bwd)


@jax.custom_jvp
def softplus(x: jax.Array) -> jax.Array:
    return jnp.logaddexp(x, 0.0)


softplus.defjvps(lambda t, ans, x: t * jax.nn.sigmoid(x))


@jax.jit
def _nested_jit_mlp(x: jax.Array, w1: jax.Array, w2: jax.Array) -> jax.Array:
    return jnp.tanh(x @ w1) @ w2


def build_transforms_model() -> tuple[Callable, tuple]:
    init = _Init(9)
    d = 16
    params = {"w1": init.normal((d, 2 * d)), "w2": init.normal((2 * d, d)),
              "w3": init.normal((d, d)), "w4": init.normal((d, d)), "scale": init.normal((d,), 1.0)}
    x = init.normal((4, d), 1.0)

    @jax.checkpoint
    def remat_block(h, w):
        return jax.nn.gelu(h @ w) + h

    def transforms_model(x, params):
        h = remat_block(x, params["w3"])
        h = _nested_jit_mlp(h, params["w1"], params["w2"])
        h = jax.jit(lambda a, b: softplus(a @ b))(h, params["w4"])    # jit of a lambda
        h = clip_gradient(h * params["scale"], 0.1)
        norms = safe_norm(h)
        # straight-through estimator: rounds going forward, identity going backward
        quantised = h + lax.stop_gradient(jnp.round(h * 4.0) / 4.0 - h)
        return {"norms": norms, "out": quantised * norms[:, None]}

    return transforms_model, (x, params)


# --------------------------------------------------------------------------------------------
# control flow: lax.cond, lax.while_loop (bounded Newton iterations), fori_loop
# --------------------------------------------------------------------------------------------

def build_control_flow() -> tuple[Callable, tuple]:
    init = _Init(10)
    x = init.normal((6, 8), 1.0)
    w = init.normal((8, 8))

    def control_flow(x, w):
        h = x @ w
        # cond on data: one branch normalises, the other rescales
        h = lax.cond(jnp.sum(h) > 0.0,
                     lambda t: t / (1.0 + jnp.abs(t)),
                     lambda t: jnp.tanh(t) * 2.0,
                     h)
        # Newton iterations for sqrt(a): stop on convergence or after 20 steps
        a = jnp.square(h) + 1.0

        def keep_going(state):
            i, _, err = state
            return (i < 20) & (err > 1e-6)

        def newton(state):
            i, y, _ = state
            y_next = 0.5 * (y + a / y)
            return i + 1, y_next, jnp.max(jnp.abs(y_next - y))

        steps, root, _ = lax.while_loop(keep_going, newton, (0, a, jnp.float32(jnp.inf)))
        # a fori_loop with a static trip count (becomes a scan)
        acc = lax.fori_loop(0, 3, lambda i, t: t * 0.5 + jnp.sin(t), root)
        return {"root": root, "acc": acc, "steps": steps}

    return control_flow, (x, w)


# --------------------------------------------------------------------------------------------
# mixture-of-experts router: sort/argsort, top-k, cumsum, argmax, concat/split/pad/slice,
# dynamic_slice, where/select
# --------------------------------------------------------------------------------------------

def build_moe_router() -> tuple[Callable, tuple]:
    init = _Init(11)
    tokens, d_model, experts, top_k, capacity = 12, 16, 4, 2, 6
    x = init.normal((tokens, d_model), 1.0)
    w_router = init.normal((d_model, experts))
    w_experts = init.normal((experts, d_model, d_model))
    start = jnp.array(3, jnp.int32)

    def moe_router(x, w_router, w_experts, start):
        logits = x @ w_router
        probs = jax.nn.softmax(logits, axis=-1)
        order = jnp.argsort(-probs, axis=-1)                  # experts by descending prob
        top_idx = order[:, :top_k]
        top_p = jnp.take_along_axis(probs, top_idx, axis=-1)
        top_p = top_p / jnp.sum(top_p, axis=-1, keepdims=True)
        sorted_probs = jnp.sort(probs, axis=-1)
        best = jnp.argmax(logits, axis=-1)
        one_hot = jax.nn.one_hot(best, experts, dtype=jnp.int32)
        position = jnp.cumsum(one_hot, axis=0) * one_hot - 1  # slot of each token in its expert
        keep = (position < capacity) & (position >= 0)
        gate = jnp.where(keep, top_p[:, :1], 0.0)              # select
        expert_out = jnp.einsum("td,edf->tef", x, w_experts)
        mixed = jnp.sum(gate[..., None] * expert_out, axis=1)
        # structural ops
        first, second = jnp.split(mixed, 2, axis=-1)
        joined = jnp.concatenate([second, first * 2.0], axis=-1)
        padded = jnp.pad(joined, ((1, 1), (0, 2)), constant_values=-1.0)
        window = lax.dynamic_slice(padded, (start, 0), (4, d_model + 2))
        strided = padded[::2, 1:-1]
        return {"mixed": mixed, "window": window, "strided": strided, "sorted": sorted_probs,
                "top_idx": top_idx, "position": position, "dropped": jnp.sum(~keep & (one_hot > 0))}

    return moe_router, (x, w_router, w_experts, start)


# --------------------------------------------------------------------------------------------
# jax.random inside the model: dropout and Gumbel-max sampling, key passed as an argument
# --------------------------------------------------------------------------------------------

def build_dropout_sampler() -> tuple[Callable, tuple]:
    init = _Init(12)
    x = init.normal((4, 16), 1.0)
    w = init.normal((16, 10))
    key = jax.random.key(42)                # typed key

    def dropout_sampler(x, w, key):
        key_drop, key_sample, key_next = jax.random.split(key, 3)
        keep = jax.random.bernoulli(key_drop, 0.8, x.shape)
        h = jnp.where(keep, x / 0.8, 0.0)
        logits = h @ w
        gumbel = jax.random.gumbel(key_sample, logits.shape)
        sample = jnp.argmax(logits + gumbel, axis=-1)
        noise = jax.random.normal(jax.random.fold_in(key_sample, 7), logits.shape)
        return {"logits": logits + 0.01 * noise, "sample": sample, "next_key": key_next}

    return dropout_sampler, (x, w, key)


def build_legacy_key_noise() -> tuple[Callable, tuple]:
    init = _Init(13)
    x = init.normal((8, 8), 1.0)
    key = jax.random.PRNGKey(7)             # raw uint32[2] key

    def legacy_key_noise(key, x):
        k1, k2 = jax.random.split(key)
        perm = jax.random.permutation(k1, x.shape[0])
        noisy = x[perm] + 0.1 * jax.random.uniform(k2, x.shape, minval=-1.0, maxval=1.0)
        return jnp.cumsum(noisy, axis=1), perm

    return legacy_key_noise, (key, x)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

MODELS: dict[str, Builder] = {
    "transformer_encoder_erf": _encoder_builder(approximate_gelu=False),
    "transformer_encoder_tanh": _encoder_builder(approximate_gelu=True),
    "mini_bert": build_mini_bert,
    "gpt_block": build_gpt_block,
    "cnn": build_cnn,
    "mobilenet_block": build_mobilenet_block,
    "resnext_block": build_resnext_block,
    "lstm": build_lstm,
    "mlp_mixer": build_mlp_mixer,
    "transforms": build_transforms_model,
    "control_flow": build_control_flow,
    "moe_router": build_moe_router,
    "dropout_sampler": build_dropout_sampler,
    "legacy_key_noise": build_legacy_key_noise,
}

EXPECTED_OPAQUE: dict[str, set[str]] = {
    "lstm": {"scan"},
    "control_flow": {"cond", "while", "scan"},
    "moe_router": {"sort"},
    "dropout_sampler": {"random_bits", "random_split"},
    "legacy_key_noise": {"random_bits", "random_wrap", "sort"},
}
