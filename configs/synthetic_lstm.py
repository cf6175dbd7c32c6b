"""Ablation: temporal head "lstm": LSTM (uni-directional), clip feature = state after the
last valid frame.

Encoder, spatial pool, input and schedule come from configs/demo.py, so this
config differs from configs/synthetic_mean.py (frames only) in the temporal
head alone. Settings: docs/temporal_models.md, "Recommended settings".
"""

from configs import demo


def get_config():
  config = demo.get_config()
  config.model.temporal_head = "lstm"
  config.model.temporal_head_kwargs = {"hidden_size": 32, "output": "last"}
  return config
