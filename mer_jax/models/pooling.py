"""Parameter-free pooling parts: spatial mean, masked temporal mean, per-frame."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mer_jax.models.registry import register_spatial_pool, register_temporal_head


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Mean of `x` `(B, N, D)` over the valid steps of `mask` `(B, N)` -> `(B, D)`.

  Padded steps get zero weight, so their values never reach the output. A clip
  with no valid step returns zeros rather than NaN.
  """
  weights = mask.astype(x.dtype)[..., None]
  total = jnp.sum(x * weights, axis=1)
  count = jnp.maximum(jnp.sum(weights, axis=1), 1.0)
  return total / count


@register_spatial_pool("mean")
class SpatialMeanPool(nn.Module):
  """Global average over the feature map: `(B*N, h, w, C) -> (B*N, C)`."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train
    return jnp.mean(x, axis=(1, 2))


@register_temporal_head("mean")
class TemporalMeanPool(nn.Module):
  """Order-free baseline: masked mean over frames, `(B, N, D) -> (B, D)`."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train
    return masked_mean(x, mask)


@register_temporal_head("frames")
class PerFrame(nn.Module):
  """Frame-level training (seed paper Section 3.1): no temporal model at all.

  Returns the per-frame features `(B, N, D)`; the classifier is applied to each
  frame, every frame carries its clip's label in the loss, and the clip
  prediction averages the valid frames' probabilities.
  """
  per_frame = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del mask, train
    return x
