"""Ablation: spatial attention on (frames only otherwise).

Replaces the demo's spatial pool by the learned attention pool (a 1x1 conv
scores each position of the encoder's feature map, softmax over positions).
Compare with configs/synthetic_mean.py, which keeps configs/demo.py's spatial
pool ("off"); the temporal head is the same frame mean in both.
"""

from configs import demo


def get_config():
  config = demo.get_config()
  config.model.spatial_pool = "attention"
  config.model.spatial_pool_kwargs = {"hidden": 0}
  config.model.temporal_head = "mean"
  config.model.temporal_head_kwargs = {}
  return config
