"""Optical strain: the magnitude of the strain tensor of a flow field.

For a displacement (u, v) the infinitesimal strain tensor has e_xx = u_x,
e_yy = v_y and e_xy = (u_y + v_x) / 2; its Frobenius magnitude is

    sqrt(e_xx^2 + e_yy^2 + 2 e_xy^2) = sqrt(u_x^2 + v_y^2 + 1/2 (u_y + v_x)^2).

Public micro-expression code disagrees on the details, so each recipe is a
named variant (`STRAIN_VARIANTS`):

* "softnet": the formula above with forward differences (u_x = u(x+1) - u(x));
  the last column / row, where a forward difference is undefined, repeat
  their neighbour. Source: SOFTNet (Liong et al., "Shallow Optical Flow
  Three-Stream CNN for Macro- and Micro-Expression Spotting", FG 2021), the
  strain function of the authors' public code.
* "ststnet": shear coefficient 1/4 instead of 1/2, i.e.
  sqrt(u_x^2 + v_y^2 + 1/4 (u_y + v_x)^2), with `np.gradient` derivatives
  (central differences inside, one-sided at the border). Source: the recipe
  given by the authors in an issue of the STSTNet repository (Liong et al.,
  "Shallow Triple Stream Three-dimensional CNN (STSTNet) for Micro-expression
  Recognition", FG 2019).
* "meb": sqrt(u_x^2 + v_y^2 + 1/2 (u_y^2 + v_x^2)) (squares of the shear
  terms, not the square of their sum) with 3x3 Sobel derivatives, here divided
  by 8 so that a unit ramp has derivative 1 (the absolute scale vanishes in
  the per-sample min-max normalisation that follows in MEB). Source: the MEB
  toolkit (Varanka et al., "Micro-expression benchmark", its SSSNet input
  features).

Analytic checks (exact for every variant away from the border, and for
"softnet"/"ststnet" everywhere): a stretch u = a x, v = 0 gives |a|; a shear
u = b y, v = b x gives sqrt(2)|b| ("softnet"), |b| ("ststnet") and |b|
("meb"); a translation gives 0.
"""

from __future__ import annotations

import jax.numpy as jnp

STRAIN_VARIANTS = ("softnet", "ststnet", "meb")


def _forward(f: jnp.ndarray, axis: int) -> jnp.ndarray:
  """f(i+1) - f(i) along `axis`; the last entry repeats the one before it."""
  n = f.shape[axis]
  diff = jnp.take(f, jnp.arange(1, n), axis=axis) - jnp.take(f, jnp.arange(n - 1), axis=axis)
  last = jnp.take(diff, jnp.array([n - 2]), axis=axis)
  return jnp.concatenate([diff, last], axis=axis)


def _np_gradient(f: jnp.ndarray, axis: int) -> jnp.ndarray:
  """`np.gradient` with unit spacing: (f(i+1) - f(i-1)) / 2 inside, one-sided at the ends."""
  n = f.shape[axis]
  take = lambda idx: jnp.take(f, jnp.asarray(idx), axis=axis)
  inner = 0.5 * (take(list(range(2, n))) - take(list(range(n - 2))))
  first = take([1]) - take([0])
  last = take([n - 1]) - take([n - 2])
  return jnp.concatenate([first, inner, last], axis=axis)


def _sobel(f: jnp.ndarray, axis: int) -> jnp.ndarray:
  """3x3 Sobel derivative along `axis` (-1: x, -2: y) of `(..., H, W)`, divided by 8.

  Border replicated (`cv2.Sobel`'s default is reflect-101; the two differ on
  the outermost pixels only).
  """
  padded = jnp.pad(f, [(0, 0)] * (f.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
  h, w = f.shape[-2:]
  window = lambda dy, dx: padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
  if axis == -1:
    diff = lambda dy: window(dy, 1) - window(dy, -1)
  else:
    diff = lambda dx: window(1, dx) - window(-1, dx)
  return (diff(-1) + 2.0 * diff(0) + diff(1)) / 8.0


def optical_strain(flow: jnp.ndarray, variant: str = "softnet") -> jnp.ndarray:
  """Optical strain magnitude of `flow`.

  Args:
    flow: `(..., H, W, 2)` displacements (u, v) in pixels, H, W >= 3.
    variant: one of `STRAIN_VARIANTS` (see the module docstring).

  Returns:
    `(..., H, W)` float32 strain magnitude (dimensionless: pixels per pixel).

  Raises:
    ValueError: `flow` is not `(..., H, W, 2)` with H, W >= 3, or `variant` is unknown.
  """
  if variant not in STRAIN_VARIANTS:
    raise ValueError(f"variant must be one of {STRAIN_VARIANTS}, got {variant!r}")
  if not hasattr(flow, "shape") or len(flow.shape) < 3 or flow.shape[-1] != 2:
    raise ValueError(f"flow must be shaped (..., H, W, 2), got shape {getattr(flow, 'shape', None)}")
  if min(flow.shape[-3:-1]) < 3:
    raise ValueError(f"flow must be at least 3x3 pixels, got {flow.shape[-3]}x{flow.shape[-2]}")
  flow = jnp.asarray(flow, jnp.float32)
  u, v = flow[..., 0], flow[..., 1]
  if variant == "softnet":
    u_x, u_y = _forward(u, -1), _forward(u, -2)
    v_x, v_y = _forward(v, -1), _forward(v, -2)
    return jnp.sqrt(u_x ** 2 + v_y ** 2 + 0.5 * (u_y + v_x) ** 2)
  if variant == "ststnet":
    u_x, u_y = _np_gradient(u, -1), _np_gradient(u, -2)
    v_x, v_y = _np_gradient(v, -1), _np_gradient(v, -2)
    return jnp.sqrt(u_x ** 2 + v_y ** 2 + 0.25 * (u_y + v_x) ** 2)
  u_x, u_y = _sobel(u, -1), _sobel(u, -2)
  v_x, v_y = _sobel(v, -1), _sobel(v, -2)
  return jnp.sqrt(u_x ** 2 + v_y ** 2 + 0.5 * (u_y ** 2 + v_x ** 2))


def flow_features(flow: jnp.ndarray, variant: str = "softnet") -> jnp.ndarray:
  """`(..., H, W, 2)` flow -> `(..., H, W, 3)` channels (u, v, strain), the field's usual input."""
  return jnp.concatenate([jnp.asarray(flow, jnp.float32),
                          optical_strain(flow, variant)[..., None]], axis=-1)
