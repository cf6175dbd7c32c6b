r"""Seed paper Section 3.2: VGGFace2 ResNet-50 + (Bi)LSTM over N un-cropped frames.

Bai (ICMI 2020), Section 3.2: a VGGFace2 ResNet-50 encodes every frame of an
un-cropped, un-aligned clip of N = 11..17 frames; a uni- or bi-directional LSTM
reads the sequence of pooled 2048-d features and classifies the clip.

Arguments: `dataset` (smic | casme2 | megc2019_composite | synthetic; default
smic, the paper's), `head` (lstm | bilstm) and `frames` (N, 11..17).

  python -m mer_jax.main --config=configs/paper_s32.py:dataset=smic,head=bilstm,frames=15 \
      --workdir=DIR --config.dataset.manual_dir=/data/MANUAL_DIR \
      --config.transfer.pretrained_checkpoint=/ckpts/vggface2_r50 \
      [--config.transfer.policy=II --config.transfer.specific_layer=layer4]
  python -m mer_jax.main --config=configs/paper_s32.py:dataset=synthetic,head=bilstm,frames=13 ...

The paper does not state the LSTM width, optimiser or schedule; the values
below are ours. Without `transfer.pretrained_checkpoint` the ResNet-50 trains
from random initialisation (runnable, but not the paper's setting); convert the
VGGFace2 weights with `python -m mer_jax.models.weights convert IN OUT`
(docs/resnet_gradcam.md). `synthetic` runs the same model on
`synthetic_me/default` at its native 112x112 frames: sized for an accelerator
(`configs/default.py:head=lstm` is the CPU-sized version of the same head).
"""

from configs import default
from mer_jax import config_args

HEADS = ("lstm", "bilstm")
PAPER_NUM_FRAMES = tuple(range(11, 18))  # N tested in the paper.
# Raw (un-cropped) releases at short side 256 px.
REAL_DATASETS = {"smic": "hs_raw_256", "casme2": "raw_256", "megc2019_composite": "raw_256"}


def get_config(arg=None):
  """The Section 3.2 config for `dataset`, `head` and `frames`."""
  arg = config_args.parse_arg(arg, dataset="smic", head="lstm", frames=11)
  if arg.head not in HEADS:
    raise ValueError(f"configs/paper_s32.py: head must be one of {HEADS}, got {arg.head!r}")
  if arg.frames not in PAPER_NUM_FRAMES:
    raise ValueError(f"configs/paper_s32.py: frames must be in {PAPER_NUM_FRAMES[0]}.."
                     f"{PAPER_NUM_FRAMES[-1]} (the paper's range), got {arg.frames}")
  if arg.dataset not in (*REAL_DATASETS, "synthetic"):
    raise ValueError(f"configs/paper_s32.py: dataset must be one of "
                     f"{(*REAL_DATASETS, 'synthetic')}, got {arg.dataset!r}")
  config = default.get_config()
  config.input.num_frames = arg.frames
  config.input.sampling = "uniform"      # N frames over onset..offset.
  config.input.short_clip = "repeat"
  default.set_part(config, "encoder", "resnet50")
  default.set_part(config, "spatial_pool", "mean")  # VGGFace2's global average pool: 2048-d.
  default.set_part(config, "temporal_head", arg.head, hidden_size=256, output="last")
  config.model.input_mode = "rgb"        # What the pretrained encoder saw.
  config.model.pixel_stats = "vggface2"
  config.model.dropout_rate = 0.5

  if arg.dataset == "synthetic":
    config.input.image_size = 112        # The renderer's size; no resampling.
    config.num_train_steps = 300
    config.learning_rate = 3e-4          # No pretrained weights here: the encoder trains fully.
    return config

  config.dataset.name = arg.dataset
  config.dataset.builder_config = REAL_DATASETS[arg.dataset]
  config.input.resize_size = 224         # Short side, then a centre crop.
  config.input.image_size = 224
  config.input.random_crop = False
  config.input.flip = True
  config.batch_size = 16
  config.eval_batch_size = 16
  config.num_train_steps = 600
  config.learning_rate = 1e-4            # Fine-tuning rate for a pretrained encoder.
  config.warmup_steps = 50
  config.weight_decay = 1e-4
  config.class_weighting = "balanced"    # SMIC / CASME II are imbalanced.
  config.half_precision = True           # bf16 compute on an accelerator.
  config.log_every_steps = 50
  config.checkpoint_every_steps = 200
  return config
