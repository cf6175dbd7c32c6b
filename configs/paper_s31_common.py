"""Seed paper Section 3.1 on the synthetic benchmark: shared settings of experiments I/II/III.

Bai (ICMI 2020), Section 3.1 retrains a VGGFace2 ResNet at frame level: every
frame of a clip is a training sample carrying the clip's label, and a clip is
classified by averaging its frames' class probabilities
(`temporal_head="frames"`). Figure 2's experiments:

  I    train the classifier only (the whole encoder frozen);
  II   freeze the encoder layers before the specific layer l_s, train the rest;
  III  drop the encoder layers after l_s, train l_s and the classifier.

Here: a small ResNet-18 (base width 16) on 64x64 RGB frames of synthetic_me,
so one experiment runs in minutes on a 2-core CPU. It starts from random
initialisation unless a converted VGGFace2 checkpoint is given; such a
checkpoint is a ResNet-50 and needs matching settings:

  --config.transfer.pretrained_checkpoint=/ckpts/vggface2_r50 \
  --config.model.encoder_kwargs.depth=50 --config.model.encoder_kwargs.base_width=64 \
  --config.model.pixel_stats=vggface2 --config.input.image_size=224

l_s is fixed a priori to "layer3" (the second-to-last stage); pass
`--config.transfer.specific_layer=auto` to choose it per fold with Grad-CAM on
the fold's training subjects (`mer_jax.layer_selection`), where the trainer
supports it.
"""

from configs import default

SPECIFIC_LAYER = "layer3"
FOLDS = ("s00", "s01", "s02", "s03")


def get_config(policy: str = "I"):
  """The Section 3.1 config for `policy` ("I", "II" or "III")."""
  config = default.get_config()
  config.dataset.name = "synthetic_me"
  config.dataset.builder_config = "default"

  config.input.num_frames = 11          # Frames per clip; each one is a training sample.
  config.input.image_size = 64
  config.input.temporal_jitter = 2
  config.input.flip = True

  config.model.encoder = "resnet"
  config.model.encoder_kwargs = {"depth": 18, "base_width": 16}
  config.model.spatial_pool = "mean"
  config.model.spatial_pool_kwargs = {}
  config.model.temporal_head = "frames"  # Frame-level training; clip = mean of frame probs.
  config.model.temporal_head_kwargs = {}
  config.model.input_mode = "rgb"       # What a pretrained RGB encoder expects.
  config.model.pixel_stats = "centered"
  config.model.dropout_rate = 0.1
  config.model.magnify = None

  config.transfer.policy = policy
  config.transfer.specific_layer = SPECIFIC_LAYER if policy in ("II", "III") else None

  # A fixed subset of LOSO folds (chosen before any result) keeps a run to
  # minutes on a 2-core CPU; `--config.folds="()"` runs all 16 subjects.
  config.folds = FOLDS
  config.batch_size = 16                # Clips; x 11 frames = 176 frame samples per step.
  config.eval_batch_size = 16
  config.num_train_steps = 60
  config.warmup_steps = 10
  config.learning_rate = 2e-3
  config.weight_decay = 1e-4
  config.log_every_steps = 10
  config.checkpoint_every_steps = 30
  return config
