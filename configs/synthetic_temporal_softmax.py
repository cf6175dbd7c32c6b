"""Ablation: temporal head "temporal_softmax": temporal softmax pooling (a smooth max over
frames of per-frame scores).

Encoder, spatial pool, input and schedule come from configs/demo.py, so this
config differs from configs/synthetic_mean.py (frames only) in the temporal
head alone. Settings: docs/temporal_models.md, "Recommended settings".
"""

from configs import demo


def get_config():
  config = demo.get_config()
  config.model.temporal_head = "temporal_softmax"
  config.model.temporal_head_kwargs = {"num_scores": 3}
  return config
