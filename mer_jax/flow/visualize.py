"""Colour-wheel rendering of a flow field (Baker et al.'s Middlebury convention), NumPy only.

Hue encodes the direction, saturation the magnitude: zero motion is white,
motion of `max_flow` pixels (default: the field's largest) is fully
saturated, larger motion is darkened. The wheel walks through the six
primary/secondary colours red, yellow, green, cyan, blue, magenta in
15, 6, 4, 11, 13, 6 steps (Baker et al., "A Database and Evaluation
Methodology for Optical Flow", IJCV 2011), so that perceptually similar hue
changes get similar angles; colours between steps are interpolated linearly.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

# Steps between consecutive colours of the wheel: R->Y, Y->G, G->C, C->B, B->M, M->R.
WHEEL_STEPS = (15, 6, 4, 11, 13, 6)
_CORNERS = np.array([[255, 0, 0], [255, 255, 0], [0, 255, 0], [0, 255, 255], [0, 0, 255],
                     [255, 0, 255]], np.float64)


def colour_wheel() -> np.ndarray:
  """`(55, 3)` float RGB in [0, 255]: the wheel's colours, red first."""
  segments = []
  for k, steps in enumerate(WHEEL_STEPS):
    start, end = _CORNERS[k], _CORNERS[(k + 1) % len(_CORNERS)]
    t = np.arange(steps)[:, None] / steps
    segments.append((1.0 - t) * start + t * end)
  return np.concatenate(segments)


def flow_to_rgb(flow: np.ndarray, max_flow: Optional[float] = None) -> np.ndarray:
  """`(H, W, 2)` flow (u, v) in pixels -> `(H, W, 3)` uint8 RGB.

  Args:
    flow: displacements; non-finite values are drawn black.
    max_flow: magnitude shown fully saturated; None uses the largest finite
      magnitude in `flow` (an all-zero flow is white).
  """
  flow = np.asarray(flow, np.float64)
  if flow.ndim != 3 or flow.shape[-1] != 2:
    raise ValueError(f"flow must be shaped (H, W, 2), got shape {flow.shape}")
  finite = np.all(np.isfinite(flow), axis=-1)
  u = np.where(finite, flow[..., 0], 0.0)
  v = np.where(finite, flow[..., 1], 0.0)
  radius = np.hypot(u, v)
  if max_flow is None:
    max_flow = float(radius.max()) if radius.size else 0.0
  elif not max_flow > 0:
    raise ValueError(f"max_flow must be positive or None, got {max_flow!r}")
  radius = radius / max_flow if max_flow > 0 else np.zeros_like(radius)
  wheel = colour_wheel()
  n = len(wheel)
  # atan2(-v, -u) / pi in [-1, 1] -> position 0 .. n-1 on the wheel: motion to
  # the right is at the red end, down (v > 0) orange-yellow, left cyan-blue,
  # up blue-magenta.
  angle = np.arctan2(-v, -u) / np.pi
  position = (angle + 1.0) / 2.0 * (n - 1)
  index0 = np.floor(position).astype(np.int64)
  index1 = (index0 + 1) % n
  frac = (position - index0)[..., None]
  colour = ((1.0 - frac) * wheel[index0 % n] + frac * wheel[index1]) / 255.0
  r = radius[..., None]
  inside = r <= 1.0
  colour = np.where(inside, 1.0 - r * (1.0 - colour), 0.75 * colour)
  colour[~finite] = 0.0
  return np.round(255.0 * colour).astype(np.uint8)


def write_flow_png(path: str, flow: np.ndarray, max_flow: Optional[float] = None) -> None:
  """Writes `flow_to_rgb(flow)` as a PNG (OpenCV, imported here: not a light-core import)."""
  import cv2  # pylint: disable=import-outside-toplevel
  if not cv2.imwrite(path, flow_to_rgb(flow, max_flow)[..., ::-1]):
    raise ValueError(f"cannot write PNG {path!r} (OpenCV refused the path or extension)")
