"""Seed paper Section 3.1, experiment I on synthetic_me: train the classifier only;
the whole encoder is frozen (its BatchNorm statistics too).

Shared settings: configs/paper_s31_common.py (four fixed LOSO folds s00..s03;
add --config.folds="()" for all 16):

  python -m mer_jax.main --config=configs/paper_s31_policy_I.py --workdir=/tmp/s31_I
"""

from configs import paper_s31_common


def get_config():
  return paper_s31_common.get_config("I")
