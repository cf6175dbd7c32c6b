"""Seed paper Section 3.2 model on the synthetic benchmark (no licensed data needed).

The paper's model - ResNet-50 + LSTM or BiLSTM over N = 11..17 frames, RGB
input with VGGFace2 pixel statistics - on `synthetic_me/default` at its native
112x112 frames. Sized for an accelerator (a ResNet-50 step on 16 x N frames is
slow on a CPU); `configs/synthetic_lstm.py` and `synthetic_bilstm.py` are the
CPU-sized versions of the same heads. Config string "HEAD,N":

  python -m mer_jax.main --config=configs/paper_s32_synthetic.py:bilstm,13 --workdir=DIR
"""

from configs import default
from configs import paper_s32_common


def get_config(config_string: str = "lstm,11"):
  config = paper_s32_common.apply_paper_model(default.get_config(), config_string)
  config.dataset.name = "synthetic_me"
  config.dataset.builder_config = "default"
  config.input.image_size = 112          # The renderer's size; no resampling.
  config.num_train_steps = 300
  config.learning_rate = 3e-4            # No pretrained weights here: the encoder trains fully.
  return config
