"""Seed paper Section 3.1, experiment III on synthetic_me: drop the encoder after
l_s = layer3 (no layer4); conv1 .. layer2 frozen; layer3 and the classifier train.

Shared settings: configs/paper_s31_common.py (four fixed LOSO folds s00..s03;
add --config.folds="()" for all 16):

  python -m mer_jax.main --config=configs/paper_s31_policy_III.py --workdir=/tmp/s31_III
"""

from configs import paper_s31_common


def get_config():
  return paper_s31_common.get_config("III")
