"""The spotting network (per-frame scores) and the recogniser of spotted intervals (Flax).

`FrameSpotter`: per-frame motion maps `(B, T, P, P, 3)` -> logits `(B, T, 3)`
over {background, micro, macro}. Two dense layers encode each frame's maps
into a vector; a stack of residual dilated temporal convolutions (dilations 1, 2,
4, ...) mixes frames, so that a frame on a macro-expression's plateau (no
motion of its own) is scored from the rise before and the fall after it. The
temporal receptive field is `receptive_radius` frames on each side.

`windowed_logits` scores a video of any length in fixed windows with that
much context on each side, batched: the stitched result equals scoring the
whole video at once with `receptive_radius` zero maps added at both ends.

`IntervalRecogniser`: onset->apex maps `(B, R, R, 3)` -> class logits.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NUM_FRAME_CLASSES = 3  # background, micro, macro
FRAME_CLASS_NAMES = ("background", "micro", "macro")


class FrameSpotter(nn.Module):
  """Per-frame expression scores from per-frame motion maps.

  Attributes:
    features: width of the frame encoder and the temporal blocks.
    dilations: one residual temporal block (kernel 3) per dilation.
  """
  features: int = 32
  dilations: Sequence[int] = (1, 2, 4, 8, 16, 32)

  @property
  def receptive_radius(self) -> int:
    return int(sum(self.dilations))

  @nn.compact
  def __call__(self, maps: jnp.ndarray) -> jnp.ndarray:
    """maps: float `(B, T, P, P, C)` -> logits float32 `(B, T, 3)`."""
    b, t = maps.shape[:2]
    # The maps are small (8 x 8 blocks): a dense layer over all blocks keeps where on the
    # face the motion is, at a fraction of a CNN's cost per frame.
    x = maps.reshape(b, t, -1)
    x = nn.relu(nn.Dense(2 * self.features)(x))
    x = nn.relu(nn.Dense(self.features)(x))
    for d in self.dilations:
      y = nn.Conv(self.features, (3,), kernel_dilation=(d,), padding=[(d, d)])(x)
      x = x + nn.relu(nn.LayerNorm()(y))
    return nn.Dense(NUM_FRAME_CLASSES)(x)


class IntervalRecogniser(nn.Module):
  """Class logits of an interval from its onset->apex maps.

  Attributes:
    num_classes: number of expression classes.
    features: CNN channels.
  """
  num_classes: int = 3
  features: int = 32

  @nn.compact
  def __call__(self, maps: jnp.ndarray) -> jnp.ndarray:
    """maps: float `(B, R, R, C)` -> logits `(B, num_classes)`."""
    x = nn.relu(nn.Conv(self.features // 2, (3, 3))(maps))
    x = nn.relu(nn.Conv(self.features, (3, 3), strides=(2, 2))(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.features)(x))
    return nn.Dense(self.num_classes)(x)


def windowed_logits(apply_fn: Callable[[jnp.ndarray], jnp.ndarray], maps: np.ndarray, *,
                    window: int, context: int, batch_size: int = 8) -> np.ndarray:
  """Scores a whole video `(T, P, P, C)` in windows; returns float32 `(T, 3)` logits.

  Each window covers `window` frames plus `context` frames of features on
  each side (zeros beyond the video); only its centre is kept. With
  `context >= receptive_radius` this equals scoring the whole video padded
  with `context` zero maps at both ends, in one piece.
  Windows are scored `batch_size` at a time (a fixed batch shape: one compile).
  """
  maps = np.asarray(maps, np.float32)
  num_frames = len(maps)
  starts = list(range(0, num_frames, window))
  padded = np.pad(maps, [(context, window + context)] + [(0, 0)] * (maps.ndim - 1))
  out = np.empty((num_frames, NUM_FRAME_CLASSES), np.float32)
  for i in range(0, len(starts), batch_size):
    chunk = starts[i:i + batch_size]
    batch = np.stack([padded[s:s + window + 2 * context] for s in chunk]
                     + [np.zeros_like(padded[:window + 2 * context])]
                     * (batch_size - len(chunk)))
    logits = np.asarray(apply_fn(jnp.asarray(batch)))
    for j, s in enumerate(chunk):
      n = min(window, num_frames - s)
      out[s:s + n] = logits[j, context:context + n]
  return out


def softmax(logits: np.ndarray) -> np.ndarray:
  """NumPy softmax over the last axis (float64 for stable post-processing)."""
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


def init_params(spotter: FrameSpotter, recogniser: IntervalRecogniser, rng: jax.Array, *,
                map_size: int, recognition_size: int) -> dict:
  """Parameters of both networks: {"spotter": ..., "recogniser": ...}."""
  spot_rng, rec_rng = jax.random.split(rng)
  return {
      "spotter": spotter.init(spot_rng, jnp.zeros((1, 8, map_size, map_size, 3)))["params"],
      "recogniser": recogniser.init(
          rec_rng, jnp.zeros((1, recognition_size, recognition_size, 3)))["params"],
  }
