"""Optical flow for micro-expressions: batched, jittable, differentiable TV-L1 and optical strain.

`tvl1_flow(frame0, frame1)` maps float frames `(..., H, W)` grey or
`(..., H, W, 3)` RGB in [0, 1] to `(..., H, W, 2)` displacements (u, v) in
pixels with `frame0[y, x] ~ frame1[y + v, x + u]`, with OpenCV
DualTVL1OpticalFlow's parameters and defaults; `optical_strain(flow)` gives
the strain magnitude; `mer_jax.flow.normalize` scales (u, v, strain) for a
network; `mer_jax.flow.cache.compute_or_load` computes and caches a dataset's
onset->apex / apex->offset features; `python -m mer_jax.flow` draws the flow of
two images or fills the cache. JAX and NumPy only at import time (OpenCV,
TensorFlow and TFDS are imported by the functions that need them). See
docs/optical_flow.md.
"""

from mer_jax.flow.normalize import fixed_range_normalize, minmax_normalize
from mer_jax.flow.strain import STRAIN_VARIANTS, flow_features, optical_strain
from mer_jax.flow.tvl1 import (
    RGB_TO_GREY,
    TVL1Params,
    check_frame_size,
    max_num_scales,
    median_filter,
    pyramid_shapes,
    to_grey,
    tvl1_flow,
)
from mer_jax.flow.visualize import colour_wheel, flow_to_rgb, write_flow_png

__all__ = [
    "RGB_TO_GREY", "STRAIN_VARIANTS", "TVL1Params", "check_frame_size", "colour_wheel",
    "fixed_range_normalize", "flow_features", "flow_to_rgb", "max_num_scales", "median_filter",
    "minmax_normalize", "optical_strain", "pyramid_shapes", "to_grey", "tvl1_flow",
    "write_flow_png",
]
