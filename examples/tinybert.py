"""TinyBERT-4 (Jiao et al., 2020, "TinyBERT: Distilling BERT for Natural Language
Understanding") in plain JAX, with seeded random parameters.

Configuration of the released General_TinyBERT_4L_312D: 4 post-LN BERT encoder layers,
hidden 312, 12 heads (head size 26), feed-forward 1200 with exact GELU, BERT's WordPiece
vocabulary of 30522, 512 learned positions and 2 segment types, layer-norm epsilon 1e-12,
and BERT's tanh pooler on the [CLS] token. Input: batch 1, sequence 128, the second half
segment 1 and the last eighth padding (mask 0, an additive -10000 bias on the scores).
Left out: dropout (inference), the distillation-only projection ``fit_dense`` (312 -> 768)
and any task head. Weights are normal(0, 0.02) from ``Params(0)``; nothing is downloaded.

Example:
    >>> fn, args = example()
    >>> [o.shape for o in fn(*args)]
    [(1, 128, 312), (1, 312)]
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .layers import (Params, bert_embeddings, bert_inputs, dense, dense_params, layer_norm,
                     ln_params, mask_bias, post_ln_layer, post_ln_layer_params)

LAYERS, HIDDEN, HEADS, FFN, VOCAB, MAX_LEN = 4, 312, 12, 1200, 30522, 512
LN_EPS, STD = 1e-12, 0.02


def init_params(gen: Params) -> dict:
    """TinyBERT-4 parameters as a nested dict pytree (normal, std 0.02)."""
    layers = [post_ln_layer_params(gen, HIDDEN, FFN, STD) for _ in range(LAYERS)]
    return {"embeddings": {"token": gen.normal((VOCAB, HIDDEN), STD),
                           "position": gen.normal((MAX_LEN, HIDDEN), STD),
                           "segment": gen.normal((2, HIDDEN), STD), "ln": ln_params(HIDDEN)},
            "layers": layers, "pooler": dense_params(gen, HIDDEN, HIDDEN, STD)}


def tinybert(params: dict, input_ids: jax.Array, segment_ids: jax.Array,
             mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """TinyBERT-4 on ``(batch, seq)`` int32 ids, segment ids and 0/1 mask.

    Returns ``(sequence_output (batch, seq, 312), pooled (batch, 312))``.
    """
    emb = params["embeddings"]
    x = bert_embeddings(emb, input_ids, segment_ids)
    x = layer_norm(emb["ln"], x, LN_EPS)
    bias = mask_bias(mask, x.dtype)
    for layer in params["layers"]:
        x = post_ln_layer(layer, x, bias, HEADS, LN_EPS)
    return x, jnp.tanh(dense(params["pooler"], x[:, 0]))


def example(seq_len: int = 128, batch: int = 1) -> tuple[Callable, tuple]:
    """``(tinybert, (params, input_ids, segment_ids, mask))`` with seed 0."""
    params = init_params(Params(0))
    return tinybert, (params, *bert_inputs(VOCAB, seq_len, batch))
