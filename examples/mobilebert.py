"""MobileBERT (Sun et al., 2020, "MobileBERT: a Compact Task-Agnostic BERT for
Resource-Limited Devices") in plain JAX, with seeded random parameters.

Configuration of google/mobilebert-uncased: 24 layers with inter-block hidden 512 and
intra-block bottleneck 128; each layer has an input bottleneck (512 -> 128) and a shared
key/query bottleneck (512 -> 128, ``key_query_shared_bottleneck``), 4-head attention of
width 128 whose values come from the 512-wide input, 4 stacked feed-forward networks
(128 -> 512 -> 128, ReLU, each with a residual), and an output bottleneck back to 512.
Every normalisation is NoNorm (an elementwise scale and shift, no statistics). The
embedding is 128 wide over BERT's 30522 vocabulary; the trigram input concatenates the
embeddings of the next, current and previous token (384 wide), projects to 512 and adds
position and segment embeddings, then a NoNorm. A tanh pooler on [CLS] ends the model.
Input: batch 1, sequence 128, second half segment 1, last eighth padding (additive -10000
bias). Left out: dropout (inference) and the MLM / next-sentence heads. Weights are
normal(0, 0.02) from ``Params(0)``; nothing is downloaded.

Local helpers (not in ``layers.py``): ``no_norm`` and an attention whose query/key and value
inputs differ (``bottleneck_attention``).

Example:
    >>> fn, args = example()
    >>> [o.shape for o in fn(*args)]
    [(1, 128, 512), (1, 512)]
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .layers import (Params, attention_params, bert_inputs, dense, dense_params, ln_params,
                     mask_bias)

LAYERS, HIDDEN, BOTTLENECK, HEADS, FFN, NUM_FFN = 24, 512, 128, 4, 512, 4
EMBED, VOCAB, MAX_LEN, STD = 128, 30522, 512, 0.02


def no_norm(p: dict, x: jax.Array) -> jax.Array:
    """MobileBERT's NoNorm: ``x * scale + shift`` (``p`` from ``ln_params``)."""
    return x * p["scale"] + p["shift"]


def bottleneck_attention(p: dict, qk: jax.Array, v_in: jax.Array, bias: jax.Array) -> jax.Array:
    """Multi-head attention with queries/keys from ``qk`` (128) and values from ``v_in`` (512)."""
    b, s, _ = qk.shape
    head_dim = BOTTLENECK // HEADS
    split = lambda t: t.reshape(b, s, HEADS, head_dim).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(dense(p["q"], qk)), split(dense(p["k"], qk)), split(dense(p["v"], v_in))
    scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head_dim)) + bias
    context = (jax.nn.softmax(scores, axis=-1) @ v).transpose(0, 2, 1, 3)
    return dense(p["o"], context.reshape(b, s, BOTTLENECK))


def _layer_params(gen: Params) -> dict:
    """Parameters of one MobileBERT layer."""
    attn = attention_params(gen, BOTTLENECK, STD)
    attn["v"] = dense_params(gen, HIDDEN, BOTTLENECK, STD)
    ffn = lambda: {"in": dense_params(gen, BOTTLENECK, FFN, STD),  # noqa: E731
                   "out": dense_params(gen, FFN, BOTTLENECK, STD), "norm": ln_params(BOTTLENECK)}
    return {"input_bn": dense_params(gen, HIDDEN, BOTTLENECK, STD),
            "input_norm": ln_params(BOTTLENECK),
            "qk_bn": dense_params(gen, HIDDEN, BOTTLENECK, STD), "qk_norm": ln_params(BOTTLENECK),
            "attn": attn, "attn_norm": ln_params(BOTTLENECK),
            "ffns": [ffn() for _ in range(NUM_FFN)],
            "output_bn": dense_params(gen, BOTTLENECK, HIDDEN, STD),
            "output_norm": ln_params(HIDDEN)}


def init_params(gen: Params) -> dict:
    """MobileBERT parameters as a nested dict pytree (normal, std 0.02; NoNorm ones/zeros)."""
    return {"embeddings": {"token": gen.normal((VOCAB, EMBED), STD),
                           "trigram": dense_params(gen, 3 * EMBED, HIDDEN, STD),
                           "position": gen.normal((MAX_LEN, HIDDEN), STD),
                           "segment": gen.normal((2, HIDDEN), STD), "norm": ln_params(HIDDEN)},
            "layers": [_layer_params(gen) for _ in range(LAYERS)],
            "pooler": dense_params(gen, HIDDEN, HIDDEN, STD)}


def mobilebert_layer(p: dict, x: jax.Array, bias: jax.Array) -> jax.Array:
    """One layer: bottlenecks, attention, 4 stacked FFNs, output bottleneck (512 -> 512)."""
    inner = no_norm(p["input_norm"], dense(p["input_bn"], x))
    qk = no_norm(p["qk_norm"], dense(p["qk_bn"], x))
    h = no_norm(p["attn_norm"], inner + bottleneck_attention(p["attn"], qk, x, bias))
    for f in p["ffns"]:
        h = no_norm(f["norm"], h + dense(f["out"], jax.nn.relu(dense(f["in"], h))))
    return no_norm(p["output_norm"], x + dense(p["output_bn"], h))


def mobilebert(params: dict, input_ids: jax.Array, segment_ids: jax.Array,
               mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """MobileBERT on ``(batch, seq)`` int32 ids, segment ids and 0/1 mask.

    Returns ``(sequence_output (batch, seq, 512), pooled (batch, 512))``.
    """
    emb = params["embeddings"]
    e = jnp.take(emb["token"], input_ids, axis=0)
    nxt = jnp.pad(e[:, 1:], ((0, 0), (0, 1), (0, 0)))
    prev = jnp.pad(e[:, :-1], ((0, 0), (1, 0), (0, 0)))
    x = (dense(emb["trigram"], jnp.concatenate([nxt, e, prev], axis=-1))
         + emb["position"][: input_ids.shape[1]][None]
         + jnp.take(emb["segment"], segment_ids, axis=0))
    x = no_norm(emb["norm"], x)
    bias = mask_bias(mask, x.dtype)
    for layer in params["layers"]:
        x = mobilebert_layer(layer, x, bias)
    return x, jnp.tanh(dense(params["pooler"], x[:, 0]))


def example(seq_len: int = 128, batch: int = 1) -> tuple[Callable, tuple]:
    """``(mobilebert, (params, input_ids, segment_ids, mask))`` with seed 0."""
    params = init_params(Params(0))
    return mobilebert, (params, *bert_inputs(VOCAB, seq_len, batch))
