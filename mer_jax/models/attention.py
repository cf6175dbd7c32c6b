"""Attention parts: spatial attention pool, temporal attention and softmax pooling.

* `SpatialAttentionPool` ("attention" spatial pool): scores every position of a
  frame's feature map, softmax over the `h * w` positions, attention-weighted
  sum of the features. The map is sown for visualisation.
* `TemporalSoftmaxHead` ("temporal_softmax" temporal head): temporal softmax
  pooling after Aminbeidokhti et al. 2019, "Emotion Recognition with Spatial
  Attention and Temporal Softmax Pooling": per-frame class scores, a softmax
  over the valid frames of each class's scores, and the weighted sum.

Masking helpers (and `TemporalPool`, the sequence reducer) live in
`mer_jax.models.sequence`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mer_jax import schema
from mer_jax.models.sequence import check_sequence, masked_softmax, zero_padded


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
