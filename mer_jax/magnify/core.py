"""`eulerian_magnify`: linear Eulerian video magnification (Wu et al., SIGGRAPH 2012).

output = clip(input + RGB(gain * B(YIQ(input)))), where B is a spatial
decomposition (Gaussian down-sampled stack or Laplacian pyramid), a temporal
band-pass per pixel and the reconstruction. Every step before the clipping
is linear and acts either per pixel across channels (colour) or per channel
across pixels (pyramids, temporal filter), so the steps commute. The code
uses that to do the expensive work on small arrays:

* the temporal filter runs on the coarse stack (Gaussian) or on pyramid levels
  1.. (Laplacian: level 0, the finest band, is never amplified, so
  `B(G_l - up(G_l+1)) = B(G_l) - up(B(G_l+1))` needs no full-size filtering);
* RGB -> YIQ -> per-channel gain -> RGB is a single 3x3 matrix applied on the
  coarse data, not two colour conversions of the full video;
* the last pyramid expansion, the addition of the input and the clipping are
  elementwise and fuse into one pass over the full-size video.

Full-size memory traffic is then one read for the first pyramid step plus one
read and one write for the output.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mer_jax.magnify import spatial
from mer_jax.magnify import temporal

METHODS = ("gaussian", "laplacian")
TEMPORAL_FILTERS = ("ideal", "butterworth", "iir")
# The reference demo's Gaussian-stack depth (face / pulse demo: level 4).
DEFAULT_GAUSSIAN_LEVELS = 4

# NTSC RGB -> YIQ (MATLAB rgb2ntsc); ntsc2rgb is its inverse.
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                       [0.596, -0.274, -0.322],
                       [0.211, -0.523, 0.312]])
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


def rgb_to_yiq(rgb: jnp.ndarray) -> jnp.ndarray:
  """`(..., 3)` RGB -> `(..., 3)` YIQ (NTSC), float."""
  return jnp.einsum("...c,dc->...d", rgb, jnp.asarray(RGB_TO_YIQ, rgb.dtype))


def yiq_to_rgb(yiq: jnp.ndarray) -> jnp.ndarray:
  """`(..., 3)` YIQ -> `(..., 3)` RGB, the exact inverse of `rgb_to_yiq`."""
  return jnp.einsum("...c,dc->...d", yiq, jnp.asarray(YIQ_TO_RGB, yiq.dtype))


def amplification_matrix(alpha, chrom_attenuation, dtype=jnp.float32) -> jnp.ndarray:
  """3x3 RGB matrix `YIQ_TO_RGB @ diag(alpha, alpha c, alpha c) @ RGB_TO_YIQ`.

  Applying it to a band-passed RGB signal equals converting to YIQ, gaining
  Y by alpha and I, Q by alpha * chrom_attenuation, and converting back.
  Differentiable in both (possibly traced) scalars.
  """
  alpha = jnp.asarray(alpha, dtype)
  chroma = alpha * jnp.asarray(chrom_attenuation, dtype)
  gains = jnp.stack([alpha, chroma, chroma])
  return (jnp.asarray(YIQ_TO_RGB, dtype) * gains[None, :]) @ jnp.asarray(RGB_TO_YIQ, dtype)


def _concrete(value) -> Optional[np.ndarray]:
  """`value` as a NumPy array, or None when it is traced (inside jit / grad)."""
  try:
    return np.asarray(value)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _static_number(name: str, value, *, positive: bool = False) -> float:
  if isinstance(value, jax.Array):
    array = _concrete(value)
    if array is None:
      raise ValueError(f"{name} must be a static number (it shapes the filter), got a traced "
                       "value; close over it or mark it static in jit")
    if array.ndim == 0:
      value = array.item()
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f"{name} must be a static real number (it shapes the filter), "
                     f"got {type(value).__name__} {value!r}")
  value = float(value)
  if not math.isfinite(value) or (positive and value <= 0.0):
    raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, "
                     f"got {value}")
  return value


def _check_scalar(name: str, value) -> None:
  """Checks a scalar that may be traced (alpha, chrom_attenuation, lambda_c)."""
  array = _concrete(value)
  if array is None:  # Traced: only the shape is known.
    if jnp.ndim(value) != 0:
      raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}")
    return
  if array.ndim != 0 or not np.issubdtype(array.dtype, np.number) or array.dtype == bool:
    raise ValueError(f"{name} must be a real scalar, got {value!r}")
  if not np.isfinite(array):
    raise ValueError(f"{name} must be finite, got {value!r}")


def resolve_levels(method: str, levels: Optional[int], height: int, width: int) -> int:
  """Pyramid depth actually used for a `height x width` video.

  gaussian: number of 2x down-samplings of the stack (default
  `min(4, max possible)`); laplacian: number of levels including the
  residual (default `1 + max possible`, pyrTools "auto"). The maximum halves
  while both sides are at least 5 pixels (`spatial.max_downsamplings`).
  """
  max_down = spatial.max_downsamplings(height, width)
  if method == "gaussian":
    low, high = 1, max_down
    default = min(DEFAULT_GAUSSIAN_LEVELS, max_down)
    meaning = "down-samplings of the Gaussian stack"
  else:
    low, high = 3, max_down + 1
    default = high
    meaning = "Laplacian levels including the residual (finest band and residual are not amplified)"
  if high < low:
    raise ValueError(f"frames of {height}x{width} pixels are too small for method={method!r}: "
                     f"it needs at least {low} {meaning}; at most {high} fit")
  if levels is None:
    return default
  if isinstance(levels, bool) or not isinstance(levels, numbers.Integral):
    raise ValueError(f"levels must be an int or None, got {levels!r}")
  if not low <= levels <= high:
    raise ValueError(f"levels={levels} is out of range for method={method!r} on "
                     f"{height}x{width} frames: {meaning} must be in [{low}, {high}]")
  return int(levels)


def _validate(frames, *, fps, low_hz, high_hz, method, temporal_filter, reference_compat,
              r1, r2, batch_chunk_size):
  if not hasattr(frames, "shape") or not hasattr(frames, "dtype"):
    raise ValueError(f"frames must be an array, got {type(frames).__name__}")
  if frames.ndim < 4 or frames.shape[-1] != 3:
    raise ValueError("frames must be RGB shaped (..., T, H, W, 3); got shape "
                     f"{tuple(frames.shape)}" + ("" if frames.ndim < 4 else
                                                f" with {frames.shape[-1]} channels"))
  if not jnp.issubdtype(frames.dtype, jnp.floating):
    raise ValueError(f"frames must be floating point in [0, 1], got dtype {frames.dtype}; "
                     "convert uint8 with frames.astype(np.float32) / 255")
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if temporal_filter not in TEMPORAL_FILTERS:
    raise ValueError(f"temporal_filter must be one of {TEMPORAL_FILTERS}, got {temporal_filter!r}")
  fps = _static_number("fps", fps, positive=True)
  low_hz = _static_number("low_hz", low_hz)
  high_hz = _static_number("high_hz", high_hz, positive=True)
  nyquist = fps / 2.0
  if low_hz < 0.0:
    raise ValueError(f"low_hz must be >= 0, got {low_hz}")
  if low_hz >= high_hz:
    raise ValueError(f"low_hz ({low_hz}) must be below high_hz ({high_hz})")
  if high_hz > nyquist:
    raise ValueError(f"high_hz ({high_hz} Hz) is above the Nyquist frequency fps / 2 = "
                     f"{nyquist} Hz")
  num_frames = frames.shape[-4]
  if temporal_filter == "ideal":
    mask = temporal.ideal_band_mask(num_frames, fps=fps, low_hz=low_hz, high_hz=high_hz,
                                    reference_compat=reference_compat)
    if not mask.any():
      raise ValueError(
          f"frames has T={num_frames} time steps: at {fps} fps the FFT bins are "
          f"{fps / num_frames:.3g} Hz apart and none lies in the band [{low_hz}, {high_hz}] Hz "
          "(DC excluded); use more frames or a wider band")
  else:
    if num_frames < 2:
      raise ValueError(f"frames has T={num_frames} time steps; the {temporal_filter} filter needs >= 2")
    if temporal_filter == "butterworth":
      if low_hz <= 0.0:
        raise ValueError("low_hz must be > 0 for temporal_filter='butterworth'")
      if high_hz >= nyquist and not reference_compat:
        raise ValueError(f"high_hz ({high_hz} Hz) must be below the Nyquist frequency "
                         f"{nyquist} Hz for temporal_filter='butterworth'")
  if temporal_filter == "iir":
    for name, rate in (("r1", r1), ("r2", r2)):
      if rate is not None and not (isinstance(rate, numbers.Real) and 0.0 < rate <= 1.0):
        raise ValueError(f"{name} must be None or a number in (0, 1], got {rate!r}")
    if temporal_filter == "iir" and r2 is None and low_hz <= 0.0:
      raise ValueError("low_hz must be > 0 for temporal_filter='iir' unless r2 is given")
  if batch_chunk_size is not None and (isinstance(batch_chunk_size, bool) or not isinstance(
      batch_chunk_size, numbers.Integral) or batch_chunk_size < 1):
    raise ValueError(f"batch_chunk_size must be None or a positive int, got {batch_chunk_size!r}")
  return fps, low_hz, high_hz


def eulerian_magnify(frames: jnp.ndarray, *, fps: float, low_hz: float, high_hz: float,
                     alpha, method: str = "gaussian", levels: Optional[int] = None,
                     lambda_c=16.0, chrom_attenuation=0.1, temporal_filter: str = "ideal",
                     r1: Optional[float] = None, r2: Optional[float] = None,
                     reference_compat: bool = False, clip: bool = True,
                     batch_chunk_size: Optional[int] = None) -> jnp.ndarray:
  """Magnifies temporal variations in a band of frequencies (linear Eulerian method).

  Works under `jax.jit`, `jax.vmap` and `jax.grad` (with respect to `frames`,
  `alpha`, `chrom_attenuation` and `lambda_c`). Shapes, `fps`, the band,
  `method`, `levels` and `temporal_filter` are static.

  Args:
    frames: float RGB in [0, 1], shape `(..., T, H, W, 3)`; any leading batch
      dims; float32, bfloat16, float16 or float64. Computation is in float32
      (float64 for float64 input).
    fps: frame rate in frames per second.
    low_hz, high_hz: pass band in Hz, `0 <= low_hz < high_hz <= fps / 2`.
    alpha: amplification of the luma band (scalar; may be traced, e.g. a
      learned parameter). The in-band gain is `1 + alpha`.
    method: "gaussian" (down-sampled Gaussian stack, colour/pulse style) or
      "laplacian" (Laplacian pyramid with the reference per-level gains,
      motion style).
    levels: pyramid depth, see `resolve_levels` (None: reference defaults).
    lambda_c: Laplacian method's cut-off wavelength in pixels (reference: 16).
    chrom_attenuation: I and Q get gain `alpha * chrom_attenuation`.
    temporal_filter: "ideal" (FFT mask), "butterworth" (first-order
      Butterworth low-passes at high_hz and low_hz, difference) or "iir" (the
      reference's `lp = (1 - r) lp + r x` pair with rates r1 > r2).
    r1, r2: "iir" rates; None derives them from high_hz / low_hz
      (`temporal.iir_rate`).
    reference_compat: reproduce the reference MATLAB code's quirks: the
      ideal filter's in-band gain is `1 + alpha / 2` (it keeps positive FFT
      bins only) with open band edges, and Butterworth cut-offs land at half
      the requested frequency (`butter(1, f / fps)`); Laplacian level gains
      may be negative (see `spatial.laplacian_level_gains`).
    clip: clip the output to [0, 1] (False exposes the linear operator).
    batch_chunk_size: process the flattened batch `prod(...)` this many clips
      at a time (`lax.map`), bounding peak memory. Never chunks over time,
      which would change the temporal filter.

  Returns:
    Magnified frames, same shape and dtype as `frames`.

  Raises:
    ValueError: naming the argument at fault (rank, channels, integer dtype,
      band, Nyquist, too few frames for the band, levels, method, ...).
  """
  fps, low_hz, high_hz = _validate(
      frames, fps=fps, low_hz=low_hz, high_hz=high_hz, method=method,
      temporal_filter=temporal_filter, reference_compat=reference_compat, r1=r1, r2=r2,
      batch_chunk_size=batch_chunk_size)
  for name, value in (("alpha", alpha), ("chrom_attenuation", chrom_attenuation),
                      ("lambda_c", lambda_c)):
    _check_scalar(name, value)
  *lead, num_frames, height, width, _ = frames.shape
  num_levels = resolve_levels(method, levels, height, width)
  compute_dtype = jnp.promote_types(frames.dtype, jnp.float32)

  if temporal_filter == "ideal":
    def band_pass(x):
      return temporal.ideal_bandpass(x, axis=x.ndim - 4, fps=fps, low_hz=low_hz,
                                     high_hz=high_hz, reference_compat=reference_compat)
  else:
    if temporal_filter == "butterworth":
      high = temporal.butterworth_lowpass_coefficients(high_hz, fps,
                                                       reference_compat=reference_compat)
      low = temporal.butterworth_lowpass_coefficients(low_hz, fps,
                                                      reference_compat=reference_compat)
    else:
      high = temporal.iir_coefficients(r1 if r1 is not None else temporal.iir_rate(high_hz, fps))
      low = temporal.iir_coefficients(r2 if r2 is not None else temporal.iir_rate(low_hz, fps))

    def band_pass(x):
      return temporal.recursive_bandpass(x, axis=x.ndim - 4, high=high, low=low)

  def magnify_clips(x):
    # x: (..., T, H, W, 3) in compute_dtype.
    if method == "gaussian":
      colour = amplification_matrix(alpha, chrom_attenuation, compute_dtype)
      delta = _gaussian_delta(x, num_levels, band_pass, colour)
    else:
      # The per-level gains carry alpha; the colour matrix only attenuates I, Q.
      colour = amplification_matrix(1.0, chrom_attenuation, compute_dtype)
      delta = _laplacian_delta(x, num_levels, band_pass, colour, alpha, lambda_c,
                               reference_compat)
    out = x + delta
    return jnp.clip(out, 0.0, 1.0) if clip else out

  x = frames.astype(compute_dtype)
  x = x.reshape((-1, num_frames, height, width, 3))
  if batch_chunk_size is not None and x.shape[0] > batch_chunk_size:
    # Sequential chunks bound the size of each FFT / pyramid op (large batched
    # FFT plans have crashed GPUs instead of raising out-of-memory).
    out = jax.lax.map(magnify_clips, x, batch_size=int(batch_chunk_size))
  else:
    out = magnify_clips(x)
  return out.reshape(frames.shape).astype(frames.dtype)


def _apply_colour(band: jnp.ndarray, colour: jnp.ndarray) -> jnp.ndarray:
  return jnp.einsum("...c,dc->...d", band, colour.astype(band.dtype))


def _gaussian_delta(x, num_levels, band_pass, colour):
  """Amplified band of the Gaussian down-sampled stack, at full size."""
  shapes = spatial.level_shapes(x.shape[-3], x.shape[-2], num_levels + 1)
  coarse = spatial.gaussian_stack(x, num_levels)
  band = _apply_colour(band_pass(coarse), colour)
  return spatial.expand(band, shapes[::-1])


def _laplacian_delta(x, num_levels, band_pass, colour, alpha, lambda_c, reference_compat):
  """Amplified, collapsed Laplacian bands, at full size.

  Band l is `G_l - up(G_l+1)`; its temporal filtering equals
  `B(G_l) - up(B(G_l+1))`, so only Gaussian levels 1.. are filtered.
  """
  height, width = x.shape[-3], x.shape[-2]
  shapes = spatial.level_shapes(height, width, num_levels)
  gains = spatial.laplacian_level_gains(alpha, num_levels=num_levels, height=height,
                                        width=width, lambda_c=lambda_c,
                                        reference_compat=reference_compat).astype(x.dtype)
  gaussian = [x]
  for _ in range(num_levels - 1):
    gaussian.append(spatial.downsample(gaussian[-1]))
  filtered = {level: band_pass(gaussian[level]) for level in range(1, num_levels)}

  def band(level):
    return filtered[level] - spatial.upsample(filtered[level + 1], *shapes[level])

  # Collapse from the coarsest amplified band (num_levels - 2) to level 1.
  collapsed = gains[num_levels - 2] * band(num_levels - 2)
  for level in range(num_levels - 3, 0, -1):
    collapsed = gains[level] * band(level) + spatial.upsample(collapsed, *shapes[level])
  collapsed = _apply_colour(collapsed, colour)
  return spatial.upsample_fused(collapsed, *shapes[0])
