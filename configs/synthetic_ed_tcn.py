"""Ablation: temporal head "ed_tcn": encoder-decoder TCN (Lea et al. 2016), mean over valid frames.

Encoder, spatial pool, input and schedule come from configs/demo.py, so this
config differs from configs/synthetic_mean.py (frames only) in the temporal
head alone. Settings: docs/temporal_models.md, "Recommended settings".
"""

from configs import demo


def get_config():
  config = demo.get_config()
  config.model.temporal_head = "ed_tcn"
  config.model.temporal_head_kwargs = {
      "channels": (32, 48), "kernel_size": 3, "dropout_rate": 0.1, "output": "mean"}
  return config
