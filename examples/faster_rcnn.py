"""Faster R-CNN (ResNet-50-FPN) inference in plain JAX, with seeded random weights.

The layout follows Detectron2's ``faster_rcnn_R_50_FPN``: a ResNet-50 backbone (bottleneck
blocks 3-4-6-3, stride on the 3x3 conv, inference batch norm), an FPN (lateral 1x1 convs, a
top-down nearest-upsample-add path, 3x3 output convs; P2-P5, and P6 by stride-2
subsampling of P5), an RPN head shared over the five levels (3x3 conv, then 1x1 convs for
objectness and box deltas; 3 anchors per location: aspect ratios 0.5, 1, 2 at size
32·2^(level-2)), anchor decoding, multi-level RoIAlign (7x7, 2x2 bilinear samples per bin,
level chosen by box size as in the FPN paper) and the box head (two FC-1024 layers, then
81-way classification and 81x4 class-specific box regression).

Static-shape simplifications, so that everything is one ``jax.jit`` function:

* input is one 320x320 RGB image (batch 1), already normalised; the real model uses ~800 px
  (at 320 px no box is large enough, sqrt(area) >= 448, for RoIAlign level P5);
* proposals: the 20 top-objectness anchors of each of the five RPN levels, decoded
  (``NUM_PROPOSALS`` = 100 in all; ``lax.top_k``, a tiny index ramp breaks exact ties), with
  NO non-maximum suppression (Detectron2: 1000 per level, NMS 0.7, 1000 kept);
* the output is per-proposal: class probabilities and one decoded box per class; score
  thresholding and per-class NMS of the detections are left out, as are anchor matching,
  sampling and the training losses.

Weights are drawn by ``Params`` (He normal; the RPN and predictor layers use small normal
inits, box deltas 0.001, so that random boxes stay plausible; the last batch-norm scale of each
bottleneck is damped x0.2, ``layers.RESIDUAL_GAMMA``, to keep activations O(1)), so the
outputs are meaningless but shapes, operators and costs are real.

Example:
    >>> import jax
    >>> fn, args = example()
    >>> proposals, probs, boxes = jax.jit(fn)(*args)
    >>> proposals.shape, probs.shape, boxes.shape
    ((100, 4), (100, 81), (100, 81, 4))
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .layers import (RESIDUAL_GAMMA, Params, conv2d, conv_bn_act, conv_bn_params, conv_params,
                     dense, dense_params, max_pool, upsample_nearest)

IMAGE_SIZE = 320
NUM_PROPOSALS = 100
NUM_CLASSES = 81  # 80 COCO classes + background (index 0)
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride)
FPN_DIM = 256
RPN_LEVELS = (2, 3, 4, 5, 6)
ASPECT_RATIOS = (0.5, 1.0, 2.0)
BBOX_CLIP = float(np.log(1000.0 / 16))


def resnet50_params(gen: Params) -> dict:
    """ResNet-50 trunk parameters: a 7x7 stem and four stages of bottleneck blocks."""
    stages, cin = [], 64
    for width, blocks, _ in STAGES:
        stage = []
        for i in range(blocks):
            block = {"conv1": conv_bn_params(gen, 1, 1, cin, width),
                     "conv2": conv_bn_params(gen, 3, 3, width, width),
                     "conv3": conv_bn_params(gen, 1, 1, width, 4 * width, gamma=RESIDUAL_GAMMA)}
            if i == 0:
                block["shortcut"] = conv_bn_params(gen, 1, 1, cin, 4 * width)
            stage.append(block)
            cin = 4 * width
        stages.append(stage)
    return {"stem": conv_bn_params(gen, 7, 7, 3, 64), "stages": stages}


def resnet50(p: dict, x: jax.Array) -> list[jax.Array]:
    """ResNet-50 on NHWC ``x``; returns the stage outputs C2-C5 (strides 4, 8, 16, 32)."""
    x = max_pool(conv_bn_act(p["stem"], x, stride=2), 3, 2, "SAME")
    features = []
    for stage, (_, _, stride) in zip(p["stages"], STAGES):
        for i, block in enumerate(stage):
            s = stride if i == 0 else 1
            y = conv_bn_act(block["conv1"], x)
            y = conv_bn_act(block["conv2"], y, stride=s)
            y = conv_bn_act(block["conv3"], y, act=None)
            short = conv_bn_act(block["shortcut"], x, stride=s, act=None) if i == 0 else x
            x = jax.nn.relu(y + short)
        features.append(x)
    return features


def fpn(p: dict, features: list[jax.Array]) -> list[jax.Array]:
    """Feature pyramid over C2-C5: returns P2-P6, each with ``FPN_DIM`` channels."""
    laterals = [conv2d(lp, c) for lp, c in zip(p["lateral"], features)]
    merged = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
        merged.insert(0, lateral + upsample_nearest(merged[0], 2))
    outputs = [conv2d(op, m) for op, m in zip(p["output"], merged)]
    return outputs + [max_pool(outputs[-1], 1, 2)]  # P6: stride-2 subsampling of P5


def anchors(level: int, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """RPN anchors (x1, y1, x2, y2) of one level in (y, x, ratio) order, as constants."""
    stride, size = 2 ** level, 32.0 * 2 ** (level - 2)
    n = image_size // stride
    ws = np.array([size / np.sqrt(r) for r in ASPECT_RATIOS])
    hs = np.array([size * np.sqrt(r) for r in ASPECT_RATIOS])
    centers = (np.arange(n) + 0.5) * stride
    cy, cx = (c[:, :, None] for c in np.meshgrid(centers, centers, indexing="ij"))
    boxes = np.stack([cx - ws / 2, cy - hs / 2, cx + ws / 2, cy + hs / 2], -1)
    return boxes.reshape(-1, 4).astype(np.float32)


def decode_boxes(boxes: jax.Array, deltas: jax.Array, weights=(1.0, 1.0, 1.0, 1.0),
                 image_size: int = IMAGE_SIZE) -> jax.Array:
    """Applies (dx, dy, dw, dh) ``deltas`` to reference ``boxes`` and clips to the image."""
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    cx, cy = boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h
    dx, dy = deltas[..., 0] / weights[0], deltas[..., 1] / weights[1]
    dw = jnp.minimum(deltas[..., 2] / weights[2], BBOX_CLIP)
    dh = jnp.minimum(deltas[..., 3] / weights[3], BBOX_CLIP)
    px, py, pw, ph = cx + dx * w, cy + dy * h, jnp.exp(dw) * w, jnp.exp(dh) * h
    out = jnp.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph], -1)
    return jnp.clip(out, 0.0, float(image_size))


def rpn_proposals(p: dict, pyramid: list[jax.Array], k: int = NUM_PROPOSALS) -> jax.Array:
    """RPN head on each level, then its ``k / 5`` top-objectness decoded anchors: (k, 4)."""
    proposals = []
    for level, x in zip(RPN_LEVELS, pyramid):
        t = jax.nn.relu(conv2d(p["conv"], x[None]))
        logits = conv2d(p["objectness"], t).reshape(-1)
        deltas = conv2d(p["deltas"], t).reshape(-1, 4)
        ramp = jnp.arange(logits.shape[0], dtype=jnp.float32) * (-1e-4 / logits.shape[0])
        _, top = lax.top_k(logits + ramp, k // len(RPN_LEVELS))  # fixed count, no NMS
        proposals.append(decode_boxes(jnp.asarray(anchors(level))[top], deltas[top]))
    return jnp.concatenate(proposals)


def roi_align(pyramid: list[jax.Array], boxes: jax.Array, out: int) -> jax.Array:
    """Multi-level RoIAlign (aligned, 2x2 samples per bin) over P2-P5: (R, out, out, C).

    Each box reads the level ``clip(floor(4 + log2(sqrt(area) / 224)), 2, 5)``; the levels are
    flattened into one table and the four bilinear neighbours are gathered from it.
    """
    levels = pyramid[:4]
    channels = levels[0].shape[-1]
    table = jnp.concatenate([f.reshape(-1, channels) for f in levels])
    sides = np.array([f.shape[1] for f in levels])
    offsets = np.concatenate([[0], np.cumsum(sides * sides)[:-1]])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    level = jnp.floor(4 + jnp.log2(jnp.sqrt(area) / 224 + 1e-8))
    idx = jnp.clip(level, 2, 5).astype(jnp.int32) - 2
    side, offset = jnp.asarray(sides)[idx], jnp.asarray(offsets)[idx]
    scaled = boxes / jnp.asarray(2.0 ** np.arange(2, 6), jnp.float32)[idx][:, None] - 0.5
    grid = (jnp.arange(2 * out, dtype=jnp.float32) + 0.5) / (2 * out)  # sample positions

    def axis(lo, hi):  # per-box sample coordinates, integer corners and weights
        pos = lo[:, None] + grid[None] * (hi - lo)[:, None]
        pos = jnp.clip(pos, 0.0, (side - 1)[:, None].astype(jnp.float32))
        i0 = jnp.floor(pos).astype(jnp.int32)
        i1 = jnp.minimum(i0 + 1, (side - 1)[:, None])
        return i0, i1, pos - i0

    y0, y1, ly = axis(scaled[:, 1], scaled[:, 3])
    x0, x1, lx = axis(scaled[:, 0], scaled[:, 2])
    base = offset[:, None, None]
    row = side[:, None, None]

    def gather(yi, xi):
        return table[base + yi[:, :, None] * row + xi[:, None, :]]

    ly, lx = ly[:, :, None, None], lx[:, None, :, None]
    samples = ((1 - ly) * ((1 - lx) * gather(y0, x0) + lx * gather(y0, x1))
               + ly * ((1 - lx) * gather(y1, x0) + lx * gather(y1, x1)))
    return samples.reshape(-1, out, 2, out, 2, channels).mean(axis=(2, 4))


def box_head(p: dict, pyramid: list[jax.Array], proposals: jax.Array):
    """RoIAlign 7x7, two FC-1024, then class probabilities (R, 81) and boxes (R, 81, 4)."""
    x = roi_align(pyramid, proposals, 7).reshape(proposals.shape[0], -1)
    x = jax.nn.relu(dense(p["fc2"], jax.nn.relu(dense(p["fc1"], x))))
    probs = jax.nn.softmax(dense(p["cls"], x), axis=-1)
    deltas = dense(p["bbox"], x).reshape(-1, NUM_CLASSES, 4)
    return probs, decode_boxes(proposals[:, None, :], deltas, (10.0, 10.0, 5.0, 5.0))


def init_params(gen: Params, fpn_in=(256, 512, 1024, 2048)) -> dict:
    """Backbone, FPN, RPN and box-head parameters as a nested dict."""
    return {
        "backbone": resnet50_params(gen),
        "fpn": {"lateral": [conv_params(gen, 1, 1, c, FPN_DIM, bias=True) for c in fpn_in],
                "output": [conv_params(gen, 3, 3, FPN_DIM, FPN_DIM, bias=True) for _ in fpn_in]},
        "rpn": {"conv": conv_params(gen, 3, 3, FPN_DIM, FPN_DIM, bias=True),
                "objectness": {"w": gen.normal((1, 1, FPN_DIM, 3), 0.01),
                               "b": jnp.zeros((3,), jnp.float32)},
                "deltas": {"w": gen.normal((1, 1, FPN_DIM, 12), 0.001),
                           "b": jnp.zeros((12,), jnp.float32)}},
        "box_head": {"fc1": dense_params(gen, 7 * 7 * FPN_DIM, 1024),
                     "fc2": dense_params(gen, 1024, 1024),
                     "cls": dense_params(gen, 1024, NUM_CLASSES, std=0.01),
                     "bbox": dense_params(gen, 1024, NUM_CLASSES * 4, std=0.001)},
    }


def features(params: dict, image: jax.Array) -> list[jax.Array]:
    """Backbone + FPN on a (1, H, W, 3) image; returns P2-P6 without the batch axis."""
    return [f[0] for f in fpn(params["fpn"], resnet50(params["backbone"], image))]


def faster_rcnn(params: dict, image: jax.Array):
    """Faster R-CNN on a (1, H, W, 3) image: proposals (k, 4), probs (k, 81), boxes (k, 81, 4)."""
    pyramid = features(params, image)
    proposals = rpn_proposals(params["rpn"], pyramid)
    probs, boxes = box_head(params["box_head"], pyramid, proposals)
    return proposals, probs, boxes


def example() -> tuple[Callable, tuple]:
    """``(faster_rcnn, (params, image))``: seed-0 weights, a seed-1 320x320 random image."""
    image = Params(1).normal((1, IMAGE_SIZE, IMAGE_SIZE, 3), 1.0)
    return faster_rcnn, (init_params(Params(0)), image)
