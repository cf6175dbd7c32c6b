"""`MERModel`: the clip classifier composed from registered parts by config."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mer_jax import schema
from mer_jax.models import registry

INPUT_MODES = ("rgb", "rgb+diff", "diff")

# Pixel statistics in 0..255 units, RGB order.
# VGGFace2 subtracts its BGR mean [91.4953, 103.8827, 131.0912] and does not scale.
VGGFACE2_MEAN_RGB = (131.0912, 103.8827, 91.4953)
PIXEL_STATS = {
    "vggface2": (VGGFACE2_MEAN_RGB, (1.0, 1.0, 1.0)),
    "centered": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
}


class MERModel(nn.Module):
  """magnifier (optional) -> encoder -> spatial pool -> temporal head -> classifier.

  Inputs are raw pixel values so that the input pipeline can ship compact uint8
  batches to the device and magnification can run on [0, 1] frames inside the
  jitted step; normalisation happens here, after magnification.

  Attributes:
    encoder, spatial_pool, temporal_head: parts from `mer_jax.models.registry`.
    num_classes: number of output classes.
    magnifier: optional module mapping `(B, N, H, W, 3)` frames in [0, 1] to the
      same shape (`mer_jax.magnify`).
    input_mode: "rgb" (frames), "diff" (frame minus the clip's first frame) or
      "rgb+diff" (both, 6 channels). Micro-expression motion is about a pixel,
      so the difference images make it visible to a small encoder; pretrained
      RGB encoders need "rgb".
    pixel_mean, pixel_std: per-channel RGB statistics in 0..255 units.
    dropout_rate: dropout before the classifier.
    dtype: compute dtype (parameters stay float32; logits are float32).
  """
  encoder: nn.Module
  spatial_pool: nn.Module
  temporal_head: nn.Module
  num_classes: int = schema.NUM_CLASSES
  magnifier: Optional[nn.Module] = None
  input_mode: str = "rgb"
  pixel_mean: Sequence[float] = PIXEL_STATS["centered"][0]
  pixel_std: Sequence[float] = PIXEL_STATS["centered"][1]
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @property
  def per_frame(self) -> bool:
    """True when the model returns per-frame logits `(B, N, C)`."""
    return bool(getattr(type(self.temporal_head), "per_frame", False))

  @nn.compact
  def __call__(self, frames: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """Classifies clips.

    Args:
      frames: `(B, N, H, W, 3)` RGB pixel values in 0..255 (uint8 or float).
      mask: `(B, N)` bool, True for real frames, False for padding.
      train: training mode (dropout, BatchNorm statistics).

    Returns:
      float32 logits `(B, num_classes)`, or `(B, N, num_classes)` for a
      per-frame temporal head.
    """
    if frames.ndim != 5 or frames.shape[-1] != 3:
      raise ValueError(f"frames must be (B, N, H, W, 3), got shape {frames.shape}")
    if mask.shape != frames.shape[:2]:
      raise ValueError(f"mask must be (B, N) = {frames.shape[:2]}, got {mask.shape}")
    if self.input_mode not in INPUT_MODES:
      raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {self.input_mode!r}")
    batch, num_frames = frames.shape[:2]
    x = frames.astype(jnp.float32) / 255.0
    if self.magnifier is not None:
      x = self.magnifier(x)
    mean = jnp.asarray(self.pixel_mean, jnp.float32) / 255.0
    std = jnp.asarray(self.pixel_std, jnp.float32) / 255.0
    x = (x - mean) / std
    if self.input_mode != "rgb":
      # Difference images carry the motion; scaled up because it is small.
      diff = (x - x[:, :1]) * 4.0
      x = diff if self.input_mode == "diff" else jnp.concatenate([x, diff], axis=-1)
    x = x.astype(self.dtype)
    x = x.reshape((batch * num_frames,) + x.shape[2:])
    feature_map = self.encoder(x, train=train)
    pooled = self.spatial_pool(feature_map, train=train)
    pooled = pooled.reshape((batch, num_frames) + pooled.shape[1:])
    clip = self.temporal_head(pooled, mask, train=train)
    clip = nn.Dropout(self.dropout_rate, deterministic=not train)(clip)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(clip)
    return logits.astype(jnp.float32)


def check_model_config(model_config: Mapping[str, Any]) -> None:
  """Checks every enumerated field of `config.model` without building anything.

  Raises a ValueError naming the field: an unknown part name, an argument the
  named part does not have, an unknown `input_mode` or `pixel_stats`, a
  dropout rate outside [0, 1).
  """
  for kind, default in (("encoder", None), ("spatial_pool", "mean"), ("temporal_head", "mean")):
    name = model_config.get(kind, default)
    if not name:
      raise ValueError(f"config.model.{kind} must name a part; registered: "
                       f"{registry.available()[kind]}")
    registry.check_part_kwargs(kind, name, model_config.get(f"{kind}_kwargs", None))
  if model_config.get("input_mode", "rgb") not in INPUT_MODES:
    raise ValueError(f"config.model.input_mode must be one of {INPUT_MODES}, got "
                     f"{model_config.get('input_mode')!r}")
  if model_config.get("pixel_stats", "centered") not in PIXEL_STATS:
    raise ValueError(f"config.model.pixel_stats must be one of {sorted(PIXEL_STATS)}, "
                     f"got {model_config.get('pixel_stats')!r}")
  rate = model_config.get("dropout_rate", 0.0)
  if not 0.0 <= float(rate) < 1.0:
    raise ValueError(f"config.model.dropout_rate must be in [0, 1), got {rate}")


def create_model(model_config: Mapping[str, Any], *,
                 num_classes: int = schema.NUM_CLASSES, dtype: Any = jnp.float32) -> MERModel:
  """Builds a `MERModel` from `config.model` (a ConfigDict or any mapping).

  `model_config` fields: `encoder`, `encoder_kwargs`, `spatial_pool`,
  `spatial_pool_kwargs`, `temporal_head`, `temporal_head_kwargs`, `input_mode`,
  `pixel_stats` ("vggface2" | "centered"), `dropout_rate`, and optionally
  `magnify` (a ConfigDict of `mer_jax.magnify.EulerianMagnification` fields, or
  None for no magnification).
  """
  def kwargs(field: str) -> dict:
    value = model_config.get(field, None)
    return dict(value) if value else {}

  check_model_config(model_config)
  mean, std = PIXEL_STATS[model_config.get("pixel_stats", "centered")]
  magnifier = None
  magnify_config = model_config.get("magnify", None)
  if magnify_config:
    from mer_jax import magnify  # Lazy: only configs that magnify need it.
    magnifier = magnify.EulerianMagnification(**dict(magnify_config), name="magnifier")
  return MERModel(
      encoder=registry.build_part("encoder", model_config["encoder"], kwargs("encoder_kwargs"),
                                  dtype=dtype),
      spatial_pool=registry.build_part("spatial_pool", model_config.get("spatial_pool", "mean"),
                                       kwargs("spatial_pool_kwargs"), dtype=dtype),
      temporal_head=registry.build_part("temporal_head",
                                        model_config.get("temporal_head", "mean"),
                                        kwargs("temporal_head_kwargs"), dtype=dtype),
      num_classes=num_classes,
      magnifier=magnifier,
      input_mode=model_config.get("input_mode", "rgb"),
      pixel_mean=mean,
      pixel_std=std,
      dropout_rate=model_config.get("dropout_rate", 0.0),
      dtype=dtype,
  )
