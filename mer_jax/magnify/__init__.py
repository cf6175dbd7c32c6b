"""Eulerian video magnification in JAX: a jittable, differentiable function and a Flax module.

`eulerian_magnify(frames, fps=..., low_hz=..., high_hz=..., alpha=...)` maps
float RGB frames `(..., T, H, W, 3)` in [0, 1] to the same shape;
`EulerianMagnification` wraps it as a Linen module (optionally learning
alpha); `python -m mer_jax.magnify in.mp4 out.mp4 --alpha 10 --low-hz 1
--high-hz 20` magnifies a video file or image folder. See
docs/magnification.md.
"""

from mer_jax.magnify.core import (
    DEFAULT_GAUSSIAN_LEVELS,
    METHODS,
    RGB_TO_YIQ,
    TEMPORAL_FILTERS,
    YIQ_TO_RGB,
    amplification_matrix,
    eulerian_magnify,
    resolve_levels,
    rgb_to_yiq,
    yiq_to_rgb,
)
from mer_jax.magnify.module import EulerianMagnification
from mer_jax.magnify.spatial import laplacian_level_gains, max_downsamplings

__all__ = [
    "DEFAULT_GAUSSIAN_LEVELS", "METHODS", "RGB_TO_YIQ", "TEMPORAL_FILTERS", "YIQ_TO_RGB",
    "EulerianMagnification", "amplification_matrix", "eulerian_magnify",
    "laplacian_level_gains", "max_downsamplings", "resolve_levels", "rgb_to_yiq", "yiq_to_rgb",
]
