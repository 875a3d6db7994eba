"""YOLOv4 (Bochkovskiy et al., 2020) in plain JAX, with parameters generated from a seed.

The network follows darknet's ``yolov4.cfg``: a CSPDarknet53 backbone (a 3x3 stem, then five
stages, each a stride-2 3x3 convolution and a cross-stage-partial block of 1, 2, 8, 8 and 4
residual blocks; batch norm and Mish everywhere), an SPP block (max pools 5, 9 and 13 at stride
1, concatenated with their input), a PANet neck (top-down with nearest upsampling and
concatenation, then bottom-up with stride-2 convolutions; batch norm and leaky ReLU 0.1) and
three YOLO heads, each a 3x3 convolution and a 1x1 convolution with bias to 3 anchors x
(5 + 80 classes) = 255 channels. Layout is NHWC with HWIO kernels; parameters are a nested
dict drawn from ``Params(seed)`` (~64M parameters); nothing is downloaded. The last batch-norm
scale of each residual branch is damped x0.2 (``layers.RESIDUAL_GAMMA``), so that activations
stay O(1) through the 23 residual blocks instead of doubling their variance at each.

Input: one 256x256 image (YOLOv4 usually runs at 416 or 608; 608 costs ~128 GFLOPs). 256 is
a multiple of the total stride 32 and has ~2.6x fewer pixels than 416 (~23 GFLOPs), so that
one jitted forward pass stays under about 2 s on two shared CPU cores; the heads are 32x32,
16x16 and 8x8. Outputs are the raw head tensors reshaped to ``(batch, h, w, 3, 85)`` at
strides 8, 16 and 32. Left out: box decoding (sigmoid/exp with anchors) and non-maximum
suppression. Stride-2 convolutions pad one pixel on every side, as darknet does (not SAME's
0/1).

Example:
    >>> fn, args = example(size=64)
    >>> [y.shape for y in fn(*args)]
    [(1, 8, 8, 3, 85), (1, 4, 4, 3, 85), (1, 2, 2, 3, 85)]
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .layers import (RESIDUAL_GAMMA, Params, conv2d, conv_bn_act, conv_bn_params, conv_params,
                     max_pool, upsample_nearest)

STAGES = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))
"""CSPDarknet53 stages: (output width, residual blocks)."""
ANCHORS, NUM_CLASSES = 3, 80
PAD1 = ((1, 1), (1, 1))  # darknet pads stride-2 3x3 convolutions by one on every side


def mish(x: jax.Array) -> jax.Array:
    """Mish activation ``x * tanh(softplus(x))`` (Misra, 2019)."""
    return x * jnp.tanh(jax.nn.softplus(x))


def leaky(x: jax.Array) -> jax.Array:
    """Leaky ReLU with darknet's slope 0.1."""
    return jax.nn.leaky_relu(x, 0.1)


def _stack(gen: Params, cin: int, spec: tuple, last_gamma: float = 1.0) -> list:
    layers = []
    for i, (k, cout) in enumerate(spec):  # (kernel, width) per conv-bn layer
        gamma = last_gamma if i == len(spec) - 1 else 1.0
        layers.append(conv_bn_params(gen, k, k, cin, cout, gamma=gamma))
        cin = cout
    return layers


def _five(c: int) -> tuple:
    return ((1, c), (3, 2 * c), (1, c), (3, 2 * c), (1, c))


def _head(gen: Params, cin: int) -> dict:
    return {"conv": conv_bn_params(gen, 3, 3, cin, 2 * cin),
            "out": conv_params(gen, 1, 1, 2 * cin, ANCHORS * (5 + NUM_CLASSES), bias=True)}


