"""Ablation: temporal head "tcn", a dilated causal TCN; clip feature = last valid frame.

Two levels of kernel 3 see 13 frames, at least the N sampled per clip (demo: 11 or fewer).

Encoder, spatial pool, input and schedule come from configs/demo.py, so this
config differs from configs/synthetic_mean.py (frames only) in the temporal
head alone. Settings: docs/temporal_models.md, "Recommended settings".
"""

from configs import demo


def get_config():
  config = demo.get_config()
  config.model.temporal_head = "tcn"
  config.model.temporal_head_kwargs = {
      "channels": (32, 32), "kernel_size": 3, "dropout_rate": 0.1, "output": "last"}
  return config
