"""ALBERT-base (Lan et al., 2020, "ALBERT: A Lite BERT for Self-supervised Learning of
Language Representations") in plain JAX, with seeded random parameters.

Configuration of albert-base-v2: factorised embeddings (token, position and segment
embeddings of width 128, a layer norm, then a 128 -> 768 projection), 12 post-LN encoder
layers that all share ONE set of layer parameters (cross-layer sharing), 12 heads,
feed-forward 3072 with the tanh-approximate GELU ("gelu_new"), vocabulary 30000, 512
positions, layer-norm epsilon 1e-12, and a tanh pooler on the [CLS] token. The shared
layer is applied 12 times by a Python loop, so the traced graph is 12 unrolled layers that
read the same weights. Input: batch 1, sequence 128, second half segment 1, last eighth
padding. Left out: dropout (inference), the sentence-order and MLM heads. Weights are
normal(0, 0.02) from ``Params(0)``; nothing is downloaded.

Example:
    >>> fn, args = example()
    >>> [o.shape for o in fn(*args)]
    [(1, 128, 768), (1, 768)]
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .layers import (Params, bert_embeddings, bert_inputs, dense, dense_params, layer_norm,
                     ln_params, mask_bias, post_ln_layer, post_ln_layer_params)

LAYERS, EMBED, HIDDEN, HEADS, FFN, VOCAB, MAX_LEN = 12, 128, 768, 12, 3072, 30000, 512
LN_EPS, STD = 1e-12, 0.02


def init_params(gen: Params) -> dict:
    """ALBERT-base parameters: embeddings, projection, one shared layer, pooler."""
    return {
        "embeddings": {"token": gen.normal((VOCAB, EMBED), STD),
                       "position": gen.normal((MAX_LEN, EMBED), STD),
                       "segment": gen.normal((2, EMBED), STD), "ln": ln_params(EMBED)},
        "projection": dense_params(gen, EMBED, HIDDEN, STD),
        "shared_layer": post_ln_layer_params(gen, HIDDEN, FFN, STD),
        "pooler": dense_params(gen, HIDDEN, HIDDEN, STD),
    }


def albert(params: dict, input_ids: jax.Array, segment_ids: jax.Array,
           mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """ALBERT on ``(batch, seq)`` int32 ids, segment ids and 0/1 mask.

    Returns ``(sequence_output (batch, seq, 768), pooled (batch, 768))``.
    """
    emb = params["embeddings"]
    x = bert_embeddings(emb, input_ids, segment_ids)
    x = dense(params["projection"], layer_norm(emb["ln"], x, LN_EPS))
    bias = mask_bias(mask, x.dtype)
    for _ in range(LAYERS):
        x = post_ln_layer(params["shared_layer"], x, bias, HEADS, LN_EPS, approximate_gelu=True)
    return x, jnp.tanh(dense(params["pooler"], x[:, 0]))


def example(seq_len: int = 128, batch: int = 1) -> tuple[Callable, tuple]:
    """``(albert, (params, input_ids, segment_ids, mask))`` with seed 0."""
    params = init_params(Params(0))
    return albert, (params, *bert_inputs(VOCAB, seq_len, batch))
