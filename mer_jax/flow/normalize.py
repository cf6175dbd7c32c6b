"""Normalising flow features (u, v, strain) for a network.

* `minmax_normalize`: what STSTNet, OFF-ApexNet, HTNet and MEB do: each
  channel of each sample is mapped to [0, 1] by its own minimum and maximum.
  It discards the amplitude (a 0.1 px and a 3 px expression look alike) and
  amplifies noise when a sample barely moves.
* `fixed_range_normalize`: scale-preserving: displacements in pixels per frame
  pair are clipped to [-max_flow, max_flow] and strain to [0, max_strain],
  then mapped linearly to [0, 1] (or [-1, 1]) with the same constants for
  every sample, so amplitudes stay comparable across samples.
"""

from __future__ import annotations

import jax.numpy as jnp

OUTPUT_RANGES = ("unit", "symmetric")  # [0, 1] or [-1, 1].


def minmax_normalize(features: jnp.ndarray) -> jnp.ndarray:
  """Per-sample, per-channel min-max scaling of `(..., H, W, C)` to [0, 1].

  A constant channel (max == min) maps to 0.
  """
  features = jnp.asarray(features, jnp.float32)
  if features.ndim < 3:
    raise ValueError(f"features must be shaped (..., H, W, C), got shape {features.shape}")
  low = jnp.min(features, axis=(-3, -2), keepdims=True)
  high = jnp.max(features, axis=(-3, -2), keepdims=True)
  span = high - low
  return jnp.where(span > 0, (features - low) / jnp.where(span > 0, span, 1.0), 0.0)


def fixed_range_normalize(features: jnp.ndarray, *, max_flow: float = 2.0,
                          max_strain: float = 0.5, output: str = "unit") -> jnp.ndarray:
  """Scale-preserving normalisation of `(..., H, W, 2)` flow or `(..., H, W, 3)` (u, v, strain).

  Args:
    features: u, v in pixels (per frame pair) and optionally strain (pixels
      per pixel) as the last channel.
    max_flow: u, v are clipped to [-max_flow, max_flow] pixels. The default
      2 px covers micro-expressions at 112x112 (peak displacements of about
      1 px; synthetic_me's default is 0.8 px).
    max_strain: strain is clipped to [0, max_strain].
    output: "unit": u, v -> (x / max_flow + 1) / 2 and strain ->
      strain / max_strain, all in [0, 1] (zero motion is 0.5 for u, v);
      "symmetric": u, v -> x / max_flow and strain -> 2 strain / max_strain - 1,
      all in [-1, 1].

  Returns:
    float32 array of the same shape.
  """
  if output not in OUTPUT_RANGES:
    raise ValueError(f"output must be one of {OUTPUT_RANGES}, got {output!r}")
  for name, value in (("max_flow", max_flow), ("max_strain", max_strain)):
    if not isinstance(value, (int, float)) or not value > 0:
      raise ValueError(f"{name} must be a positive number, got {value!r}")
  features = jnp.asarray(features, jnp.float32)
  if features.ndim < 3 or features.shape[-1] not in (2, 3):
    raise ValueError(f"features must be shaped (..., H, W, 2) or (..., H, W, 3), got shape "
                     f"{features.shape}")
  flow = jnp.clip(features[..., :2], -max_flow, max_flow) / max_flow  # [-1, 1]
  if output == "unit":
    flow = 0.5 * (flow + 1.0)
  channels = [flow]
  if features.shape[-1] == 3:
    strain = jnp.clip(features[..., 2:], 0.0, max_strain) / max_strain  # [0, 1]
    channels.append(strain if output == "unit" else 2.0 * strain - 1.0)
  return jnp.concatenate(channels, axis=-1)
