"""Seed paper Section 3.2 on the MEGC2019 composite (SMIC + CASME II + SAMM, 442 clips).

ResNet-50 (VGGFace2) + LSTM or BiLSTM over N = 11..17 un-cropped frames; see
configs/paper_s32_common.py. Config string "HEAD,N", e.g.

  python -m mer_jax.main --config=configs/paper_s32_megc2019_composite.py:bilstm,15 --workdir=DIR \
      --config.dataset.manual_dir=/data/MANUAL_DIR \
      --config.transfer.pretrained_checkpoint=/ckpts/vggface2_r50
"""

from configs import paper_s32_common


def get_config(config_string: str = "lstm,11"):
  return paper_s32_common.real_dataset_config("megc2019_composite", "raw_256", config_string)