def init_params(seed: int = 0) -> dict:
    """YOLOv4 parameters (backbone, SPP, PANet neck and heads) as a nested dict pytree."""
    gen = Params(seed)
    stages, cin = [], 32
    for i, (c, blocks) in enumerate(STAGES):
        h = c if i == 0 else c // 2  # width of each CSP half; stage 1 keeps full width
        inner = c // 2 if i == 0 else h
        stages.append({
            "down": conv_bn_params(gen, 3, 3, cin, c), "split": _stack(gen, c, ((1, h),)),
            "main": _stack(gen, c, ((1, h),)),
            "blocks": [_stack(gen, h, ((1, inner), (3, h)), RESIDUAL_GAMMA)  # residual branches
                       for _ in range(blocks)],
            "post": conv_bn_params(gen, 1, 1, h, h), "fuse": conv_bn_params(gen, 1, 1, 2 * h, c)})
        cin = c
    return {
        "stem": conv_bn_params(gen, 3, 3, 3, 32), "stages": stages,
        "spp_in": _stack(gen, 1024, ((1, 512), (3, 1024), (1, 512))),
        "spp_out": _stack(gen, 2048, ((1, 512), (3, 1024), (1, 512))),
        "up5": conv_bn_params(gen, 1, 1, 512, 256), "lat4": conv_bn_params(gen, 1, 1, 512, 256),
        "td4": _stack(gen, 512, _five(256)),
        "up4": conv_bn_params(gen, 1, 1, 256, 128), "lat3": conv_bn_params(gen, 1, 1, 256, 128),
        "td3": _stack(gen, 256, _five(128)),
        "down3": conv_bn_params(gen, 3, 3, 128, 256), "bu4": _stack(gen, 512, _five(256)),
        "down4": conv_bn_params(gen, 3, 3, 256, 512), "bu5": _stack(gen, 1024, _five(512)),
        "heads": [_head(gen, 128), _head(gen, 256), _head(gen, 512)],
    }


def run_stack(layers: list, x: jax.Array, act: Callable = leaky) -> jax.Array:
    """Applies conv-bn-activation layers in sequence (stride 1, SAME)."""
    for p in layers:
        x = conv_bn_act(p, x, act=act)
    return x


def csp_stage(p: dict, x: jax.Array) -> jax.Array:
    """A CSPDarknet stage: stride-2 conv, then residual blocks on one half, concat, 1x1 fuse."""
    x = conv_bn_act(p["down"], x, stride=2, act=mish, padding=PAD1)
    split, y = run_stack(p["split"], x, mish), run_stack(p["main"], x, mish)
    for block in p["blocks"]:
        y = y + run_stack(block, y, mish)
    y = conv_bn_act(p["post"], y, act=mish)
    return conv_bn_act(p["fuse"], jnp.concatenate([y, split], axis=-1), act=mish)


def yolo_v4(params: dict, image: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Runs YOLOv4 on NHWC images; returns the three raw heads ``(n, h, w, 3, 85)``."""
    x = conv_bn_act(params["stem"], image, act=mish)
    feats = []
    for stage in params["stages"]:
        x = csp_stage(stage, x)
        feats.append(x)
    c3, c4, c5 = feats[2:]
    x = run_stack(params["spp_in"], c5)
    x = jnp.concatenate([max_pool(x, k, 1, "SAME") for k in (13, 9, 5)] + [x], axis=-1)
    p5 = run_stack(params["spp_out"], x)
    up = upsample_nearest(conv_bn_act(params["up5"], p5, act=leaky))
    lateral = conv_bn_act(params["lat4"], c4, act=leaky)
    p4 = run_stack(params["td4"], jnp.concatenate([lateral, up], -1))
    up = upsample_nearest(conv_bn_act(params["up4"], p4, act=leaky))
    lateral = conv_bn_act(params["lat3"], c3, act=leaky)
    p3 = run_stack(params["td3"], jnp.concatenate([lateral, up], -1))
    down = conv_bn_act(params["down3"], p3, stride=2, act=leaky, padding=PAD1)
    n4 = run_stack(params["bu4"], jnp.concatenate([down, p4], -1))
    down = conv_bn_act(params["down4"], n4, stride=2, act=leaky, padding=PAD1)
    n5 = run_stack(params["bu5"], jnp.concatenate([down, p5], -1))
    outs = []
    for p, f in zip(params["heads"], (p3, n4, n5)):
        y = conv2d(p["out"], conv_bn_act(p["conv"], f, act=leaky))
        outs.append(y.reshape(*y.shape[:3], ANCHORS, 5 + NUM_CLASSES))
    return tuple(outs)


def example(size: int = 256, batch: int = 1) -> tuple[Callable, tuple]:
    """``(yolo_v4, (params, image))`` for a seeded ``size`` x ``size`` image (a multiple of 32)."""
    image = Params(1).uniform((batch, size, size, 3), 0.0, 1.0)
    return yolo_v4, (init_params(0), image)
