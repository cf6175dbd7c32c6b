"""Shared settings of the seed paper's Section 3.2 configs (not a config itself).

Bai (ICMI 2020), Section 3.2: a VGGFace2 ResNet-50 encodes every frame of an
un-cropped, un-aligned clip of N = 11..17 frames; a uni- or bi-directional LSTM
reads the sequence of pooled 2048-d features and classifies the clip. The
configs `paper_s32_<dataset>.py` take the head and N as the config string:

  python -m mer_jax.main --config=configs/paper_s32_smic.py:bilstm,15 --workdir=DIR \
      --config.dataset.manual_dir=/data/SMIC \
      --config.transfer.pretrained_checkpoint=/ckpts/vggface2_r50 \
      --config.transfer.policy=II --config.transfer.specific_layer=layer4

The paper does not state the LSTM width, optimiser or schedule; the values
below are ours. Without `transfer.pretrained_checkpoint` the ResNet-50 trains
from random initialisation (runnable, but not the paper's setting); convert the
VGGFace2 weights with `python -m mer_jax.models.weights convert IN OUT`
(docs/resnet_gradcam.md).
"""

import ml_collections

from configs import default

HEADS = ("lstm", "bilstm")
PAPER_NUM_FRAMES = tuple(range(11, 18))  # N tested in the paper.


def parse_config_string(config_string: str) -> tuple[str, int]:
  """"HEAD" or "HEAD,N" (e.g. "bilstm,15") -> (head, N); N defaults to 11."""
  parts = [p.strip() for p in (config_string or "lstm").split(",")]
  if len(parts) > 2 or parts[0] not in HEADS:
    raise ValueError(f"config string must be 'HEAD' or 'HEAD,N' with HEAD in {HEADS} and N in "
                     f"{PAPER_NUM_FRAMES[0]}..{PAPER_NUM_FRAMES[-1]}, got {config_string!r}")
  num_frames = 11
  if len(parts) == 2:
    try:
      num_frames = int(parts[1])
    except ValueError:
      num_frames = -1
    if num_frames not in PAPER_NUM_FRAMES:
      raise ValueError(f"config string {config_string!r}: N must be an integer in "
                       f"{PAPER_NUM_FRAMES[0]}..{PAPER_NUM_FRAMES[-1]} (the paper's range)")
  return parts[0], num_frames


def apply_paper_model(config: ml_collections.ConfigDict, config_string: str
                      ) -> ml_collections.ConfigDict:
  """Sets the ResNet-50 + (Bi)LSTM model and the N-frame clip sampling in place."""
  head, num_frames = parse_config_string(config_string)
  config.input.num_frames = num_frames
  config.input.sampling = "uniform"      # N frames over onset..offset.
  config.input.short_clip = "repeat"
  config.model.encoder = "resnet50"
  config.model.encoder_kwargs = {}
  config.model.spatial_pool = "mean"     # VGGFace2's global average pool: 2048-d per frame.
  config.model.spatial_pool_kwargs = {}
  config.model.temporal_head = head
  config.model.temporal_head_kwargs = {"hidden_size": 256, "output": "last"}
  config.model.input_mode = "rgb"        # What the pretrained encoder saw.
  config.model.pixel_stats = "vggface2"
  config.model.dropout_rate = 0.5
  return config


def real_dataset_config(dataset: str, builder_config: str, config_string: str
                        ) -> ml_collections.ConfigDict:
  """Section 3.2 on a licensed dataset: raw (un-cropped) frames, 224x224 input."""
  config = apply_paper_model(default.get_config(), config_string)
  config.dataset.name = dataset
  config.dataset.builder_config = builder_config  # Raw release, short side 256 px.
  config.input.resize_size = 224                  # Short side, then a centre crop.
  config.input.image_size = 224
  config.input.random_crop = False
  config.input.flip = True
  config.batch_size = 16
  config.eval_batch_size = 16
  config.num_train_steps = 600
  config.learning_rate = 1e-4                     # Fine-tuning rate for a pretrained encoder.
  config.warmup_steps = 50
  config.weight_decay = 1e-4
  config.class_weighting = "balanced"             # SMIC / CASME II are imbalanced.
  config.half_precision = True                    # bf16 compute on an accelerator.
  config.log_every_steps = 50
  config.checkpoint_every_steps = 200
  return config
