"""`tvl1_flow`: duality-based TV-L1 optical flow with coarse-to-fine warping, in JAX.

The algorithm and its parameters follow OpenCV's `DualTVL1OpticalFlow`
(opencv_contrib `optflow`), itself the scheme of Zach, Pock and Bischof
(DAGM 2007) with Wedel et al.'s improvements (2009) as described by Sanchez,
Meinhardt-Llopis and Facciolo (IPOL 2013): minimise

    sum_x |grad u1| + |grad u2| + lambda |rho(u)|,
    rho(u) = I1(x + u0) + grad I1(x + u0) . (u - u0) - I0(x)

by alternating a pointwise thresholding step for an auxiliary field v and
Chambolle's dual projection for u (coupling 1 / (2 theta)), on an image pyramid
with `num_warps` re-linearisations per level. What is the same as OpenCV,
so that one parameter set means the same thing in both:

* grey values on the 0..255 scale (OpenCV multiplies float input by 255; we
  scale the [0, 1] frames the same way), so `lambda_` and `epsilon` carry over;
* pyramid: `cv2.resize(INTER_LINEAR)` by `scale_step` (pixel-centre aligned,
  replicated border, sizes rounded), no pre-smoothing; flow upsampled
  bilinearly and multiplied by `1 / scale_step` between levels;
* image gradient: centred differences with a replicated border; warping of I1
  and its gradient by bicubic interpolation (Keys, a = -0.75, as `cv2.remap`'s
  INTER_CUBIC);
* per warp: `outer_iterations` x `inner_iterations` iterations, stopped when
  the squared update summed over the level's pixels drops below
  `epsilon^2 * area` (per pair); a `median_filtering` x `median_filtering`
  median of the flow (replicated border) at the start of every outer
  iteration; the dual variables start at zero on each level and persist
  across warps;
* forward differences for the flow's gradient (zero at the last row/column),
  the matching backward-difference divergence; `gamma > 0` adds the
  illumination term u3 of OpenCV (regularised like u1, u2, not returned).

Differences: OpenCV's remap quantises sample positions to 1/32 pixel and
fills samples outside the image with 0; here positions are exact and the
border is replicated (so a flow that points out of the frame does not see a
black edge). OpenCV silently drops pyramid levels smaller than 16 pixels;
here that is an error that says which `num_scales` fits.

Everything is static-shaped and written on explicitly batched `(B, H, W)`
arrays: the iteration loops are `lax.while_loop`s whose predicate is "some pair
of the batch is still above epsilon" (pairs already converged are frozen, so
each pair's result is what it would be alone), and one inner iteration is a
handful of elementwise ops that XLA fuses.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

# cv2.cvtColor(RGB2GRAY) weights (ITU-R BT.601 luma).
RGB_TO_GREY = (0.299, 0.587, 0.114)
# OpenCV stops building the pyramid at a level smaller than this on either side.
MIN_LEVEL_SIZE = 16
# Keys' cubic convolution parameter used by OpenCV's INTER_CUBIC.
CUBIC_A = -0.75
# OpenCV compares |grad I1|^2 against float epsilon before dividing by it.
_FLOAT_EPS = float(np.finfo(np.float32).eps)


@dataclasses.dataclass(frozen=True)
class TVL1Params:
  """The parameters of `tvl1_flow`, with OpenCV's names in the docstring.

  Attributes:
    tau: time step of the dual projection (OpenCV `tau`); <= 0.25 converges.
    lambda_: weight of the data term (OpenCV `lambda`), for 0..255 grey values.
    theta: coupling of u and v (OpenCV `theta`).
    num_scales: pyramid levels (OpenCV `nscales`).
    scale_step: size ratio between consecutive levels, in (0, 1) (OpenCV
      `scaleStep`).
    num_warps: re-linearisations per level (OpenCV `warps`).
    epsilon: stopping threshold on the RMS update per pixel, in pixels
      (OpenCV `epsilon`); 0 runs the fixed iteration counts (differentiable).
    inner_iterations: iterations per outer iteration (OpenCV
      `innerIterations`).
    outer_iterations: median-filter rounds per warp (OpenCV
      `outerIterations`).
    median_filtering: median window size applied to the flow (OpenCV
      `medianFiltering`); 0 or 1 turns it off, otherwise odd >= 3.
    gamma: weight of the illumination-change term (OpenCV `gamma`); 0 off.
  """
  tau: float = 0.25
  lambda_: float = 0.15
  theta: float = 0.3
  num_scales: int = 5
  scale_step: float = 0.8
  num_warps: int = 5
  epsilon: float = 0.01
  inner_iterations: int = 30
  outer_iterations: int = 10
  median_filtering: int = 5
  gamma: float = 0.0

  def __post_init__(self):
    for name in ("tau", "lambda_", "theta"):
      _check_real(name, getattr(self, name), positive=True)
    _check_real("epsilon", self.epsilon, positive=False)
    _check_real("gamma", self.gamma, positive=False)
    step = _check_real("scale_step", self.scale_step, positive=True)
    if step >= 1.0:
      raise ValueError(f"scale_step must be in (0, 1) (size ratio of consecutive pyramid levels), "
                       f"got {step}")
    for name in ("num_scales", "num_warps", "inner_iterations", "outer_iterations"):
      _check_int(name, getattr(self, name), minimum=1)
    median = _check_int("median_filtering", self.median_filtering, minimum=0)
    if median > 1 and median % 2 == 0:
      raise ValueError(f"median_filtering must be 0 or 1 (off) or an odd window size >= 3, "
                       f"got {median}")

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)

  @property
  def differentiable(self) -> bool:
    """Fixed iteration counts and no median: reverse-mode gradients are defined and useful."""
    return self.epsilon == 0 and self.median_filtering <= 1


def _check_real(name: str, value, *, positive: bool) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
  value = float(value)
  if not math.isfinite(value) or value < 0 or (positive and value == 0):
    raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                     f"got {value}")
  return value


def _check_int(name: str, value, *, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


# ----------------------------------------------------------------------------
# Pyramid geometry (static, NumPy).


def pyramid_shapes(height: int, width: int, num_scales: int, scale_step: float
                   ) -> list[tuple[int, int]]:
  """Level sizes `[(H, W), ...]`, finest first, as `cv2.resize(fx=fy=scale_step)` rounds them."""
  shapes = [(int(height), int(width))]
  for _ in range(num_scales - 1):
    h, w = shapes[-1]
    shapes.append((int(round(h * scale_step)), int(round(w * scale_step))))
  return shapes


def max_num_scales(height: int, width: int, scale_step: float = 0.8) -> int:
  """The most pyramid levels whose sides are all >= `MIN_LEVEL_SIZE` (0 if none)."""
  count, h, w = 0, int(height), int(width)
  while min(h, w) >= MIN_LEVEL_SIZE and count < 64:
    count += 1
    h, w = int(round(h * scale_step)), int(round(w * scale_step))
  return count


def check_frame_size(height: int, width: int, num_scales: int, scale_step: float,
                     name: str = "frame0") -> None:
  """Raises ValueError when the coarsest level would be smaller than `MIN_LEVEL_SIZE`."""
  shapes = pyramid_shapes(height, width, num_scales, scale_step)
  coarse_h, coarse_w = shapes[-1]
  if min(coarse_h, coarse_w) >= MIN_LEVEL_SIZE:
    return
  fit = max_num_scales(height, width, scale_step)
  side = MIN_LEVEL_SIZE  # Smallest square whose coarsest level keeps 16 pixels.
  while min(pyramid_shapes(side, side, num_scales, scale_step)[-1]) < MIN_LEVEL_SIZE:
    side += 1
  advice = (f"use num_scales <= {fit}" if fit else "no num_scales fits") + (
      f" or frames of at least {side}x{side} pixels")
  raise ValueError(
      f"{name} of {height}x{width} pixels is too small for num_scales={num_scales} with "
      f"scale_step={scale_step}: the coarsest pyramid level would be {coarse_h}x{coarse_w}, "
      f"below the minimum of {MIN_LEVEL_SIZE} pixels per side; {advice}")


@functools.lru_cache(maxsize=256)
def _linear_resize_matrix(src: int, dst: int, scale: Optional[float]) -> np.ndarray:
  """`(dst, src)` matrix of `cv2.resize(INTER_LINEAR)` along one axis.

  Pixel centres are aligned: destination i samples source `(i + 0.5) * r - 0.5`
  with r = `1 / scale` when a scale factor was given (OpenCV uses the factor,
  not the size ratio) and `src / dst` otherwise; taps are clamped (replicated
  border).
  """
  ratio = 1.0 / scale if scale is not None else src / dst
  position = (np.arange(dst) + 0.5) * ratio - 0.5
  left = np.floor(position)
  frac = position - left
  left = left.astype(np.int64)
  matrix = np.zeros((dst, src), np.float64)
  rows = np.arange(dst)
  np.add.at(matrix, (rows, np.clip(left, 0, src - 1)), 1.0 - frac)
  np.add.at(matrix, (rows, np.clip(left + 1, 0, src - 1)), frac)
  return matrix.astype(np.float32)


def _resize(images: jnp.ndarray, shape: tuple[int, int], scale: Optional[float]) -> jnp.ndarray:
  """Bilinear resize of `(B, H, W)` to `(B, *shape)` as two small matmuls."""
  rows = jnp.asarray(_linear_resize_matrix(images.shape[-2], shape[0], scale))
  cols = jnp.asarray(_linear_resize_matrix(images.shape[-1], shape[1], scale))
  precision = jax.lax.Precision.HIGHEST
  out = jnp.einsum("yh,bhw->byw", rows, images, precision=precision)
  return jnp.einsum("byw,xw->byx", out, cols, precision=precision)


# ----------------------------------------------------------------------------
# Finite differences (batched (B, H, W)).


def _centred_gradient(image: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Half the difference of the two neighbours, border replicated (OpenCV's centeredGradient)."""
  padded = jnp.pad(image, ((0, 0), (1, 1), (1, 1)), mode="edge")
  dx = 0.5 * (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2])
  dy = 0.5 * (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])
  return dx, dy


