"""BERT-base encoder in plain JAX, with parameters generated from a seed.

The model follows the original BERT (Devlin et al., 2019): token + position + segment
embeddings, an embedding layer norm, ``num_layers`` post-LN encoder layers (multi-head
self-attention and an exact-GELU feed-forward network, each followed by a residual add and a
layer norm), and a pooler (a tanh dense layer on the [CLS] token). The attention mask (1 for
tokens, 0 for padding) enters as an additive bias on the attention scores. Parameters are a
nested dict from the seeded ``Params`` generator (normal, std 0.02, as BERT's initializer);
nothing is downloaded, so outputs are meaningless but shapes, operators and costs are BERT-base's.

Input: batch 1, sequence 128 (the size the project's overhead targets name), int32 token and
segment ids and a 0/1 padding mask; ``example_small`` keeps that input with 2 layers. Left out:
the pre-training heads (masked LM, next sentence).

Example (also ``python -m examples.bert``):
    >>> import jax
    >>> import dnnfusion_jax as dnnfusion
    >>> fn, args = example(num_layers=2, seq_len=16)
    >>> seq, pooled = dnnfusion.jit(fn)(*args)
    >>> seq.shape, pooled.shape
    ((1, 16, 768), (1, 768))
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .layers import (Params, bert_embeddings, bert_inputs, dense, dense_params, layer_norm,
                     ln_params, mask_bias, post_ln_layer, post_ln_layer_params)

LN_EPS, STD = 1e-12, 0.02


def init_params(seed: int = 0, num_layers: int = 12, hidden: int = 768, heads: int = 12,
                ffn: int = 3072, vocab: int = 30522, max_len: int = 512) -> dict:
    """BERT parameters as a nested dict pytree from ``Params(seed)`` (normal, std 0.02).

    ``heads`` is not stored in the pytree (it must divide ``hidden``); pass the same value to
    ``bert_encoder``'s ``heads`` argument (BERT-base: 12).
    """
    if hidden % heads:
        raise ValueError(f"hidden={hidden} is not divisible by heads={heads}")
    gen = Params(seed)
    return {
        "embeddings": {"token": gen.normal((vocab, hidden), STD),
                       "position": gen.normal((max_len, hidden), STD),
                       "segment": gen.normal((2, hidden), STD), "ln": ln_params(hidden)},
        "layers": [post_ln_layer_params(gen, hidden, ffn, STD) for _ in range(num_layers)],
        "pooler": dense_params(gen, hidden, hidden, STD),
    }


def bert_encoder(params: dict, input_ids: jax.Array, segment_ids: jax.Array,
                 mask: jax.Array, heads: int = 12) -> tuple[jax.Array, jax.Array]:
    """Runs BERT on ``(batch, seq)`` int32 ids, segment ids and a 0/1 padding mask.

    Returns ``(sequence_output, pooled)`` of shapes ``(batch, seq, hidden)`` and
    ``(batch, hidden)``.
    """
    x = layer_norm(params["embeddings"]["ln"],
                   bert_embeddings(params["embeddings"], input_ids, segment_ids), LN_EPS)
    bias = mask_bias(mask, x.dtype)
    for layer in params["layers"]:
        x = post_ln_layer(layer, x, bias, heads, LN_EPS)
    return x, jnp.tanh(dense(params["pooler"], x[:, 0]))


def example(num_layers: int = 12, seq_len: int = 128,
            batch: int = 1) -> tuple[Callable, tuple]:
    """``(bert_encoder, (params, input_ids, segment_ids, mask))`` for BERT-base, seed 0.

    Ids are random in the vocabulary; the second half of the sequence is segment 1 and the
    last eighth of it is padding (mask 0).
    """
    params = init_params(num_layers=num_layers)
    vocab = params["embeddings"]["token"].shape[0]
    return bert_encoder, (params, *bert_inputs(vocab, seq_len, batch))


def example_small() -> tuple[Callable, tuple]:
    """Two encoder layers of BERT-base at sequence 128: quick to optimise and run."""
    return example(num_layers=2)


if __name__ == "__main__":
    import dnnfusion_jax as dnnfusion

    fn, args = example(num_layers=2)
    seq_out, pooled_out = dnnfusion.jit(fn)(*args)
    ref_seq, ref_pooled = jax.jit(fn)(*args)
    err = max(float(jnp.max(jnp.abs(seq_out - ref_seq))),
              float(jnp.max(jnp.abs(pooled_out - ref_pooled))))
    print(f"BERT-base, 2 layers, batch 1, seq 128 (dnnfusion.jit): sequence_output "
          f"{seq_out.shape} {seq_out.dtype}, pooled {pooled_out.shape} {pooled_out.dtype}; "
          f"max |diff| vs jax.jit {err:.2e}")
