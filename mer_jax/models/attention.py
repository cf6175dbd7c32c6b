"""Attention parts: spatial attention pool, temporal attention and softmax pooling.

* `SpatialAttentionPool` ("attention" spatial pool): scores every position of a
  frame's feature map, softmax over the `h * w` positions, attention-weighted
  sum of the features. The map is sown for visualisation.
* `TemporalPool`: reduces a per-step sequence `(B, N, D)` to `(B, D)` over the
  valid steps only, by the last valid step, the mean, or learned attention.
  The recurrent and convolutional temporal heads use it for their `output`.
* `TemporalSoftmaxHead` ("temporal_softmax" temporal head): temporal softmax
  pooling after Aminbeidokhti et al. 2019, "Emotion Recognition with Spatial
  Attention and Temporal Softmax Pooling": per-frame class scores, a softmax
  over the valid frames of each class's scores, and the weighted sum.

Padded frames (mask False) are a suffix of each clip. They get exactly zero
weight everywhere here, and their values are replaced by zeros before any
arithmetic, so even non-finite padding cannot leak into outputs or gradients.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mer_jax import schema
from mer_jax.models.pooling import masked_mean
from mer_jax.models.registry import register_spatial_pool, register_temporal_head

OUTPUTS = ("last", "mean", "attention")


def check_sequence(x: jnp.ndarray, mask: jnp.ndarray, part: str) -> None:
  """Raises a ValueError unless `x` is `(B, N, D)` and `mask` is `(B, N)` bool."""
  if x.ndim != 3:
    raise ValueError(f"{part}: x must be (B, N, D) per-frame features, got shape {x.shape}")
  if mask.shape != x.shape[:2]:
    raise ValueError(f"{part}: mask must be (B, N) = {x.shape[:2]}, got shape {mask.shape}")
  if mask.dtype != jnp.bool_:
    raise ValueError(f"{part}: mask must be bool (True = real frame), got dtype {mask.dtype}")


def zero_padded(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Replaces the padded steps of `x` `(B, N, ...)` with zeros (`mask` `(B, N)`).

  `jnp.where` rather than a multiply, because `nan * 0` is `nan`.
  """
  mask = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
  return jnp.where(mask, x, jnp.zeros((), x.dtype))


def masked_softmax(logits: jnp.ndarray, mask: jnp.ndarray, axis: int = -1) -> jnp.ndarray:
  """Softmax of `logits` over `axis` restricted to `mask`; float32 weights.

  Masked entries get weight exactly 0 and the valid ones sum to 1. A slice with
  no valid entry gets all-zero weights (not NaN). `mask` must broadcast to
  `logits`.
  """
  logits = logits.astype(jnp.float32)
  mask = jnp.broadcast_to(mask, logits.shape)
  # Masked logits are zeroed first: an inf there would give 0 * inf = nan in the
  # softmax gradient even though its weight is zero.
  logits = jnp.where(mask, logits, 0.0)
  return jax.nn.softmax(logits, axis=axis, where=mask)


