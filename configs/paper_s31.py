r"""Seed paper Section 3.1: frame-level retraining with transfer policies I / II / III.

Bai (ICMI 2020), Section 3.1 retrains a VGGFace2 ResNet at frame level: every
frame of a clip is a training sample carrying the clip's label, and a clip is
classified by averaging its frames' class probabilities
(`temporal_head="frames"`). Figure 2's experiments:

  I    train the classifier only (the whole encoder frozen);
  II   freeze the encoder layers before the specific layer l_s, train the rest;
  III  drop the encoder layers after l_s, train l_s and the classifier.

Arguments: `policy` (I | II | III; default I) and `dataset` (synthetic | smic).

  python -m mer_jax.main --config=configs/paper_s31.py:policy=II --workdir=/tmp/s31_II
  python -m mer_jax.main --config=configs/paper_s31.py:policy=II,dataset=smic --workdir=DIR \
      --config.dataset.manual_dir=/data/SMIC \
      --config.transfer.pretrained_checkpoint=/ckpts/vggface2_r50

synthetic: a small ResNet-18 (base width 16) on 64x64 RGB frames of
synthetic_me, so one experiment runs in minutes on a 2-core CPU; random
initialisation unless a converted VGGFace2 checkpoint is given (a ResNet-50:
add `--config.model.encoder_kwargs.depth=50 --config.model.encoder_kwargs.base_width=64
--config.model.pixel_stats=vggface2 --config.input.image_size=224`). l_s is
fixed a priori to "layer3" (the second-to-last stage); pass
`--config.transfer.specific_layer=auto` to choose it per fold with Grad-CAM on
the fold's training subjects (`mer_jax.layer_selection`). Four fixed LOSO folds
(s00..s03, chosen before any result); `--config.folds="()"` runs all 16.

smic: the licensed SMIC-HS cropped release at short side 256
(`hs_cropped_256`), centre-cropped to 224x224 as VGGFace2 was trained, the
VGGFace2 ResNet-50, l_s chosen per fold (`specific_layer="auto"`, face-region
prior: SMIC has no motion mask). Without the checkpoint the encoder would start
from random weights, which is not this experiment.
"""

from configs import default
from mer_jax import config_args

POLICIES = ("I", "II", "III")
DATASETS = ("synthetic", "smic")
SPECIFIC_LAYER = "layer3"
FOLDS = ("s00", "s01", "s02", "s03")


def get_config(arg=None):
  """The Section 3.1 config for `policy` on `dataset`."""
  arg = config_args.parse_arg(arg, policy="I", dataset="synthetic")
  if arg.policy not in POLICIES:
    raise ValueError(f"configs/paper_s31.py: policy must be one of {POLICIES}, got "
                     f"{arg.policy!r}")
  if arg.dataset not in DATASETS:
    raise ValueError(f"configs/paper_s31.py: dataset must be one of {DATASETS}, got "
                     f"{arg.dataset!r}")
  config = default.get_config()
  config.input.num_frames = 11          # Frames per clip; each one is a training sample.
  config.input.flip = True
  config.input.temporal_jitter = 2
  default.set_part(config, "spatial_pool", "mean")
  default.set_part(config, "temporal_head", "frames")  # Clip = mean of frame probabilities.
  config.model.input_mode = "rgb"       # What a pretrained RGB encoder expects.
  config.model.magnify = None
  config.transfer.policy = arg.policy

  if arg.dataset == "synthetic":
    default.set_part(config, "encoder", "resnet", depth=18, base_width=16)
    config.input.image_size = 64
    config.model.pixel_stats = "centered"
    config.model.dropout_rate = 0.1
    config.transfer.specific_layer = SPECIFIC_LAYER if arg.policy in ("II", "III") else None
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

  config.dataset.name = "smic"
  config.dataset.builder_config = "hs_cropped_256"
  config.input.sampling = "uniform"     # The paper uses 11..17 frames per clip.
  config.input.resize_size = 256
  config.input.image_size = 224
  config.input.random_crop = False
  default.set_part(config, "encoder", "resnet50")
  config.model.pixel_stats = "vggface2"  # VGGFace2 mean subtraction, no scaling.
  config.model.dropout_rate = 0.5
  config.transfer.specific_layer = "auto" if arg.policy in ("II", "III") else None
  config.batch_size = 16
  config.eval_batch_size = 16
  config.num_train_steps = 300          # About 30 epochs of ~150 training clips per fold.
  config.learning_rate = 1e-4           # Fine-tuning pretrained layers.
  config.warmup_steps = 20
  config.weight_decay = 1e-4
  config.class_weighting = "balanced"   # SMIC-HS: 70 negative, 51 positive, 43 surprise.
  config.log_every_steps = 20
  config.checkpoint_every_steps = 100
  return config
