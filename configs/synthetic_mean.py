"""Ablation baseline, frames only: the demo model with mean pooling over frames.

No temporal model: per-frame features are averaged over the valid frames, so
frame order is ignored. Every other `synthetic_*` config differs from this one
in the temporal head or the spatial part only; encoder, input and schedule come
from configs/demo.py.

  python -m mer_jax.main --config=configs/synthetic_mean.py --workdir=/tmp/mer_mean
"""

from configs import demo


def get_config():
  config = demo.get_config()
  config.model.temporal_head = "mean"
  config.model.temporal_head_kwargs = {}
  return config
