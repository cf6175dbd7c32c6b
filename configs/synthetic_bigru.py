"""Ablation: temporal head "bigru": bidirectional GRU, clip feature = mean over valid frames.

Encoder, spatial pool, input and schedule come from configs/demo.py, so this
config differs from configs/synthetic_mean.py (frames only) in the temporal
head alone. Settings: docs/temporal_models.md, "Recommended settings".
"""

from configs import demo


def get_config():
  config = demo.get_config()
  config.model.temporal_head = "bigru"
  config.model.temporal_head_kwargs = {"hidden_size": 32, "num_layers": 1, "output": "mean"}
  return config
