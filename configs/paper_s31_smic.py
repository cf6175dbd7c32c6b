r"""Seed paper Section 3.1 on SMIC-HS: VGGFace2 ResNet-50, frame level, l_s by Grad-CAM.

Needs the licensed SMIC release (manual dir) and the VGGFace2 ResNet-50
weights converted once with `python -m mer_jax.models.weights convert
resnet50_ft_weight.pkl /ckpts/vggface2_r50`. The policy is the argument after
the colon ("I", "II" or "III"; default "II"):

  python -m mer_jax.main --config=configs/paper_s31_smic.py:II --workdir=/runs/s31_smic_II \
      --config.dataset.manual_dir=/data/SMIC \
      --config.transfer.pretrained_checkpoint=/ckpts/vggface2_r50

Without the checkpoint the encoder would start from random weights, which is
not this experiment. Frames: the SMIC cropped release at short side 256
(builder config `hs_cropped_256`), centre-cropped to 224x224 as VGGFace2 was
trained (short side 256, 224 crop); `hs_cropped_128` would be upsampled.
l_s is chosen per fold on the fold's training subjects (`specific_layer="auto"`,
`mer_jax.layer_selection`, face-region prior: SMIC has no motion mask).
"""

import ml_collections

from configs import default


def get_config(policy: str = "II"):
  """The Section 3.1 SMIC config for `policy` ("I", "II" or "III")."""
  if policy not in ("I", "II", "III"):
    raise ValueError(f"configs/paper_s31_smic.py:<policy> must be I, II or III, got {policy!r}")
  config = default.get_config()
  config.dataset.name = "smic"
  config.dataset.builder_config = "hs_cropped_256"

  config.input.num_frames = 11          # The paper uses 11..17 frames per clip.
  config.input.sampling = "uniform"
  config.input.resize_size = 256
  config.input.image_size = 224
  config.input.random_crop = False
  config.input.flip = True
  config.input.temporal_jitter = 2

  config.model.encoder = "resnet50"
  config.model.encoder_kwargs = {}
  config.model.spatial_pool = "mean"
  config.model.spatial_pool_kwargs = {}
  config.model.temporal_head = "frames"  # Frame-level training; clip = mean of frame probs.
  config.model.temporal_head_kwargs = {}
  config.model.input_mode = "rgb"
  config.model.pixel_stats = "vggface2"  # VGGFace2 mean subtraction, no scaling.
  config.model.dropout_rate = 0.5
  config.model.magnify = None

  config.transfer.policy = policy
  config.transfer.specific_layer = "auto" if policy in ("II", "III") else None
  # A .npy (H, W) {0, 1} mask in the 224x224 input frame overrides the face prior.
  config.transfer.region_mask_path = ml_collections.config_dict.placeholder(str)

  config.batch_size = 16
  config.eval_batch_size = 16
  config.num_train_steps = 300          # About 30 epochs of ~150 training clips per fold.
  config.optimizer = "adamw"
  config.learning_rate = 1e-4           # Fine-tuning pretrained layers.
  config.warmup_steps = 20
  config.weight_decay = 1e-4
  config.class_weighting = "balanced"   # SMIC-HS: 70 negative, 51 positive, 43 surprise.
  config.log_every_steps = 20
  config.checkpoint_every_steps = 100
  return config
