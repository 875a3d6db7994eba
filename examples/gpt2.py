"""GPT-2 small (Radford et al., 2019, "Language Models are Unsupervised Multitask
Learners") in plain JAX, with seeded random parameters.

Configuration of the 124M ``gpt2`` checkpoint: 12 pre-LN decoder blocks (x + attn(LN(x)),
then x + MLP(LN(x))), hidden 768, 12 heads with a causal mask, MLP 3072 with the
tanh-approximate GELU, 1024 learned positions, vocabulary 50257, layer-norm epsilon 1e-5,
a final layer norm and an LM head tied to the token embedding (logits = h @ wte.T).
GPT-2's fused ``c_attn`` (768 -> 2304) is stored as separate q/k/v projections, which is
the same computation. Input: batch 1, sequence 128 of random token ids (no padding).
Left out: dropout (inference) and the key/value cache. Weights are normal(0, 0.02) from
``Params(0)`` (output projections scaled by 1/sqrt(2 * layers) as in GPT-2); nothing is
downloaded.

Example:
    >>> fn, args = example()
    >>> fn(*args).shape
    (1, 128, 50257)
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .layers import (Params, attention_params, dense, dense_params, layer_norm, ln_params,
                     multi_head_attention)

LAYERS, HIDDEN, HEADS, MLP, VOCAB, MAX_LEN = 12, 768, 12, 3072, 50257, 1024
LN_EPS, STD = 1e-5, 0.02


def init_params(gen: Params) -> dict:
    """GPT-2 small parameters as a nested dict pytree (normal, std 0.02)."""
    proj_std = STD / np.sqrt(2 * LAYERS)
    blocks = []
    for _ in range(LAYERS):
        attn = attention_params(gen, HIDDEN, STD)
        attn["o"] = dense_params(gen, HIDDEN, HIDDEN, proj_std)
        blocks.append({"ln_1": ln_params(HIDDEN), "attn": attn, "ln_2": ln_params(HIDDEN),
                       "fc": dense_params(gen, HIDDEN, MLP, STD),
                       "proj": dense_params(gen, MLP, HIDDEN, proj_std)})
    return {"wte": gen.normal((VOCAB, HIDDEN), STD), "wpe": gen.normal((MAX_LEN, HIDDEN), 0.01),
            "blocks": blocks, "ln_f": ln_params(HIDDEN)}


def block(p: dict, x: jax.Array) -> jax.Array:
    """One pre-LN decoder block: causal self-attention and a GELU MLP, each residual."""
    x = x + multi_head_attention(p["attn"], layer_norm(p["ln_1"], x, LN_EPS), HEADS,
                                 causal=True)
    h = jax.nn.gelu(dense(p["fc"], layer_norm(p["ln_2"], x, LN_EPS)), approximate=True)
    return x + dense(p["proj"], h)


def gpt2(params: dict, input_ids: jax.Array) -> jax.Array:
    """GPT-2 on ``(batch, seq)`` int32 ids: next-token logits ``(batch, seq, 50257)``."""
    x = jnp.take(params["wte"], input_ids, axis=0) + params["wpe"][: input_ids.shape[1]][None]
    for p in params["blocks"]:
        x = block(p, x)
    return layer_norm(params["ln_f"], x, LN_EPS) @ params["wte"].T


def example(seq_len: int = 128, batch: int = 1) -> tuple[Callable, tuple]:
    """``(gpt2, (params, input_ids))`` with seed 0."""
    ids = np.random.default_rng(1).integers(0, VOCAB, (batch, seq_len))
    return gpt2, (init_params(Params(0)), jnp.asarray(ids, jnp.int32))
