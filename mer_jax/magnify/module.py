"""`EulerianMagnification`: `eulerian_magnify` as a Flax Linen module.

Used by `mer_jax.models.mer_model.create_model` as the optional first stage
of a clip classifier (`config.model.magnify` holds the fields below). With
`learnable_alpha` the amplification becomes a scalar parameter "alpha",
trained end to end with the classifier.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from mer_jax.magnify import core


class EulerianMagnification(nn.Module):
  """Magnifies `(B, N, H, W, 3)` float frames in [0, 1]; returns the same shape and dtype.

  Attributes: the keyword arguments of `eulerian_magnify` (see there), plus
    learnable_alpha: make alpha a float32 scalar parameter named "alpha",
      initialised to `alpha`.
  """
  fps: float
  low_hz: float
  high_hz: float
  alpha: float
  method: str = "gaussian"
  levels: Optional[int] = None
  lambda_c: float = 16.0
  chrom_attenuation: float = 0.1
  temporal_filter: str = "ideal"
  r1: Optional[float] = None
  r2: Optional[float] = None
  reference_compat: bool = False
  clip: bool = True
  batch_chunk_size: Optional[int] = None
  learnable_alpha: bool = False

  @nn.compact
  def __call__(self, frames: jnp.ndarray) -> jnp.ndarray:
    """frames: `(B, N, H, W, 3)` float in [0, 1] -> magnified, same shape and dtype."""
    if frames.ndim != 5:
      raise ValueError(f"EulerianMagnification: frames must be (B, N, H, W, 3), got shape "
                       f"{tuple(frames.shape)}")
    alpha = self.alpha
    if self.learnable_alpha:
      core._check_scalar("alpha", alpha)  # A bad initial value fails here, not in init.
      alpha = self.param("alpha", lambda _: jnp.asarray(self.alpha, jnp.float32))
    return core.eulerian_magnify(
        frames, fps=self.fps, low_hz=self.low_hz, high_hz=self.high_hz, alpha=alpha,
        method=self.method, levels=self.levels, lambda_c=self.lambda_c,
        chrom_attenuation=self.chrom_attenuation, temporal_filter=self.temporal_filter,
        r1=self.r1, r2=self.r2, reference_compat=self.reference_compat, clip=self.clip,
        batch_chunk_size=self.batch_chunk_size)
