"""Ablation: spatial attention on, with the LSTM head of configs/synthetic_lstm.py.

Compare with configs/synthetic_lstm.py (attention off): the pair shows whether
spatial attention helps once a temporal model is present.
"""

from configs import synthetic_lstm


def get_config():
  config = synthetic_lstm.get_config()
  config.model.spatial_pool = "attention"
  config.model.spatial_pool_kwargs = {"hidden": 0}
  return config
