"""U-Net (Ronneberger et al., 2015) for biomedical image segmentation, in plain JAX.

The original architecture: four down levels of 64-128-256-512 channels, each two 3x3
convolutions with bias and ReLU followed by a 2x2 stride-2 max pool; a 1024-channel
bottleneck of two more such convolutions; four up levels, each a 2x2 stride-2 transposed
convolution halving the channels, concatenation with the skip connection of the same level,
and two 3x3 convolutions with ReLU; a final 1x1 convolution to 2 classes (per-pixel logits).
Input: one single-channel 192x192 image (NHWC). Unlike the paper, convolutions use SAME
padding, so no cropping is needed and the output has the input's size. The paper's 572x572
tile costs about 9x more; at 192x192 (61 GFLOP) a forward pass takes 0.4-1 s on two shared
CPU cores (256x256 took up to 2 s), and all five levels keep a non-trivial size (12x12
bottleneck). Left out: dropout and the loss's pixel weights. ``upconv`` is defined here
(``layers.py`` has no transposed convolution).

Example:
    >>> import jax
    >>> fn, args = example(resolution=32)
    >>> jax.jit(fn)(*args).shape
    (1, 32, 32, 2)
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from .layers import Params, conv2d, conv_params, max_pool

WIDTHS = (64, 128, 256, 512)
"""Channels of the four down (and up) levels; the bottleneck has twice the last."""


def _double_conv_params(gen: Params, cin: int, cout: int) -> dict:
    """Two 3x3 convolutions with bias."""
    return {"conv1": conv_params(gen, 3, 3, cin, cout, bias=True),
            "conv2": conv_params(gen, 3, 3, cout, cout, bias=True)}


def init_params(seed: int = 0, in_channels: int = 1, num_classes: int = 2) -> dict:
    """U-Net parameters as a nested dict pytree from ``Params(seed)``."""
    gen = Params(seed)
    down, cin = [], in_channels
    for width in WIDTHS:
        down.append(_double_conv_params(gen, cin, width))
        cin = width
    bottleneck = _double_conv_params(gen, cin, 2 * cin)
    up, cin = [], 2 * cin
    for width in reversed(WIDTHS):
        up.append({"upconv": conv_params(gen, 2, 2, cin, width, bias=True),
                   **_double_conv_params(gen, 2 * width, width)})
        cin = width
    return {"down": down, "bottleneck": bottleneck, "up": up,
            "final": conv_params(gen, 1, 1, cin, num_classes, bias=True)}


def double_conv(p: dict, x: jax.Array) -> jax.Array:
    """Two 3x3 SAME convolutions, each followed by ReLU."""
    return jax.nn.relu(conv2d(p["conv2"], jax.nn.relu(conv2d(p["conv1"], x))))


def upconv(p: dict, x: jax.Array) -> jax.Array:
    """2x2 stride-2 transposed convolution (HWIO kernel) plus bias: doubles H and W."""
    y = lax.conv_transpose(x, p["w"], (2, 2), "VALID",
                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["b"]


def unet(params: dict, images: jax.Array) -> jax.Array:
    """Per-pixel class logits (N, H, W, classes) for NHWC images; H, W divisible by 16."""
    x, skips = images, []
    for p in params["down"]:
        x = double_conv(p, x)
        skips.append(x)
        x = max_pool(x, 2, 2)
    x = double_conv(params["bottleneck"], x)
    for p, skip in zip(params["up"], reversed(skips)):
        x = double_conv(p, jnp.concatenate([skip, upconv(p["upconv"], x)], axis=-1))
    return conv2d(params["final"], x)


def example(resolution: int = 192, batch: int = 1) -> tuple[Callable, tuple]:
    """``(unet, (params, images))`` for a 1-channel image at ``resolution`` (192), seed 0."""
    images = Params(1).normal((batch, resolution, resolution, 1), 1.0)
    return unet, (init_params(0), images)
