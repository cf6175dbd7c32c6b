"""Per-frame motion features of a long video for spotting, and onset->apex features for recognition.

Spotting (`motion_features`): for every frame t, the TV-L1 flow between frames
`t - k // 2` and `t - k // 2 + k` (indices clamped to the video), so frame t
sits in the middle of the pair. As in SOFTNet, `k` is about half the typical
micro-expression length in frames (`frame_offset(fps, micro_mean_s)`: 5 at
30 fps, 35 at 200 fps for 0.35 s), long enough for a sub-pixel expression to
add up over the pair and short enough that a micro-expression still shows.
The median flow of the pair (a rigid head shift moves most pixels alike) is
subtracted before the optical strain is computed, then (u, v, strain) are
averaged over `pool x pool` blocks: `(T, S / pool, S / pool, 3)`.

Recognition (`pair_features`): the flow of chosen (onset, apex) pairs, median
removed, (u, v, strain) block-averaged and scaled by the pair's RMS flow so a
micro (1 px) and a macro (3 px) expression of one class look alike.

Frames enter as grey float32 `(T, S, S)` in [0, 1] (`grey_frames`). JAX and
NumPy only at import time; OpenCV is imported by `grey_frames`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mer_jax.flow import strain as strain_lib
from mer_jax.flow import tvl1

# TV-L1 settings for spotting: coarser than OpenCV's defaults (fixed iteration
# counts, no median filter) since features are block-averaged and every frame
# of a long video needs one flow; 256 pairs of 64 x 64 take about 1 s on one
# CPU core.
SPOTTING_TVL1 = tvl1.TVL1Params(num_scales=3, num_warps=2, inner_iterations=10,
                                outer_iterations=2, median_filtering=0, epsilon=0.0)
CHANNELS = ("u", "v", "strain")


def frame_offset(fps: float, micro_mean_s: float) -> int:
  """k = round(micro_mean_s * fps / 2), at least 1: the frame distance of the flow pairs."""
  if not (fps > 0 and micro_mean_s > 0):
    raise ValueError(f"frame_offset needs fps > 0 and micro_mean_s > 0, got fps={fps}, "
                     f"micro_mean_s={micro_mean_s}")
  return max(1, int(round(0.5 * micro_mean_s * fps)))


def grey_frames(frames: np.ndarray, size: int) -> np.ndarray:
  """uint8 RGB `(T, H, W, 3)` (or grey `(T, H, W)`) -> grey float32 `(T, size, size)` in [0, 1].

  Resized (area) so the short side is `size`, then centre-cropped.
  """
  import cv2  # pylint: disable=import-outside-toplevel
  frames = np.asarray(frames)
  if frames.ndim == 4:
    weights = np.asarray(tvl1.RGB_TO_GREY, np.float32)
    frames = frames.astype(np.float32) @ weights
  elif frames.ndim != 3:
    raise ValueError(f"frames must be (T, H, W, 3) or (T, H, W), got shape {frames.shape}")
  frames = frames.astype(np.float32) / 255.0
  _, height, width = frames.shape
  if (height, width) == (size, size):
    return np.ascontiguousarray(frames)
  scale = size / min(height, width)
  new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
  out = np.empty((len(frames), size, size), np.float32)
  top, left = (new_h - size) // 2, (new_w - size) // 2
  for t, frame in enumerate(frames):
    resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_AREA)
    out[t] = resized[top:top + size, left:left + size]
  return np.clip(out, 0.0, 1.0)


def pair_indices(num_frames: int, k: int) -> tuple[np.ndarray, np.ndarray]:
  """(first, second) frame index of every frame's pair: t - k//2 and t - k//2 + k, clamped."""
  t = np.arange(num_frames)
  first = np.clip(t - k // 2, 0, num_frames - 1)
  second = np.clip(t - k // 2 + k, 0, num_frames - 1)
  return first, second


def _block_mean(x: jnp.ndarray, pool: int) -> jnp.ndarray:
  b, h, w, c = x.shape
  return x.reshape(b, h // pool, pool, w // pool, pool, c).mean(axis=(2, 4))


def _motion(frame0: jnp.ndarray, frame1: jnp.ndarray, params: tvl1.TVL1Params) -> jnp.ndarray:
  """(B, S, S) pairs -> (B, S, S, 3) (u, v, strain) with the median flow removed."""
  flow = tvl1.tvl1_flow(frame0, frame1, **params.as_dict())
  flow = flow - jnp.median(flow, axis=(1, 2), keepdims=True)
  return strain_lib.flow_features(flow, "softnet")


@functools.partial(jax.jit, static_argnames=("params", "pool"))
def _pooled_motion(frame0, frame1, params: tvl1.TVL1Params, pool: int):
  return _block_mean(_motion(frame0, frame1, params), pool)


def _check(frames: np.ndarray, pool: int) -> None:
  if frames.ndim != 3 or frames.shape[1] != frames.shape[2]:
    raise ValueError(f"frames must be grey (T, S, S), got shape {frames.shape}")
  if frames.shape[1] % pool:
    raise ValueError(f"frame size {frames.shape[1]} is not a multiple of pool={pool}")


def motion_features(frames: np.ndarray, k: int, *, pool: int = 8, batch_size: int = 256,
                    params: tvl1.TVL1Params = SPOTTING_TVL1) -> np.ndarray:
  """Per-frame spotting features of one video (module docstring).

  Args:
    frames: grey float32 `(T, S, S)` in [0, 1].
    k: pair distance in frames (`frame_offset`).
    pool: block size of the average pooling; S must be a multiple.
    batch_size: pairs per jitted call (every batch is padded to it, so one
      shape compiles once; fewer pairs pad to the power of two above their count).
    params: TV-L1 parameters.

  Returns:
    float32 `(T, S // pool, S // pool, 3)`: (u, v) in pixels of the S x S
    frames and the strain magnitude, block means.
  """
  frames = np.asarray(frames, np.float32)
  _check(frames, pool)
  first, second = pair_indices(len(frames), k)
  return _batched(frames, first, second, pool, batch_size, params)


def _batched(frames, first, second, pool, batch_size, params) -> np.ndarray:
  count, size = len(first), frames.shape[1]
  out = np.empty((count, size // pool, size // pool, len(CHANNELS)), np.float32)
  # One batch shape per setting (one compile): batch_size, or for fewer pairs the power of
  # two above their count, so a short clip does not pay for hundreds of padding pairs.
  shape = min(batch_size, 1 << max(0, count - 1).bit_length())
  for start in range(0, count, shape):
    idx = np.arange(start, min(count, start + shape))
    pad = np.zeros((shape - len(idx), size, size), np.float32)
    a = np.concatenate([frames[first[idx]], pad])
    b = np.concatenate([frames[second[idx]], pad])
    out[idx] = np.asarray(_pooled_motion(a, b, params, pool))[:len(idx)]
  return out


def pair_features(frames: np.ndarray, first: Sequence[int], second: Sequence[int], *,
                  pool: int = 4, params: tvl1.TVL1Params = SPOTTING_TVL1,
                  batch_size: int = 32) -> np.ndarray:
  """Recognition features of given frame pairs (module docstring).

  Args:
    frames: grey float32 `(T, S, S)` in [0, 1].
    first, second: frame indices of each pair (onset, apex).
    pool: block size of the average pooling.

  Returns:
    float32 `(N, S // pool, S // pool, 3)`, each pair divided by its RMS flow.
  """
  frames = np.asarray(frames, np.float32)
  _check(frames, pool)
  first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
  if len(first) == 0:
    return np.zeros((0, frames.shape[1] // pool, frames.shape[1] // pool, 3), np.float32)
  feats = _batched(frames, first, second, pool, batch_size, params)
  rms = np.sqrt(np.mean(feats[..., :2] ** 2, axis=(1, 2, 3), keepdims=True))
  return feats / np.maximum(rms, 1e-3)


def apex_candidates(onset: int, offset: int, count: int = 6) -> np.ndarray:
  """Up to `count` evenly spaced frames in (onset, offset] where the apex is looked for."""
  if offset <= onset:
    return np.asarray([onset], np.int64)
  return np.unique(np.linspace(onset + 1, offset, min(count, offset - onset)).round()
                   .astype(np.int64))


def estimate_apexes(frames: np.ndarray, intervals: Sequence[tuple[int, int]], *,
                    count: int = 6, pool: int = 4,
                    params: tvl1.TVL1Params = SPOTTING_TVL1) -> list[int]:
  """For each (onset, offset), the candidate frame moved farthest from the onset (mean |flow|).

  The spotted interval's onset is taken as the neutral frame; the apex is the
  candidate (`apex_candidates`) whose flow from the onset has the largest mean
  magnitude after the median (head shift) is removed.
  """
  frames = np.asarray(frames, np.float32)
  pairs = [(on, c) for on, off in intervals for c in apex_candidates(on, off, count)]
  if not pairs:
    return []
  first, second = map(np.asarray, zip(*pairs))
  _check(frames, pool)
  feats = _batched(frames, first, second, pool, 32, params)
  magnitude = np.sqrt((feats[..., :2] ** 2).sum(-1)).mean(axis=(1, 2))
  apexes, i = [], 0
  for on, off in intervals:
    n = len(apex_candidates(on, off, count))
    apexes.append(int(second[i + int(np.argmax(magnitude[i:i + n]))]))
    i += n
  return apexes


def frame_labels(num_frames: int, intervals: Sequence[tuple[int, int, str]]) -> np.ndarray:
  """int32 `(T,)` per-frame targets: 0 background, 1 inside a micro-, 2 inside a macro-expression.

  `intervals` holds (onset, offset, type) with inclusive frame indices.
  """
  labels = np.zeros(num_frames, np.int32)
  for onset, offset, kind in intervals:
    labels[onset:offset + 1] = 1 if kind == "micro" else 2
  return labels

