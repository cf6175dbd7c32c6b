"""Masked-sequence helpers shared by every temporal part (a leaf: imports no other part).

A clip's per-frame features are `(B, N, D)` with a `(B, N)` bool mask, True for
real frames. Padded frames are a suffix of each clip. The helpers give padded
steps exactly zero weight and replace their values by zeros before any
arithmetic, so even non-finite padding cannot leak into outputs or gradients.

`TemporalPool` reduces a sequence to one vector per clip ("last" | "mean" |
"attention"); the recurrent and convolutional heads use it for their `output`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Mean of `x` `(B, N, D)` over the valid steps of `mask` `(B, N)` -> `(B, D)`.

  Padded steps get zero weight, so their values never reach the output. A clip
  with no valid step returns zeros rather than NaN.
  """
  weights = mask.astype(x.dtype)[..., None]
  total = jnp.sum(x * weights, axis=1)
  count = jnp.maximum(jnp.sum(weights, axis=1), 1.0)
  return total / count


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
