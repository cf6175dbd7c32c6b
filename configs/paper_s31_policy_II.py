"""Seed paper Section 3.1, experiment II on synthetic_me: freeze the encoder before
l_s = layer3 (conv1 .. layer2); train layer3, layer4 and the classifier.

Shared settings: configs/paper_s31_common.py (four fixed LOSO folds s00..s03;
add --config.folds="()" for all 16):

  python -m mer_jax.main --config=configs/paper_s31_policy_II.py --workdir=/tmp/s31_II
"""

from configs import paper_s31_common


def get_config():
  return paper_s31_common.get_config("II")