def _forward_gradient(u: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """`u(x+1) - u(x)`, zero on the last column (x) / row (y)."""
  dx = jnp.pad(u[:, :, 1:] - u[:, :, :-1], ((0, 0), (0, 0), (0, 1)))
  dy = jnp.pad(u[:, 1:, :] - u[:, :-1, :], ((0, 0), (0, 1), (0, 0)))
  return dx, dy


def _divergence(px: jnp.ndarray, py: jnp.ndarray) -> jnp.ndarray:
  """Backward differences with p = 0 before the first column/row: minus the adjoint of
  `_forward_gradient` (p on the last column/row is 0 by construction)."""
  px_left = jnp.pad(px[:, :, :-1], ((0, 0), (0, 0), (1, 0)))
  py_up = jnp.pad(py[:, :-1, :], ((0, 0), (1, 0), (0, 0)))
  return (px - px_left) + (py - py_up)


# ----------------------------------------------------------------------------
# Median filter: a sorting network (min/max only), so XLA fuses it.


@functools.lru_cache(maxsize=8)
def _median_network(n: int) -> tuple[tuple[int, int], ...]:
  """Comparators (i < j) of Batcher's odd-even merge sort restricted to the first n wires.

  The network is built for the next power of two; padding wires hold +inf and
  a comparator never moves a +inf to a lower wire, so the comparators that
  touch a padding wire can be dropped. XLA later removes the comparators that
  do not feed the median wire.
  """
  size = 1
  while size < n:
    size *= 2
  comparators = []
  p = 1
  while p < size:
    k = p
    while k >= 1:
      for j in range(k % p, size - k, 2 * k):
        for i in range(min(k, size - j - k)):
          a, b = i + j, i + j + k
          if a // (2 * p) == b // (2 * p):
            comparators.append((a, b))
      k //= 2
    p *= 2
  return tuple((a, b) for a, b in comparators if b < n)


def median_filter(u: jnp.ndarray, size: int) -> jnp.ndarray:
  """`size` x `size` median of `(B, H, W)` with a replicated border (cv2.medianBlur)."""
  r = size // 2
  padded = jnp.pad(u, ((0, 0), (r, r), (r, r)), mode="edge")
  h, w = u.shape[-2:]
  wires = [padded[:, i:i + h, j:j + w] for i in range(size) for j in range(size)]
  for a, b in _median_network(size * size):
    wires[a], wires[b] = jnp.minimum(wires[a], wires[b]), jnp.maximum(wires[a], wires[b])
  return wires[(size * size) // 2]


# ----------------------------------------------------------------------------
# Bicubic warping.


def _cubic_weights(t: jnp.ndarray) -> jnp.ndarray:
  """Keys' cubic weights of the taps at -1, 0, 1, 2 for fractional offset t: `(..., 4)`."""
  a = CUBIC_A
  def near(x):  # |x| <= 1
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  def far(x):   # 1 < |x| < 2
    return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
  w0 = far(t + 1.0)
  w1 = near(t)
  w2 = near(1.0 - t)
  w3 = 1.0 - w0 - w1 - w2
  return jnp.stack([w0, w1, w2, w3], axis=-1)


def _warp_bicubic(images: jnp.ndarray, u1: jnp.ndarray, u2: jnp.ndarray) -> jnp.ndarray:
  """Samples `images (B, H, W, C)` at `(x + u1, y + u2)`; replicated border. -> `(B, H, W, C)`.

  Sixteen separate gathers of C-vectors, each weighted as it arrives: on CPU
  this is about 5x faster than one gather of all taps followed by a reduction.
  """
  batch, h, w, channels = images.shape
  xs = jnp.arange(w, dtype=u1.dtype)[None, None, :] + u1
  ys = jnp.arange(h, dtype=u2.dtype)[None, :, None] + u2
  x0 = jnp.floor(xs)
  y0 = jnp.floor(ys)
  wx = _cubic_weights(xs - x0)  # (B, H, W, 4)
  wy = _cubic_weights(ys - y0)
  col = x0.astype(jnp.int32)
  row = y0.astype(jnp.int32)
  base = (jnp.arange(batch, dtype=jnp.int32) * (h * w))[:, None, None]
  flat = images.reshape(batch * h * w, channels)
  out = 0.0
  for i in range(4):
    row_i = base + jnp.clip(row + (i - 1), 0, h - 1) * w
    along_x = 0.0
    for j in range(4):
      index = row_i + jnp.clip(col + (j - 1), 0, w - 1)
      taps = jnp.take(flat, index.reshape(-1), axis=0, mode="clip").reshape(batch, h, w, channels)
      along_x = along_x + wx[..., j, None] * taps
    out = out + wy[..., i, None] * along_x
  return out


# ----------------------------------------------------------------------------
# One pyramid level.


def _solve_level(i0: jnp.ndarray, i1: jnp.ndarray, flow: tuple, p: TVL1Params) -> tuple:
  """Runs `num_warps` warps on one level. `i0, i1`: (B, H, W) on 0..255; `flow`: (u1, u2, u3)."""
  use_gamma = p.gamma > 0
  fixed = p.epsilon == 0
  batch, h, w = i0.shape
  l_t = p.lambda_ * p.theta
  taut = p.tau / p.theta
  theta = p.theta
  gamma = p.gamma
  scaled_epsilon = p.epsilon * p.epsilon * h * w
  i1x, i1y = _centred_gradient(i1)
  i1_stack = jnp.stack([i1, i1x, i1y], axis=-1)
  zeros = jnp.zeros_like(i0)
  duals = (zeros,) * (6 if use_gamma else 4)

  def inner_step(consts, u, duals, active=None):
    """One iteration; pairs with `active` False (B,) keep their state. -> (u, duals, error)."""
    ix, iy, rho_c, l_t_grad, inv_grad = consts
    u1, u2, u3 = u
    rho = rho_c + ix * u1 + iy * u2
    if use_gamma:
      rho = rho + gamma * u3
    # The thresholding step as one coefficient c: v = u + c (Ix, Iy[, gamma]).
    coef = jnp.where(rho < -l_t_grad, l_t, jnp.where(rho > l_t_grad, -l_t, -rho * inv_grad))
    # u_new - u = (v - u) + theta div p; masking the step (not selecting between
    # old and new arrays) keeps the update one fused pass.
    mask = 1.0 if active is None else active.astype(u1.dtype)[:, None, None]
    steps = [coef * ix + theta * _divergence(duals[0], duals[1]),
             coef * iy + theta * _divergence(duals[2], duals[3])]
    if use_gamma:
      steps.append(coef * gamma + theta * _divergence(duals[4], duals[5]))
    steps = [mask * step for step in steps]
    error = sum(jnp.sum(jnp.square(step), axis=(1, 2)) for step in steps)
    new_u = [u1 + steps[0], u2 + steps[1], u3 + steps[2] if use_gamma else u3]
    new_duals = []
    for k, component in enumerate(new_u[:len(steps)]):
      gx, gy = _forward_gradient(component)
      # sqrt of max(., tiny): same value, and a finite gradient where grad u = 0.
      scale = 1.0 / (1.0 + taut * jnp.sqrt(jnp.maximum(gx * gx + gy * gy, 1e-30)))
      for g, dual in ((gx, duals[2 * k]), (gy, duals[2 * k + 1])):
        new_duals.append(dual + mask * ((dual + taut * g) * scale - dual))
    return tuple(new_u), tuple(new_duals), error

  def warp_step(_, state):
    u, duals = state
    u1, u2, u3 = u
    warped = _warp_bicubic(i1_stack, u1, u2)
    i1w, ix, iy = warped[..., 0], warped[..., 1], warped[..., 2]
    grad = ix * ix + iy * iy
    has_grad = grad > _FLOAT_EPS
    inv_grad = jnp.where(has_grad, 1.0 / jnp.where(has_grad, grad, 1.0), 0.0)
    rho_c = i1w - ix * u1 - iy * u2 - i0
    consts = (ix, iy, rho_c, l_t * grad, inv_grad)

    if fixed:
      def inner_fixed(_, carry):
        u, duals = carry
        new_u, new_duals, _ = inner_step(consts, u, duals)
        return new_u, new_duals

      def outer_fixed(_, carry):
        u, duals = carry
        if p.median_filtering > 1:
          u = (median_filter(u[0], p.median_filtering),
               median_filter(u[1], p.median_filtering), u[2])
        return jax.lax.fori_loop(0, p.inner_iterations, inner_fixed, (u, duals))

      return jax.lax.fori_loop(0, p.outer_iterations, outer_fixed, (u, duals))

    # Early stopping per pair: a pair whose update fell below epsilon is frozen,
    # so its result is what it would be if it were solved alone.
    def inner_cond(carry):
      n, _, _, error = carry
      return jnp.logical_and(n < p.inner_iterations, jnp.any(error > scaled_epsilon))

    def inner_body(carry):
      n, u, duals, error = carry
      active = error > scaled_epsilon
      new_u, new_duals, new_error = inner_step(consts, u, duals, active)
      return n + 1, new_u, new_duals, jnp.where(active, new_error, error)

    def outer_cond(carry):
      n, _, _, error = carry
      return jnp.logical_and(n < p.outer_iterations, jnp.any(error > scaled_epsilon))

    def outer_body(carry):
      n, u, duals, error = carry
      if p.median_filtering > 1:
        active = error > scaled_epsilon
        keep = active[:, None, None]
        u = (jnp.where(keep, median_filter(u[0], p.median_filtering), u[0]),
             jnp.where(keep, median_filter(u[1], p.median_filtering), u[1]), u[2])
      _, u, duals, error = jax.lax.while_loop(inner_cond, inner_body,
                                              (jnp.int32(0), u, duals, error))
      return n + 1, u, duals, error

    error = jnp.full((batch,), jnp.inf, i0.dtype)
    _, u, duals, _ = jax.lax.while_loop(outer_cond, outer_body, (jnp.int32(0), u, duals, error))
    return u, duals

  u, _ = jax.lax.fori_loop(0, p.num_warps, warp_step, (flow, duals))
  return u


def _tvl1_batch(frame0: jnp.ndarray, frame1: jnp.ndarray, p: TVL1Params) -> jnp.ndarray:
  """`(B, H, W)` grey frames on 0..255 -> `(B, H, W, 2)` flow."""
  batch, height, width = frame0.shape
  shapes = pyramid_shapes(height, width, p.num_scales, p.scale_step)
  pyramid0, pyramid1 = [frame0], [frame1]
  for shape in shapes[1:]:
    pyramid0.append(_resize(pyramid0[-1], shape, p.scale_step))
    pyramid1.append(_resize(pyramid1[-1], shape, p.scale_step))
  zeros = jnp.zeros((batch,) + shapes[-1], frame0.dtype)
  flow = (zeros, zeros, zeros)
  for level in range(p.num_scales - 1, -1, -1):
    flow = _solve_level(pyramid0[level], pyramid1[level], flow, p)
    if level:
      finer = shapes[level - 1]
      u1, u2, u3 = (_resize(component, finer, None) for component in flow)
      flow = (u1 / p.scale_step, u2 / p.scale_step, u3)  # u3 is a brightness, not a length.
  return jnp.stack(flow[:2], axis=-1)


# ----------------------------------------------------------------------------
# Public API.


def to_grey(frames: jnp.ndarray) -> jnp.ndarray:
  """`(..., H, W, 3)` RGB -> `(..., H, W)` with cv2.cvtColor(RGB2GRAY)'s weights."""
  weights = jnp.asarray(RGB_TO_GREY, frames.dtype)
  return jnp.einsum("...c,c->...", frames, weights, precision=jax.lax.Precision.HIGHEST)


def _concrete(value) -> Optional[np.ndarray]:
  """`value` as a NumPy array, or None when it is traced (inside jit / grad / vmap)."""
  try:
    return np.asarray(value)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _is_rgb(shape) -> bool:
  return len(shape) >= 3 and shape[-1] == 3


def _check_frames(frame0, frame1) -> None:
  for name, frame in (("frame0", frame0), ("frame1", frame1)):
    if not hasattr(frame, "shape") or not hasattr(frame, "dtype"):
      raise ValueError(f"{name} must be an array, got {type(frame).__name__}")
    if not jnp.issubdtype(frame.dtype, jnp.floating):
      raise ValueError(f"{name} must be floating point in [0, 1], got dtype {frame.dtype}; "
                       "convert uint8 with frame.astype(np.float32) / 255")
    if frame.ndim < 2:
      raise ValueError(f"{name} must be (..., H, W) grey or (..., H, W, 3) RGB, got shape "
                       f"{tuple(frame.shape)}")
  if tuple(frame0.shape) != tuple(frame1.shape):
    raise ValueError(f"frame1 has shape {tuple(frame1.shape)}, frame0 has "
                     f"{tuple(frame0.shape)}: the two frames must have the same shape")
  for name, frame in (("frame0", frame0), ("frame1", frame1)):
    array = _concrete(frame)
    if array is None:  # Traced: values are unknown here.
      continue
    if not np.all(np.isfinite(array)):
      raise ValueError(f"{name} holds NaN or infinite values")
    low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
    if low < 0.0 or high > 1.0:
      raise ValueError(f"{name} values must lie in [0, 1], got [{low:.4g}, {high:.4g}]; "
                       "divide 0..255 images by 255")


def tvl1_flow(frame0: jnp.ndarray, frame1: jnp.ndarray, *, tau: float = 0.25,
              lambda_: float = 0.15, theta: float = 0.3, num_scales: int = 5,
              scale_step: float = 0.8, num_warps: int = 5, epsilon: float = 0.01,
              inner_iterations: int = 30, outer_iterations: int = 10,
              median_filtering: int = 5, gamma: float = 0.0,
              chunk_size: Optional[int] = None) -> jnp.ndarray:
  """Dense TV-L1 optical flow from `frame0` to `frame1` (OpenCV DualTVL1 semantics).

  Works under `jax.jit` (all arguments but the frames are static Python
  values), `jax.vmap` and, in the differentiable configuration
  (`epsilon=0`: fixed iteration counts; best with `median_filtering=0`),
  reverse-mode `jax.grad` with respect to both frames. With `epsilon > 0` the
  iterations stop early (`lax.while_loop`, forward-mode only).

  Frames are `[0, 1]` floats; internally they are multiplied by 255 (OpenCV
  does the same to float input), so `lambda_` and `epsilon` mean exactly what
  they mean for OpenCV on 8-bit images. RGB is converted to grey with
  cv2.cvtColor's weights (0.299, 0.587, 0.114).

  Args:
    frame0, frame1: `(..., H, W)` grey or `(..., H, W, 3)` RGB, same shape,
      floating point in [0, 1]; any leading batch dimensions.
    tau, lambda_, theta, num_scales, scale_step, num_warps, epsilon,
      inner_iterations, outer_iterations, median_filtering, gamma: OpenCV's
      `DualTVL1OpticalFlow` parameters and defaults, see `TVL1Params`.
    chunk_size: solve the flattened batch this many pairs at a time
      (`lax.map`), bounding memory for long batches; None solves all at once.
      Results do not depend on it.

  Returns:
    `(..., H, W, 2)` float32 displacement (u, v) = (x, y) in pixels of the
    input frames, with `frame0[y, x] ~ frame1[y + v, x + u]`.

  Raises:
    ValueError: naming the argument at fault: frames of different shapes,
      non-float frames, values outside [0, 1] (checked when not traced), frames
      too small for `num_scales` (the message says which `num_scales` fits),
      non-positive or malformed parameters.
  """
  params = TVL1Params(tau=tau, lambda_=lambda_, theta=theta, num_scales=num_scales,
                      scale_step=scale_step, num_warps=num_warps, epsilon=epsilon,
                      inner_iterations=inner_iterations, outer_iterations=outer_iterations,
                      median_filtering=median_filtering, gamma=gamma)
  if chunk_size is not None:
    _check_int("chunk_size", chunk_size, minimum=1)
  _check_frames(frame0, frame1)
  return _flow(frame0, frame1, params, chunk_size)


def _flow(frame0, frame1, params: TVL1Params, chunk_size: Optional[int]) -> jnp.ndarray:
  frame0 = jnp.asarray(frame0, jnp.float32)
  frame1 = jnp.asarray(frame1, jnp.float32)
  if _is_rgb(frame0.shape):
    frame0, frame1 = to_grey(frame0), to_grey(frame1)
  *lead, height, width = frame0.shape
  check_frame_size(height, width, params.num_scales, params.scale_step)
  # 0..255 grey values: OpenCV's scale, for which lambda and epsilon are tuned.
  grey0 = frame0.reshape((-1, height, width)) * 255.0
  grey1 = frame1.reshape((-1, height, width)) * 255.0
  count = grey0.shape[0]
  solve = functools.partial(_tvl1_batch, p=params)
  if chunk_size is None or chunk_size >= count:
    flow = solve(grey0, grey1)
  else:
    chunks = -(-count // chunk_size)
    pad = chunks * chunk_size - count
    # Padding pairs are black frames: zero gradient, they converge at once.
    grey0 = jnp.pad(grey0, ((0, pad), (0, 0), (0, 0)))
    grey1 = jnp.pad(grey1, ((0, pad), (0, 0), (0, 0)))
    shape = (chunks, chunk_size, height, width)
    flow = jax.lax.map(lambda pair: solve(*pair), (grey0.reshape(shape), grey1.reshape(shape)))
    flow = flow.reshape((chunks * chunk_size, height, width, 2))[:count]
  return flow.reshape(tuple(lead) + (height, width, 2)).astype(jnp.float32)
