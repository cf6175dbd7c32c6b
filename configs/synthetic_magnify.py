"""Ablation: Eulerian magnification on (frames only otherwise).

`mer_jax.magnify.EulerianMagnification` runs inside the model on the sampled
frames, before normalisation and the difference images. The input pipeline
samples `N` frames evenly over onset..offset, so the temporal axis the filter
sees is "clip time", not the camera's: one sampled clip is treated as one
second (`fps = N`), and the pass band keeps 0.5 Hz up to just below Nyquist,
i.e. every change slower than a frame-to-frame flicker but not the static face
(the expression's rise and fall is about one cycle per clip). Compare with
configs/synthetic_mean.py (magnification off).
"""

import ml_collections

from configs import demo


def get_config():
  config = demo.get_config()
  config.model.temporal_head = "mean"
  config.model.temporal_head_kwargs = {}
  fps = float(config.input.num_frames)
  config.model.magnify = ml_collections.ConfigDict({
      "fps": fps, "low_hz": 0.5, "high_hz": 0.45 * fps, "alpha": 8.0,
      "method": "gaussian", "temporal_filter": "ideal"})
  return config
