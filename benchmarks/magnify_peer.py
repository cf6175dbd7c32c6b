"""Independent NumPy/OpenCV Eulerian magnification: the benchmark peer and test oracle.

Written the way a strong NumPy user would: per-frame `cv2.pyrDown` /
`cv2.pyrUp` (5-tap binomial, BORDER_REFLECT_101), `np.fft.rfft` over time for
the whole coarse stack at once, the colour conversion on the coarse data
only, and time loops vectorised over all pixels for the recursive filters.
It follows the reference MATLAB structure (Laplacian bands are filtered
directly, the gain schedule is the reference loop) and shares no code with
`mer_jax.magnify`, so agreement between the two is a real check.
"""

from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

_RGB_TO_NTSC = np.array([[0.299, 0.587, 0.114],
                         [0.596, -0.274, -0.322],
                         [0.211, -0.523, 0.312]], np.float64)
_NTSC_TO_RGB = np.linalg.inv(_RGB_TO_NTSC)


def _ideal(stack: np.ndarray, fps: float, low_hz: float, high_hz: float,
           reference_compat: bool) -> np.ndarray:
  """stack: (B, T, ...) float32, filtered along axis 1."""
  num_frames = stack.shape[1]
  freqs = np.arange(num_frames // 2 + 1) * (fps / num_frames)
  if reference_compat:
    keep = (freqs > low_hz) & (freqs < high_hz)
  else:
    keep = (freqs >= low_hz) & (freqs <= high_hz)
  keep[0] = False
  spectrum = np.fft.rfft(stack, axis=1)
  spectrum[:, ~keep] = 0
  out = np.fft.irfft(spectrum, n=num_frames, axis=1)
  return (out * (0.5 if reference_compat else 1.0)).astype(np.float32)


def _butter_first_order(cutoff_hz: float, fps: float, reference_compat: bool):
  """(b0, b1, a1) of the bilinear-transform first-order low-pass."""
  wn = cutoff_hz / fps if reference_compat else 2.0 * cutoff_hz / fps
  c = 1.0 / math.tan(math.pi * wn / 2.0)
  return 1.0 / (1.0 + c), 1.0 / (1.0 + c), (1.0 - c) / (1.0 + c)


def _recursive(stack: np.ndarray, high, low) -> np.ndarray:
  """Difference of two causal first-order low-passes started at frame 0, axis 1."""
  out = np.zeros_like(stack)
  x_prev = stack[:, 0].copy()
  lp_high = x_prev.copy()
  lp_low = x_prev.copy()
  for t in range(1, stack.shape[1]):
    x_t = stack[:, t]
    lp_high = high[0] * x_t + high[1] * x_prev - high[2] * lp_high
    lp_low = low[0] * x_t + low[1] * x_prev - low[2] * lp_low
    out[:, t] = lp_high - lp_low
    x_prev = x_t
  return out


def _temporal(stack, *, fps, low_hz, high_hz, temporal_filter, r1, r2, reference_compat):
  if temporal_filter == "ideal":
    return _ideal(stack, fps, low_hz, high_hz, reference_compat)
  if temporal_filter == "butterworth":
    high = _butter_first_order(high_hz, fps, reference_compat)
    low = _butter_first_order(low_hz, fps, reference_compat)
  elif temporal_filter == "iir":
    rate_high = r1 if r1 is not None else 1.0 - math.exp(-2.0 * math.pi * high_hz / fps)
    rate_low = r2 if r2 is not None else 1.0 - math.exp(-2.0 * math.pi * low_hz / fps)
    high = (rate_high, 0.0, rate_high - 1.0)
    low = (rate_low, 0.0, rate_low - 1.0)
  else:
    raise ValueError(f"unknown temporal_filter {temporal_filter!r}")
  return _recursive(stack, high, low)


def _gain_rgb(band: np.ndarray, luma_gain: float, chroma_gain: float) -> np.ndarray:
  """RGB band -> NTSC, gain Y and I/Q, -> RGB."""
  yiq = band @ _RGB_TO_NTSC.T.astype(np.float32)
  yiq[..., 0] *= luma_gain
  yiq[..., 1:] *= chroma_gain
  return yiq @ _NTSC_TO_RGB.T.astype(np.float32)


def _pyr_up(image: np.ndarray, shape) -> np.ndarray:
  return cv2.pyrUp(image, dstsize=(shape[1], shape[0]))


def reference_gains(alpha: float, lambda_c: float, num_levels: int, height: int,
                    width: int, reference_compat: bool = False) -> list[float]:
  """The reference code's loop, level index 0 = finest.

  Without `reference_compat` a negative `current` is raised to 0 (the
  reference applies it, inverting those bands).
  """
  gains = [0.0] * num_levels
  lam = math.sqrt(height ** 2 + width ** 2) / 3.0
  delta = lambda_c / 8.0 / (1.0 + alpha)
  for ref_level in range(num_levels, 0, -1):
    current = (lam / delta / 8.0 - 1.0) * 2.0
    if not reference_compat:
      current = max(current, 0.0)
    if ref_level in (num_levels, 1):
      gains[ref_level - 1] = 0.0
    else:
      gains[ref_level - 1] = min(current, alpha)
    lam /= 2.0
  return gains


def eulerian_magnify_numpy(frames: np.ndarray, *, fps: float, low_hz: float, high_hz: float,
                           alpha: float, method: str = "gaussian", levels: int = 4,
                           lambda_c: float = 16.0, chrom_attenuation: float = 0.1,
                           temporal_filter: str = "ideal", r1: Optional[float] = None,
                           r2: Optional[float] = None, reference_compat: bool = False,
                           clip: bool = True) -> np.ndarray:
  """NumPy/OpenCV Eulerian magnification of float32 frames `(B, T, H, W, 3)` in [0, 1].

  `levels`: Gaussian down-samplings ("gaussian") or Laplacian levels including
  the residual ("laplacian"); no defaults are resolved here. Returns float32
  frames of the same shape.
  """
  frames = np.asarray(frames, np.float32)
  batch, num_frames, height, width, _ = frames.shape
  flat = frames.reshape(batch * num_frames, height, width, 3)
  temporal_kwargs = dict(fps=fps, low_hz=low_hz, high_hz=high_hz,
                         temporal_filter=temporal_filter, r1=r1, r2=r2,
                         reference_compat=reference_compat)
  if method == "gaussian":
    pyramid = [[image] for image in flat]
    for chain in pyramid:
      for _ in range(levels):
        chain.append(cv2.pyrDown(chain[-1]))
    shapes = [image.shape[:2] for image in pyramid[0]]
    coarse = np.stack([chain[-1] for chain in pyramid]).reshape(
        (batch, num_frames) + pyramid[0][-1].shape)
    band = _temporal(coarse, **temporal_kwargs)
    band = _gain_rgb(band, alpha, alpha * chrom_attenuation)
    band = band.reshape((batch * num_frames,) + band.shape[2:])
    delta = []
    for image in band:
      for level in range(levels - 1, -1, -1):
        image = _pyr_up(image, shapes[level])
      delta.append(image)
    out = flat + np.stack(delta)
  elif method == "laplacian":
    gains = reference_gains(alpha, lambda_c, levels, height, width, reference_compat)
    gaussian = [[image] for image in flat]
    for chain in gaussian:
      for _ in range(levels - 1):
        chain.append(cv2.pyrDown(chain[-1]))
    shapes = [image.shape[:2] for image in gaussian[0]]
    collapsed = None
    for level in range(levels - 2, 0, -1):
      bands = np.stack([chain[level] - _pyr_up(chain[level + 1], shapes[level])
                        for chain in gaussian])
      bands = bands.reshape((batch, num_frames) + bands.shape[1:])
      filtered = _temporal(bands, **temporal_kwargs)
      filtered = _gain_rgb(filtered, gains[level], gains[level] * chrom_attenuation)
      filtered = filtered.reshape((batch * num_frames,) + filtered.shape[2:])
      if collapsed is None:
        collapsed = filtered
      else:
        collapsed = filtered + np.stack([_pyr_up(image, shapes[level]) for image in collapsed])
    out = flat + np.stack([_pyr_up(image, shapes[0]) for image in collapsed])
  else:
    raise ValueError(f"unknown method {method!r}")
  if clip:
    out = np.clip(out, 0.0, 1.0)
  return out.reshape(frames.shape).astype(np.float32)
