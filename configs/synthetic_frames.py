"""Ablation: frame-level training (seed paper Section 3.1), no temporal model.

The "frames" head classifies every frame on its own (per-frame logits, loss
averaged over valid frames); a clip's prediction averages the frames' class
probabilities. Everything else as configs/demo.py.
"""

from configs import demo


def get_config():
  config = demo.get_config()
  config.model.temporal_head = "frames"
  config.model.temporal_head_kwargs = {}
  return config
