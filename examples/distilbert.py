"""DistilBERT-base (Sanh et al., 2019, "DistilBERT, a distilled version of BERT") in plain
JAX, with seeded random parameters.

Configuration of distilbert-base-uncased: 6 post-LN transformer layers, hidden 768,
12 heads, feed-forward 3072 with exact GELU, vocabulary 30522, 512 learned positions,
layer-norm epsilon 1e-12. Unlike BERT there are no segment (token-type) embeddings and no
pooler: the output is the last hidden state. Input: batch 1, sequence 128, the last eighth
padding (mask 0, a large negative additive bias on the scores). Left out: dropout
(inference) and task heads. Weights are normal(0, 0.02) from ``Params(0)``; nothing is
downloaded.

Example:
    >>> fn, args = example()
    >>> fn(*args).shape
    (1, 128, 768)
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .layers import (Params, bert_inputs, layer_norm, ln_params, post_ln_layer,
                     post_ln_layer_params)

LAYERS, HIDDEN, HEADS, FFN, VOCAB, MAX_LEN = 6, 768, 12, 3072, 30522, 512
LN_EPS, STD = 1e-12, 0.02


def init_params(gen: Params) -> dict:
    """DistilBERT parameters as a nested dict pytree (normal, std 0.02)."""
    layers = [post_ln_layer_params(gen, HIDDEN, FFN, STD) for _ in range(LAYERS)]
    return {"embeddings": {"token": gen.normal((VOCAB, HIDDEN), STD),
                           "position": gen.normal((MAX_LEN, HIDDEN), STD),
                           "ln": ln_params(HIDDEN)},
            "layers": layers}


def distilbert(params: dict, input_ids: jax.Array, mask: jax.Array) -> jax.Array:
    """DistilBERT on ``(batch, seq)`` int32 ids and a 0/1 mask: ``(batch, seq, 768)``."""
    emb = params["embeddings"]
    x = jnp.take(emb["token"], input_ids, axis=0) + emb["position"][: input_ids.shape[1]][None]
    x = layer_norm(emb["ln"], x, LN_EPS)
    bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
    for layer in params["layers"]:
        x = post_ln_layer(layer, x, bias, HEADS, LN_EPS)
    return x


def example(seq_len: int = 128, batch: int = 1) -> tuple[Callable, tuple]:
    """``(distilbert, (params, input_ids, mask))`` with seed 0."""
    params = init_params(Params(0))
    ids, _, mask = bert_inputs(VOCAB, seq_len, batch)
    return distilbert, (params, ids, mask)
