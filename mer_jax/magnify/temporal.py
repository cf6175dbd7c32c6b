"""Temporal band-pass filters of Eulerian magnification, applied per pixel.

* `ideal_bandpass`: zero every FFT bin outside [low_hz, high_hz] (and DC).
  Uses `rfft`, i.e. a mask symmetric in frequency, so the in-band gain is
  exactly 1. Always computed in float32 or wider: `jnp.fft.rfft` rejects
  float16 / bfloat16.
* `recursive_bandpass`: the difference of two first-order low-passes run
  causally from the first frame (state initialised to the first frame), with
  `lax.scan` over time. `butterworth_lowpass_coefficients` gives the
  first-order Butterworth sections, `iir_rate` the exponential smoothing rate
  of the reference "IIR" variant.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
from jax import lax
import numpy as np


def ideal_band_mask(num_frames: int, *, fps: float, low_hz: float, high_hz: float,
                    reference_compat: bool = False) -> np.ndarray:
  """Boolean `(num_frames // 2 + 1,)` mask over the `rfft` bins kept by the filter.

  Bin k has frequency `k * fps / num_frames` Hz. The band is closed
  ([low_hz, high_hz]); DC is always excluded. With `reference_compat` the band
  is open, as the reference code's `f > fl & f < fh`.
  """
  freqs = np.fft.rfftfreq(num_frames, d=1.0 / fps)
  if reference_compat:
    mask = (freqs > low_hz) & (freqs < high_hz)
  else:
    mask = (freqs >= low_hz) & (freqs <= high_hz)
  mask[0] = False
  return mask


def ideal_bandpass(x: jnp.ndarray, *, axis: int, fps: float, low_hz: float, high_hz: float,
                   reference_compat: bool = False) -> jnp.ndarray:
  """Ideal temporal band-pass along `axis`.

  Args:
    x: float array, time along `axis` (T samples at `fps` frames/s).
    axis: the time axis (non-negative).
    fps: frame rate in Hz; low_hz, high_hz: band edges in Hz.
    reference_compat: reproduce the reference code, which keeps only the
      positive-frequency bins of a full FFT and takes the real part of the
      inverse: the in-band gain is then 1/2 (open band edges too).

  Returns:
    The band-passed array, same shape, dtype float32 (float64 for float64 x).
  """
  num_frames = x.shape[axis]
  mask = ideal_band_mask(num_frames, fps=fps, low_hz=low_hz, high_hz=high_hz,
                         reference_compat=reference_compat)
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  broadcast = [1] * x.ndim
  broadcast[axis] = mask.size
  # real(ifft(one-sided spectrum)) is half the symmetric filter's output.
  scale = 0.5 if reference_compat else 1.0
  weights = jnp.asarray(mask.reshape(broadcast) * scale, x.dtype)
  spectrum = jnp.fft.rfft(x, axis=axis)
  return jnp.fft.irfft(spectrum * weights, n=num_frames, axis=axis)


class FirstOrderLowpass(NamedTuple):
  """`y[t] = b0 x[t] + b1 x[t-1] - a1 y[t-1]` (unit gain at DC)."""
  b0: float
  b1: float
  a1: float


def butterworth_lowpass_coefficients(cutoff_hz: float, fps: float, *,
                                     reference_compat: bool = False) -> FirstOrderLowpass:
  """First-order digital Butterworth low-pass (bilinear transform), like `butter(1, Wn)`.

  `Wn = cutoff_hz / (fps / 2)` puts the -3 dB point at `cutoff_hz`. The
  reference code calls `butter(1, cutoff / fps)`, which puts it at half the
  requested frequency; `reference_compat=True` reproduces that.
  """
  normalised = cutoff_hz / fps if reference_compat else cutoff_hz / (fps / 2.0)
  if not 0.0 < normalised < 1.0:
    raise ValueError(f"Butterworth cut-off {cutoff_hz} Hz must lie strictly between 0 and the "
                     f"Nyquist frequency {fps / 2.0} Hz")
  warped = math.tan(math.pi * normalised / 2.0)
  b = warped / (1.0 + warped)
  return FirstOrderLowpass(b0=b, b1=b, a1=(warped - 1.0) / (warped + 1.0))


def iir_rate(cutoff_hz: float, fps: float) -> float:
  """Smoothing rate r of `lp = (1 - r) lp + r x` for a -3 dB-ish cut-off (RC model).

  `r = 1 - exp(-2 pi cutoff / fps)`. The reference demos give r directly
  (baby: r1 = 0.4, r2 = 0.05); `eulerian_magnify(r1=..., r2=...)` accepts that.
  """
  return 1.0 - math.exp(-2.0 * math.pi * cutoff_hz / fps)


def iir_coefficients(rate: float) -> FirstOrderLowpass:
  """The reference IIR low-pass `lp = (1 - r) lp + r x` as a `FirstOrderLowpass`."""
  if not 0.0 < rate <= 1.0:
    raise ValueError(f"IIR rate must be in (0, 1], got {rate}")
  return FirstOrderLowpass(b0=rate, b1=0.0, a1=rate - 1.0)


def recursive_bandpass(x: jnp.ndarray, *, axis: int, high: FirstOrderLowpass,
                       low: FirstOrderLowpass) -> jnp.ndarray:
  """`lowpass_high(x) - lowpass_low(x)` along `axis`, causal, started at the first frame.

  Both low-passes start in the steady state of a constant input equal to the
  first frame, so the first output frame is 0, as in the reference code.

  Args:
    x: float array, time along `axis` (non-negative).
    high: the low-pass with the higher cut-off (passes the band).
    low: the low-pass with the lower cut-off (removes what lies below it).

  Returns:
    The band-passed array, same shape, dtype float32 (float64 for float64 x).
  """
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  time_major = jnp.moveaxis(x, axis, 0)

  def step(carry, frame):
    previous, state_high, state_low = carry
    state_high = high.b0 * frame + high.b1 * previous - high.a1 * state_high
    state_low = low.b0 * frame + low.b1 * previous - low.a1 * state_low
    return (frame, state_high, state_low), state_high - state_low

  first = time_major[0]
  _, band = lax.scan(step, (first, first, first), time_major)
  return jnp.moveaxis(band, 0, axis)