def last_valid(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """The last valid step of `x` `(B, N, D)` -> `(B, D)` (valid steps are a prefix).

  A clip with no valid step returns zeros.
  """
  lengths = jnp.sum(mask, axis=1, dtype=jnp.int32)
  index = jnp.maximum(lengths - 1, 0)
  last = jnp.take_along_axis(x, index[:, None, None], axis=1)[:, 0]
  return jnp.where((lengths > 0)[:, None], last, jnp.zeros((), x.dtype))


@register_spatial_pool("attention")
class SpatialAttentionPool(nn.Module):
  """Per-frame soft attention over the encoder's spatial grid.

  `(B*N, h, w, C) -> (B*N, C)`: a 1x1 convolution (or, with `hidden > 0`, a
  two-layer 1x1 conv MLP with tanh) scores each of the `h * w` positions, a
  softmax over positions turns the scores into weights, and the output is the
  weighted sum of the feature vectors. The weights `(B*N, h, w)` (float32, sum
  to 1 per frame) are sown as `intermediates/spatial_attention`.

  Attributes:
    hidden: width of the scoring MLP's hidden layer; 0 for a linear 1x1 conv.
    temperature: softmax temperature (> 0); larger spreads attention out.
    dtype: compute dtype of the scoring convolutions.
  """
  hidden: int = 0
  temperature: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train
    if x.ndim != 4:
      raise ValueError(f"SpatialAttentionPool: x must be a (B*N, h, w, C) feature map, "
                       f"got shape {x.shape}")
    if self.temperature <= 0:
      raise ValueError(f"SpatialAttentionPool: temperature must be > 0, got {self.temperature}")
    scores = x.astype(self.dtype)
    if self.hidden > 0:
      scores = nn.tanh(nn.Conv(self.hidden, (1, 1), dtype=self.dtype, name="score_hidden")(scores))
    scores = nn.Conv(1, (1, 1), dtype=self.dtype, name="score")(scores)[..., 0]
    frames, height, width = scores.shape
    logits = scores.reshape(frames, height * width).astype(jnp.float32) / self.temperature
    weights = jax.nn.softmax(logits, axis=-1).reshape(frames, height, width)
    self.sow("intermediates", "spatial_attention", weights)
    pooled = jnp.einsum("fhw,fhwc->fc", weights.astype(x.dtype), x)
    return pooled


class TemporalPool(nn.Module):
  """Reduces a per-step sequence `(B, N, D)` to `(B, D)` over valid steps.

  `output`: "last" (the last valid step; valid steps are a prefix), "mean"
  (mean over valid steps) or "attention" (a `Dense(hidden) -> tanh -> Dense(1)`
  score per step, softmax over the valid steps, weighted sum; the weights
  `(B, N)` float32 are sown as `intermediates/temporal_attention` and are zero
  on padded steps).

  Attributes:
    output: "last" | "mean" | "attention".
    hidden: hidden width of the attention scorer (0 = linear scorer).
    dtype: compute dtype of the attention scorer.
  """
  output: str = "mean"
  hidden: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    if self.output not in OUTPUTS:
      raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
    check_sequence(x, mask, type(self).__name__)
    x = zero_padded(x, mask)
    if self.output == "last":
      return last_valid(x, mask)
    if self.output == "mean":
      return masked_mean(x, mask)
    scores = x.astype(self.dtype)
    if self.hidden > 0:
      scores = nn.tanh(nn.Dense(self.hidden, dtype=self.dtype, name="score_hidden")(scores))
    scores = nn.Dense(1, dtype=self.dtype, name="score")(scores)[..., 0]
    weights = masked_softmax(scores, mask, axis=1)
    self.sow("intermediates", "temporal_attention", weights)
    return jnp.einsum("bn,bnd->bd", weights.astype(x.dtype), x)


@register_temporal_head("temporal_softmax")
class TemporalSoftmaxHead(nn.Module):
  """Temporal softmax pooling (Aminbeidokhti et al. 2019): `(B, N, D) -> (B, K)`.

  A Dense layer gives each frame `K = num_scores` class scores `s[b, t, k]`.
  For each class, a softmax over the valid frames of `s[b, :, k] / temperature`
  gives frame weights `w[b, t, k]` (the frames that most support class k), and
  the output is `sum_t w[b, t, k] * s[b, t, k]`: a smooth maximum over time
  that tends to max pooling as `temperature -> 0` and to the mean as it grows.
  The weights `(B, N, K)` float32 are sown as `intermediates/temporal_weights`
  (zero on padded frames, summing to 1 over the valid frames).

  Attributes:
    num_scores: K, per-frame scores (classes) pooled; the model's classifier
      then maps these K pooled scores to the logits.
    temperature: softmax temperature (> 0).
    dtype: compute dtype of the scoring layer.
  """
  num_scores: int = schema.NUM_CLASSES
  temperature: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train
    check_sequence(x, mask, type(self).__name__)
    if self.temperature <= 0:
      raise ValueError(f"TemporalSoftmaxHead: temperature must be > 0, got {self.temperature}")
    x = zero_padded(x, mask)
    scores = nn.Dense(self.num_scores, dtype=self.dtype, name="frame_scores")(x)
    scores = scores.astype(jnp.float32)
    weights = masked_softmax(scores / self.temperature, mask[:, :, None], axis=1)
    self.sow("intermediates", "temporal_weights", weights)
    return jnp.sum(weights * zero_padded(scores, mask), axis=1).astype(self.dtype)
