"""BERT-base encoder in plain JAX, with parameters generated from a seed.

The model follows the original BERT (Devlin et al., 2019): token + position + segment
embeddings, an embedding layer norm, ``num_layers`` post-LN encoder layers (multi-head
self-attention and an exact-GELU feed-forward network, each followed by a residual add and a
layer norm), and a pooler (a tanh dense layer on the [CLS] token). The attention mask (1 for
tokens, 0 for padding) enters as an additive bias on the attention scores. Parameters are a
nested dict drawn from ``jax.random`` (normal, std 0.02, as BERT's initializer); nothing is
downloaded, so outputs are meaningless but shapes, operators and costs are BERT-base's.

Input: batch 1, sequence 128 (the size the project's overhead targets name), int32 token and
segment ids and a 0/1 padding mask; ``example_small`` keeps that input with 2 layers. Left out:
the pre-training heads (masked LM, next sentence).

Example (also ``python examples/bert.py``):
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

LN_EPS = 1e-12
INIT_STD = 0.02


def _dense_params(key: jax.Array, d_in: int, d_out: int) -> dict:
    return {"w": INIT_STD * jax.random.normal(key, (d_in, d_out), jnp.float32),
            "b": jnp.zeros((d_out,), jnp.float32)}


def _ln_params(dim: int) -> dict:
    return {"gamma": jnp.ones((dim,), jnp.float32), "beta": jnp.zeros((dim,), jnp.float32)}


def init_params(key: jax.Array, num_layers: int = 12, hidden: int = 768, heads: int = 12,
                ffn: int = 3072, vocab: int = 30522, max_len: int = 512) -> dict:
    """BERT parameters as a nested dict pytree, drawn from ``key`` (normal, std 0.02).

    ``heads`` is not stored in the pytree (it must divide ``hidden``); pass the same value to
    ``bert_encoder``'s ``heads`` argument (BERT-base: 12).
    """
    if hidden % heads:
        raise ValueError(f"hidden={hidden} is not divisible by heads={heads}")
    k_tok, k_pos, k_seg, k_pool, *k_layers = jax.random.split(key, 4 + num_layers)
    layers = []
    for k in k_layers:
        kq, kk, kv, ko, k1, k2 = jax.random.split(k, 6)
        layers.append({
            "query": _dense_params(kq, hidden, hidden),
            "key": _dense_params(kk, hidden, hidden),
            "value": _dense_params(kv, hidden, hidden),
            "attn_out": _dense_params(ko, hidden, hidden),
            "attn_ln": _ln_params(hidden),
            "ffn_in": _dense_params(k1, hidden, ffn), "ffn_out": _dense_params(k2, ffn, hidden),
            "ffn_ln": _ln_params(hidden),
        })
    return {
        "embeddings": {
            "token": INIT_STD * jax.random.normal(k_tok, (vocab, hidden), jnp.float32),
            "position": INIT_STD * jax.random.normal(k_pos, (max_len, hidden), jnp.float32),
            "segment": INIT_STD * jax.random.normal(k_seg, (2, hidden), jnp.float32),
            "ln": _ln_params(hidden),
        },
        "layers": layers,
        "pooler": _dense_params(k_pool, hidden, hidden),
    }


def _dense(p: dict, x: jax.Array) -> jax.Array:
    return x @ p["w"] + p["b"]


def _layer_norm(p: dict, x: jax.Array) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LN_EPS) * p["gamma"] + p["beta"]


def _attention(p: dict, x: jax.Array, bias: jax.Array, heads: int) -> jax.Array:
    batch, seq, hidden = x.shape
    head_dim = hidden // heads

    def split_heads(t):  # (b, s, h) -> (b, heads, s, head_dim)
        return t.reshape(batch, seq, heads, head_dim).transpose(0, 2, 1, 3)

    q, k, v = (split_heads(_dense(p[name], x)) for name in ("query", "key", "value"))
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(jnp.float32(head_dim)) + bias
    probs = jax.nn.softmax(scores, axis=-1)
    context = jnp.einsum("bhqk,bhkd->bhqd", probs, v)
    return _dense(p["attn_out"], context.transpose(0, 2, 1, 3).reshape(batch, seq, hidden))


def _encoder_layer(p: dict, x: jax.Array, bias: jax.Array, heads: int) -> jax.Array:
    x = _layer_norm(p["attn_ln"], x + _attention(p, x, bias, heads))
    h = jax.nn.gelu(_dense(p["ffn_in"], x), approximate=False)
    return _layer_norm(p["ffn_ln"], x + _dense(p["ffn_out"], h))


def bert_encoder(params: dict, input_ids: jax.Array, segment_ids: jax.Array,
                 mask: jax.Array, heads: int = 12) -> tuple[jax.Array, jax.Array]:
    """Runs BERT on ``(batch, seq)`` int32 ids, segment ids and a 0/1 padding mask.

    Returns ``(sequence_output, pooled)`` of shapes ``(batch, seq, hidden)`` and
    ``(batch, hidden)``.
    """
    emb = params["embeddings"]
    seq = input_ids.shape[1]
    x = (jnp.take(emb["token"], input_ids, axis=0)
         + jnp.take(emb["position"], jnp.arange(seq), axis=0)[None]
         + jnp.take(emb["segment"], segment_ids, axis=0))
    x = _layer_norm(emb["ln"], x)
    bias = ((1.0 - mask.astype(x.dtype)) * -10000.0)[:, None, None, :]  # (b, 1, 1, s)
    for layer in params["layers"]:
        x = _encoder_layer(layer, x, bias, heads)
    pooled = jnp.tanh(_dense(params["pooler"], x[:, 0]))
    return x, pooled


def example(num_layers: int = 12, seq_len: int = 128,
            batch: int = 1) -> tuple[Callable, tuple]:
    """``(bert_encoder, (params, input_ids, segment_ids, mask))`` for BERT-base, seed 0.

    Ids are random in the vocabulary; the second half of the sequence is segment 1 and the
    last eighth of it is padding (mask 0).
    """
    k_params, k_ids = jax.random.split(jax.random.PRNGKey(0))
    params = init_params(k_params, num_layers=num_layers)
    vocab = params["embeddings"]["token"].shape[0]
    input_ids = jax.random.randint(k_ids, (batch, seq_len), 0, vocab, jnp.int32)
    positions = jnp.arange(seq_len)
    segment_ids = jnp.broadcast_to(positions >= seq_len // 2, (batch, seq_len)).astype(jnp.int32)
    mask = jnp.broadcast_to(positions < seq_len - seq_len // 8, (batch, seq_len)).astype(jnp.int32)
    return bert_encoder, (params, input_ids, segment_ids, mask)


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
