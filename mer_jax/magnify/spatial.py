"""Spatial part of Eulerian magnification: binomial pyramids and level gains.

All functions act on the two spatial axes of arrays shaped `(..., H, W, C)`
and are built from pads, strided slices and weighted sums, so that XLA fuses
each pyramid step into one pass over memory. Borders are reflected without
repeating the edge sample (MATLAB pyrTools "reflect1", OpenCV
BORDER_REFLECT_101), and a level of size `n` has `ceil(n / 2)` samples on the
next level, as in both of those libraries.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

# The 5-tap binomial filter [1 4 6 4 1] / 16 used by the reference code.
BINOMIAL5 = (1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0)
_FILTER_TAPS = len(BINOMIAL5)
SPATIAL_AXES = (-3, -2)


def max_downsamplings(height: int, width: int) -> int:
  """Number of times a `height x width` image can be halved by the 5-tap filter.

  This is pyrTools' `maxPyrHt`: halving stops once a side is shorter than the
  filter (5 samples). A Laplacian pyramid built with "auto" height has
  `1 + max_downsamplings(...)` levels (bands plus the low-pass residual).
  """
  count = 0
  while min(height, width) >= _FILTER_TAPS:
    height, width = height // 2, width // 2
    count += 1
  return count


def _pad_axis(x: jnp.ndarray, axis: int, before: int, after: int, mode: str) -> jnp.ndarray:
  widths = [(0, 0)] * x.ndim
  widths[axis] = (before, after)
  return jnp.pad(x, widths, mode=mode)


def downsample_axis(x: jnp.ndarray, axis: int) -> jnp.ndarray:
  """Blurs with [1 4 6 4 1]/16 and keeps every other sample along `axis`.

  Args:
    x: float array; `x.shape[axis] = n >= 3`.
    axis: the axis to filter (non-negative).

  Returns:
    The same array with `ceil(n / 2)` samples along `axis`; output sample i
    is centred on input sample 2 i (OpenCV pyrDown / pyrTools corrDn).
  """
  n = x.shape[axis]
  m = (n + 1) // 2
  padded = _pad_axis(x, axis, 2, 2, "reflect")

  def tap(k: int) -> jnp.ndarray:
    return lax.slice_in_dim(padded, k, k + 2 * (m - 1) + 1, stride=2, axis=axis)

  # The filter is symmetric: pair the outer taps to halve the multiplies.
  return ((tap(0) + tap(4)) * BINOMIAL5[0] + (tap(1) + tap(3)) * BINOMIAL5[1]
          + tap(2) * BINOMIAL5[2])


def upsample_axis(x: jnp.ndarray, axis: int, size: int) -> jnp.ndarray:
  """Inverse of `downsample_axis`: zero-insert, then filter with 2 [1 4 6 4 1]/16.

  Written in polyphase form (even outputs (1, 6, 1)/8, odd outputs
  (1, 1)/2) so that no zeros are multiplied. Borders follow OpenCV's pyrUp
  (checked against it for even and odd sizes).

  Args:
    x: float array with `m = x.shape[axis]` samples along `axis`.
    axis: the axis to upsample (non-negative).
    size: output length along `axis`; `2 m` or `2 m - 1`.

  Returns:
    The upsampled array with `size` samples along `axis`.
  """
  m = x.shape[axis]
  if size not in (2 * m, 2 * m - 1):
    raise ValueError(f"upsample_axis: size {size} is not 2 * {m} or 2 * {m} - 1")
  # Left: reflect-101 in the zero-inserted domain (sample -1 -> 1). Right:
  # sample m (one past the end) repeats sample m - 1, which is reflect-101 of
  # the zero-inserted signal of length 2 m; OpenCV keeps that rule for odd
  # output sizes too, and so do we.
  padded = _pad_axis(x, axis, 1, 0, "reflect")
  padded = _pad_axis(padded, axis, 0, 1, "edge")
  left = lax.slice_in_dim(padded, 0, m, axis=axis)
  centre = lax.slice_in_dim(padded, 1, m + 1, axis=axis)
  right = lax.slice_in_dim(padded, 2, m + 2, axis=axis)
  even = (left + right) * 0.125 + centre * 0.75
  odd = (centre + right) * 0.5
  interleaved = jnp.stack([even, odd], axis=axis + 1)
  shape = x.shape[:axis] + (2 * m,) + x.shape[axis + 1:]
  return lax.slice_in_dim(interleaved.reshape(shape), 0, size, axis=axis)


def downsample(x: jnp.ndarray) -> jnp.ndarray:
  """One pyramid step down on `(..., H, W, C)`: `(..., ceil(H/2), ceil(W/2), C)`."""
  height_axis, width_axis = x.ndim - 3, x.ndim - 2
  return downsample_axis(downsample_axis(x, height_axis), width_axis)


def upsample(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """One pyramid step up on `(..., h, w, C)` to `(..., height, width, C)`."""
  height_axis, width_axis = x.ndim - 3, x.ndim - 2
  return upsample_axis(upsample_axis(x, height_axis, height), width_axis, width)


def level_shapes(height: int, width: int, num_levels: int) -> list[tuple[int, int]]:
  """Spatial shapes `(h, w)` of pyramid levels 0 (full size) .. num_levels - 1."""
  shapes = [(height, width)]
  for _ in range(num_levels - 1):
    h, w = shapes[-1]
    shapes.append(((h + 1) // 2, (w + 1) // 2))
  return shapes


@functools.lru_cache(maxsize=None)
def downsample_matrix(size: int, steps: int) -> np.ndarray:
  """float32 `(coarse_size, size)` matrix of `steps` chained `downsample_axis` calls.

  Built by pushing an identity matrix through the same code, so it equals the
  stencil version exactly. Dense is cheap here: after a few steps the coarse
  size is small, and one matrix product reads the full-size input once
  instead of once per step.
  """
  with jax.ensure_compile_time_eval():
    matrix = jnp.eye(size, dtype=jnp.float32)
    for _ in range(steps):
      matrix = downsample_axis(matrix, 0)
    return np.asarray(matrix)


@functools.lru_cache(maxsize=None)
def upsample_taps(sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
  """Sparse form of chained `upsample_axis` calls through `sizes` (coarse to fine).

  Returns:
    `(indices, weights)`, int32 and float32 arrays `(taps, sizes[-1])`: fine
    sample i is `sum_j weights[j, i] * coarse[indices[j, i]]`. A chain of
    pyramid expansions touches at most 4 coarse samples per fine sample.
  """
  with jax.ensure_compile_time_eval():
    matrix = jnp.eye(sizes[0], dtype=jnp.float32)
    for size in sizes[1:]:
      matrix = upsample_axis(matrix, 0, size)
    matrix = np.asarray(matrix)
  nonzero = matrix != 0.0
  taps = int(nonzero.sum(axis=1).max())
  indices = np.zeros((taps, matrix.shape[0]), np.int32)
  weights = np.zeros((taps, matrix.shape[0]), np.float32)
  for row in range(matrix.shape[0]):
    columns = np.flatnonzero(nonzero[row])
    indices[:columns.size, row] = columns
    weights[:columns.size, row] = matrix[row, columns]
  return indices, weights


def _contract_rows(matrix: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
  """`matrix @ x[b]` for every b: `(k, n)` and `(B, n, m)` -> `(B, k, m)`.

  Written as a batched dot with the matrix broadcast over the batch: XLA's
  CPU backend then runs one GEMM per item in place, whereas an einsum with an
  unbatched matrix makes it transpose the whole (full-size) operand first.
  """
  batched = jnp.broadcast_to(matrix, (x.shape[0],) + matrix.shape)
  # HIGHEST: GPUs would otherwise use TF32 for these float32 products.
  return lax.dot_general(batched, x, (((2,), (1,)), ((0,), (0,))),
                         precision=lax.Precision.HIGHEST)


def gaussian_stack(x: jnp.ndarray, steps: int) -> jnp.ndarray:
  """`steps` pyramid steps down on `(..., H, W, C)`, as two matrix products.

  Equal to applying `downsample` `steps` times; reads `x` once.
  """
  *lead, height, width, channels = x.shape
  rows = jnp.asarray(downsample_matrix(height, steps), x.dtype)
  cols = jnp.asarray(downsample_matrix(width, steps), x.dtype)
  coarse_height, coarse_width = rows.shape[0], cols.shape[0]
  y = _contract_rows(rows, x.reshape((-1, height, width * channels)))
  y = _contract_rows(cols, y.reshape((-1, width, channels)))
  return y.reshape(tuple(lead) + (coarse_height, coarse_width, channels))


def _gather_upsample_axis(x: jnp.ndarray, axis: int, sizes: tuple[int, ...]) -> jnp.ndarray:
  indices, weights = upsample_taps(sizes)
  broadcast = (-1,) + (1,) * (x.ndim - 1 - axis)
  # Static gathers and weighted sums are elementwise to XLA: they fuse with
  # whatever consumes the result (the final "+ input, clip").
  return sum(jnp.asarray(weights[j].reshape(broadcast), x.dtype)
             * jnp.take(x, jnp.asarray(indices[j]), axis=axis)
             for j in range(indices.shape[0]))


def expand(x: jnp.ndarray, shapes: Sequence[tuple[int, int]]) -> jnp.ndarray:
  """Chained pyramid expansion of `(..., h, w, C)` through `shapes` (coarse to fine).

  `shapes[0]` is `(h, w)`, `shapes[-1]` the output size. Equal to calling
  `upsample` once per step. The width is expanded with a matrix product on
  the small coarse array; the height with sparse gathers, which XLA fuses
  with the consumer (the final "+ input, clip") so that the full-size
  expansion is never written to memory.
  """
  *lead, height, width, channels = x.shape
  heights = tuple(shape[0] for shape in shapes)
  widths = tuple(shape[1] for shape in shapes)
  indices, weights = upsample_taps(widths)
  dense = np.zeros((widths[-1], width), np.float32)
  for j in range(indices.shape[0]):
    np.add.at(dense, (np.arange(widths[-1]), indices[j]), weights[j])
  x = _contract_rows(jnp.asarray(dense, x.dtype), x.reshape((-1, width, channels)))
  x = x.reshape(tuple(lead) + (height, widths[-1], channels))
  return _gather_upsample_axis(x, x.ndim - 3, heights)


def upsample_fused(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """`upsample` for the last, full-size step: fuses with its consumer.

  The width is expanded with the stencil (the result is half the output
  size); the height with a sparse gather that XLA fuses with whatever
  consumes the result (the final "+ input, clip"). Measured on a 2-core CPU
  for (4, 64, 56, 56, 3) -> 112 x 112 plus add and clip: 23-31 ms, against
  48-53 ms for `upsample` and 23 ms for a plain copy of the output.
  """
  x = upsample_axis(x, x.ndim - 2, width)
  return _gather_upsample_axis(x, x.ndim - 3, (x.shape[-3], height))


def laplacian_level_gains(alpha, *, num_levels: int, height: int, width: int,
                          lambda_c, reference_compat: bool = False) -> jnp.ndarray:
  """Per-level amplification of the reference Laplacian-pyramid code.

  Level 0 is the finest band and `num_levels - 1` the low-pass residual;
  both get gain 0. The others get `min(cur, alpha)` with
  `cur = 2 (lambda / delta / 8 - 1)`, `delta = lambda_c / 8 / (1 + alpha)` and
  `lambda = sqrt(H^2 + W^2) / 3` halved for every level going from the
  residual towards the finest band (the reference loop).

  `cur` is negative for levels whose wavelength is below the cut-off (small
  frames, small alpha); the reference code then applies that negative gain,
  which inverts those bands and breaks "alpha = 0 is the identity". We clamp
  `cur` at 0 unless `reference_compat`.

  Args:
    alpha: scalar amplification (Python float or traced scalar).
    num_levels: pyramid levels including the residual.
    height, width: full frame size in pixels.
    lambda_c: cut-off spatial wavelength in pixels (scalar, may be traced).
    reference_compat: keep the reference's negative gains.

  Returns:
    float32 `(num_levels,)` gains, differentiable in alpha and lambda_c.
  """
  alpha = jnp.asarray(alpha, jnp.float32)
  delta = jnp.asarray(lambda_c, jnp.float32) / 8.0 / (1.0 + alpha)
  diagonal_third = math.sqrt(height ** 2 + width ** 2) / 3.0
  # lambda for level l (0 = finest): the loop halves it num_levels - 1 - l times.
  lambdas = np.array([diagonal_third / 2.0 ** (num_levels - 1 - level)
                      for level in range(num_levels)], np.float32)
  exaggeration_factor = 2.0
  current = (lambdas / delta / 8.0 - 1.0) * exaggeration_factor
  if not reference_compat:
    current = jnp.maximum(current, 0.0)
  gains = jnp.minimum(current, alpha)
  amplified = np.ones(num_levels, bool)
  amplified[0] = amplified[-1] = False
  return jnp.where(amplified, gains, 0.0)
