"""`MERModel`: the clip classifier composed from registered parts by config."""

from __future__ import annotations

import numbers
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mer_jax import schema
from mer_jax.models import registry

INPUT_MODES = ("rgb", "rgb+diff", "diff", "flow")
PIXEL_MODES = ("rgb", "rgb+diff", "diff")
# Flow features: (u, v, strain) of onset->apex, optionally followed by those of apex->offset.
FLOW_CHANNELS = (3, 6)

# Pixel statistics in 0..255 units, RGB order.
# VGGFace2 subtracts its BGR mean [91.4953, 103.8827, 131.0912] and does not scale.
VGGFACE2_MEAN_RGB = (131.0912, 103.8827, 91.4953)
PIXEL_STATS = {
    "vggface2": (VGGFACE2_MEAN_RGB, (1.0, 1.0, 1.0)),
    "centered": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
}


class MERModel(nn.Module):
  """magnifier (optional) -> encoder -> spatial pool -> temporal head -> [hidden] -> classifier.

  Pixel inputs are raw values so that the input pipeline can ship compact uint8
  batches to the device and magnification can run on [0, 1] frames inside the
  jitted step; normalisation happens here, after magnification. Flow inputs
  (`input_mode="flow"`) arrive as float features, already normalised by the
  input pipeline, and pass through unchanged.

  Attributes:
    encoder, spatial_pool, temporal_head: parts from `mer_jax.models.registry`.
    num_classes: number of output classes.
    magnifier: optional module mapping `(B, N, H, W, 3)` frames in [0, 1] to the
      same shape (`mer_jax.magnify`).
    input_mode: "rgb" (frames), "diff" (frame minus the clip's first frame),
      "rgb+diff" (both, 6 channels), or "flow": optical-flow features (u, v,
      strain; C = 6 with apex->offset appended, `mer_jax.flow`) given as
      one-frame clips, used as they come (no pixel statistics, no
      magnification). Micro-expression motion is about a pixel, so the
      difference images make it visible to a small encoder; pretrained RGB
      encoders need "rgb"; the motion encoders (`mer_jax.models.motion`) need
      "flow".
    pixel_mean, pixel_std: per-channel RGB statistics in 0..255 units (pixel
      modes only).
    dropout_rate: dropout before the classifier and after each hidden layer.
    classifier_hidden: widths of Dense + ReLU (+ dropout) layers between the
      clip features and the final Dense, named `classifier_hidden_0`, ...;
      `()` (default) is a single Dense `classifier`. Two widths give the seed
      paper's {fc1, fc2, fc3} head (Section 3.1), `(1024, 1024)`
      OFF-ApexNet's.
    flow_standardize: flow input only: each input feature (position x
      channel) z-scored by a BatchNorm without scale or bias, whose running
      mean and variance come from the fold's training batches (the
      StandardScaler of the classical baseline, benchmarks/
      classical_baseline.py). It removes each position's typical motion
      (head drift) and puts faint and strong tiers on one scale, which
      per-sample min-max scaling does not. Pair it with `config.flow.normalize
      = "fixed"`, which keeps magnitudes comparable between clips.
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
  classifier_hidden: Sequence[int] = ()
  flow_standardize: bool = False
  dtype: Any = jnp.float32

  @property
  def per_frame(self) -> bool:
    """True when the model returns per-frame logits `(B, N, C)`."""
    return bool(getattr(type(self.temporal_head), "per_frame", False))

  @nn.compact
  def __call__(self, frames: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """Classifies clips.

    Args:
      frames: `(B, N, H, W, 3)` RGB pixel values in 0..255 (uint8 or float);
        with `input_mode="flow"`, float flow features `(B, N, S, S, C)`, C = 3
        (u, v, strain) or 6 (then those of apex->offset), N = 1 from the
        trainer.
      mask: `(B, N)` bool, True for real frames, False for padding.
      train: training mode (dropout, BatchNorm statistics).

    Returns:
      float32 logits `(B, num_classes)`, or `(B, N, num_classes)` for a
      per-frame temporal head.
    """
    self._check_inputs(frames, mask)
    batch, num_frames = frames.shape[:2]
    if self.input_mode == "flow":
      x = frames.astype(jnp.float32)  # Normalised by the input pipeline.
      if self.flow_standardize:
        # Statistics over the batch only: every other axis is a feature.
        x = nn.BatchNorm(use_running_average=not train, axis=(-3, -2, -1), momentum=0.9,
                         epsilon=1e-6, use_bias=False, use_scale=False,
                         name="flow_standardize")(x)
    else:
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
    for i, width in enumerate(self.classifier_hidden):
      clip = nn.Dense(width, dtype=self.dtype, name=f"classifier_hidden_{i}")(clip)
      clip = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(clip))
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(clip)
    return logits.astype(jnp.float32)

  def _check_inputs(self, frames: jnp.ndarray, mask: jnp.ndarray) -> None:
    """Raises a ValueError naming the argument or field when the input does not fit the mode."""
    if self.input_mode not in INPUT_MODES:
      raise ValueError(f"config.model.input_mode must be one of {INPUT_MODES}, got "
                       f"{self.input_mode!r}")
    _check_encoder_mode(type(self.encoder), self.input_mode)
    if self.input_mode == "flow":
      if self.magnifier is not None:
        raise ValueError(_MAGNIFY_FLOW_ERROR)
      if frames.ndim != 5 or frames.shape[-1] not in FLOW_CHANNELS:
        raise ValueError(
            f"frames: input_mode='flow' takes flow features (B, N, S, S, C) with C = 3 (u, v, "
            f"strain) or 6 (onset->apex then apex->offset), got shape {frames.shape}")
      if not jnp.issubdtype(frames.dtype, jnp.floating):
        raise ValueError(
            f"frames: input_mode='flow' takes float flow features, got {frames.dtype} values "
            f"of shape {frames.shape}; pixel frames need config.model.input_mode in "
            f"{PIXEL_MODES}")
    else:
      if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be (B, N, H, W, 3) RGB pixels for config.model.input_mode="
            f"{self.input_mode!r}, got shape {frames.shape}; flow features (u, v, strain) need "
            "config.model.input_mode='flow'")
      if self.input_mode != "rgb" and frames.shape[1] < 2:
        raise ValueError(
            f"frames: config.model.input_mode={self.input_mode!r} subtracts each clip's first "
            f"frame, so one-frame clips (shape {frames.shape}) give all-zero difference images; "
            "flow features as one-frame clips need config.model.input_mode='flow'")
    if mask.shape != frames.shape[:2]:
      raise ValueError(f"mask must be (B, N) = {frames.shape[:2]}, got {mask.shape}")


_MAGNIFY_FLOW_ERROR = (
    "config.model.magnify must be None with config.model.input_mode='flow': magnification "
    "acts on pixel frames inside the model, and flow features are computed before it; "
    "magnify the frames before computing the flow instead")


def _check_encoder_mode(encoder_class: type, input_mode: str) -> None:
  """Refuses an encoder that declares `input_modes` (e.g. the flow encoders) any other mode."""
  modes = getattr(encoder_class, "input_modes", None)
  if modes is not None and input_mode not in modes:
    raise ValueError(
        f"config.model.input_mode={input_mode!r}: encoder {encoder_class.__name__} reads "
        f"{' or '.join(repr(m) for m in modes)} input (flow features u, v, strain from "
        f"mer_jax.flow), so set config.model.input_mode={modes[0]!r}")


def check_model_config(model_config: Mapping[str, Any]) -> None:
  """Checks every enumerated field of `config.model` without building anything.

  Raises a ValueError naming the field: an unknown part name, an argument the
  named part does not have, an unknown `input_mode` or `pixel_stats`, an
  encoder that cannot read the `input_mode`, magnification of flow input, a
  dropout rate outside [0, 1), `classifier_hidden` widths that are not
  positive integers.
  """
  for kind, default in (("encoder", None), ("spatial_pool", "mean"), ("temporal_head", "mean")):
    name = model_config.get(kind, default)
    if not name:
      raise ValueError(f"config.model.{kind} must name a part; registered: "
                       f"{registry.available()[kind]}")
    registry.check_part_kwargs(kind, name, model_config.get(f"{kind}_kwargs", None))
  input_mode = model_config.get("input_mode", "rgb")
  if input_mode not in INPUT_MODES:
    raise ValueError(f"config.model.input_mode must be one of {INPUT_MODES}, got "
                     f"{input_mode!r}")
  _check_encoder_mode(registry.part_class("encoder", model_config["encoder"]), input_mode)
  if input_mode == "flow" and model_config.get("magnify", None):
    raise ValueError(_MAGNIFY_FLOW_ERROR)
  if model_config.get("pixel_stats", "centered") not in PIXEL_STATS:
    raise ValueError(f"config.model.pixel_stats must be one of {sorted(PIXEL_STATS)}, "
                     f"got {model_config.get('pixel_stats')!r}")
  if model_config.get("flow_standardize", False) and input_mode != "flow":
    raise ValueError(f"config.model.flow_standardize=True z-scores flow features and needs "
                     f"config.model.input_mode='flow', got {input_mode!r}")
  rate = model_config.get("dropout_rate", 0.0)
  if not 0.0 <= float(rate) < 1.0:
    raise ValueError(f"config.model.dropout_rate must be in [0, 1), got {rate}")
  hidden = model_config.get("classifier_hidden", None) or ()
  if (isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence)
      or not all(isinstance(w, numbers.Integral) and not isinstance(w, bool) and w > 0
                  for w in hidden)):
    raise ValueError(f"config.model.classifier_hidden must be a sequence of positive integers "
                     f"(Dense widths before the classifier; () for none), got {hidden!r}")


def create_model(model_config: Mapping[str, Any], *,
                 num_classes: int = schema.NUM_CLASSES, dtype: Any = jnp.float32) -> MERModel:
  """Builds a `MERModel` from `config.model` (a ConfigDict or any mapping).

  `model_config` fields: `encoder`, `encoder_kwargs`, `spatial_pool`,
  `spatial_pool_kwargs`, `temporal_head`, `temporal_head_kwargs`, `input_mode`,
  `pixel_stats` ("vggface2" | "centered"), `dropout_rate`, optionally
  `classifier_hidden` (hidden Dense widths before the classifier; default
  none) and `magnify` (a ConfigDict of `mer_jax.magnify.EulerianMagnification`
  fields, or None for no magnification).
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
      classifier_hidden=tuple(int(w) for w in model_config.get("classifier_hidden", None) or ()),
      flow_standardize=bool(model_config.get("flow_standardize", False)),
      dtype=dtype,
  )
