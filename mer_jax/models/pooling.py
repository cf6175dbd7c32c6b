"""Parameter-free pooling parts: spatial mean, masked temporal mean, per-frame."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from mer_jax.models.sequence import masked_mean


class SpatialMeanPool(nn.Module):
  """Global average over the feature map: `(B*N, h, w, C) -> (B*N, C)`."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train
    return jnp.mean(x, axis=(1, 2))


class TemporalMeanPool(nn.Module):
  """Order-free baseline: masked mean over frames, `(B, N, D) -> (B, D)`."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train
    return masked_mean(x, mask)


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


class SpatialFlatten(nn.Module):
  """Keeps the spatial layout: `(B*N, h, w, C) -> (B*N, h*w*C)`.

  On roughly aligned faces *where* a motion happens (brows vs mouth corners)
  separates the classes; global averaging discards exactly that.
  """

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train
    return x.reshape((x.shape[0], -1))


class SpatialGridPool(nn.Module):
  """Averages the feature map over a coarse `grid_size` x `grid_size` grid.

  `(B*N, h, w, C) -> (B*N, grid_size**2 * C)`. Keeps *roughly where* features
  are (brows vs cheeks vs mouth on a face crop) with far fewer classifier
  weights than `flatten`, which overfits small micro-expression datasets.
  Cells follow adaptive pooling: cell i spans rows floor(i h / g) to
  ceil((i + 1) h / g).
  """
  grid_size: int = 3

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train
    h, w = x.shape[1], x.shape[2]
    g = self.grid_size
    if g < 1 or g > min(h, w):
      raise ValueError(f"grid_size={g} must be in [1, {min(h, w)}] for a {h}x{w} feature map")
    bounds = lambda n, i: (i * n // g, -(-(i + 1) * n // g))
    cells = []
    for i in range(g):
      r0, r1 = bounds(h, i)
      for j in range(g):
        c0, c1 = bounds(w, j)
        cells.append(jnp.mean(x[:, r0:r1, c0:c1, :], axis=(1, 2)))
    return jnp.concatenate(cells, axis=-1)


class SpatialMaxPool(nn.Module):
  """Global max over the feature map: `(B*N, h, w, C) -> (B*N, C)`.

  A micro-expression moves ~10 % of the face; averaging dilutes a local motion
  detector's response by the other 90 % (where rigid head motion dominates),
  the maximum keeps it.
  """

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train
    return jnp.max(x, axis=(1, 2))
