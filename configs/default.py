r"""The default run and its variants: LOSO on the synthetic benchmark, switched by argument.

  python -m mer_jax.main --config=configs/default.py --workdir=DIR            # the demo
  python -m mer_jax.main --config=configs/default.py:head=bilstm --workdir=DIR
  python -m mer_jax.main --config=configs/default.py:pool=attention,tier=low_amplitude ...
  python -m mer_jax.main --config=configs/default.py:tiny --workdir=DIR       # seconds; tests

Arguments (comma-separated, big_vision style):
  tier      synthetic_me builder config: default | low_amplitude | dev | tiny
  encoder   encoder part (mer_jax.models.registry), e.g. small_cnn, resnet18
  pool      spatial pool: grid | mean | max | flatten | attention
  head      temporal head: mean | frames | lstm | gru | bilstm | bigru | tcn | ed_tcn |
            temporal_softmax | rnn
  magnify   Eulerian magnification inside the model (boolean)
  tiny      the small local variant: the `tiny` tier, 6 frames, 6 steps (boolean)

Naming a part sets its arguments too: the Flax field defaults written on the
part's class, updated by the settings below (docs/temporal_models.md,
"Recommended settings"), so a part and its arguments always change together.
Every field stays settable from the command line, e.g.
`--config.model.temporal_head_kwargs.hidden_size=64`.

The default model and schedule were chosen on `synthetic_me/dev` (same recipe,
other subjects), never on the LOSO test folds of `synthetic_me/default`.
"""

import ml_collections

from mer_jax import config_args
from mer_jax.models import registry

# Settings that differ from a part's own defaults, for small CPU runs.
PART_SETTINGS = {
    "encoder": {"small_cnn": {"widths": (16, 32)}},
    # Where a motion happens (brows vs mouth corners) separates the classes: a coarse grid
    # keeps it with few weights (global averaging discards it, flattening overfits).
    "spatial_pool": {"grid": {"grid_size": 4}, "attention": {"hidden": 0}},
    "temporal_head": {
        "lstm": {"hidden_size": 32, "output": "last"},
        "gru": {"hidden_size": 32, "output": "last"},
        "bilstm": {"hidden_size": 32, "num_layers": 1, "output": "mean"},
        "bigru": {"hidden_size": 32, "num_layers": 1, "output": "mean"},
        # Two levels of kernel 3 see 13 frames, at least the N sampled per clip.
        "tcn": {"channels": (32, 32), "kernel_size": 3, "dropout_rate": 0.1, "output": "last"},
        "ed_tcn": {"channels": (32, 48), "kernel_size": 3, "dropout_rate": 0.1, "output": "mean"},
        "temporal_softmax": {"num_scores": 3},
    },
}
TIERS = ("default", "low_amplitude", "dev", "tiny")


def part_kwargs(kind: str, name: str, **overrides) -> ml_collections.ConfigDict:
  """Every argument of part `name`: its Flax defaults, the settings above, `overrides`."""
  kwargs = {**registry.part_defaults(kind, name), **PART_SETTINGS.get(kind, {}).get(name, {}),
            **overrides}
  return ml_collections.ConfigDict(kwargs)


def set_part(config: ml_collections.ConfigDict, kind: str, name: str, **overrides) -> None:
  """Names part `kind` of `config.model` and sets its arguments to match."""
  config.model[kind] = name
  config.model[f"{kind}_kwargs"] = part_kwargs(kind, name, **overrides)


def magnify_config(num_frames: int) -> ml_collections.ConfigDict:
  """Eulerian magnification on the sampled clip (`mer_jax.magnify.EulerianMagnification`).

  The input pipeline samples N frames evenly over onset..offset, so the filter
  sees "clip time": one clip is treated as one second (fps = N) and the pass
  band keeps 0.5 Hz up to just below Nyquist, every change slower than a
  frame-to-frame flicker but not the static face.
  """
  fps = float(num_frames)
  return ml_collections.ConfigDict({
      "fps": fps, "low_hz": 0.5, "high_hz": 0.45 * fps, "alpha": 8.0,
      "method": "gaussian", "temporal_filter": "ideal"})


def get_config(arg=None) -> ml_collections.ConfigDict:
  """The run described in the module docstring, for config argument `arg`."""
  arg = config_args.parse_arg(arg, tier="", encoder="small_cnn", pool="grid", head="mean",
                              magnify=False, tiny=False)
  tier = arg.tier or ("tiny" if arg.tiny else "default")
  if tier not in TIERS:
    raise ValueError(f"config argument tier={tier!r} must be one of {TIERS}")
  config = ml_collections.ConfigDict()

  # Which records to read (any builder emitting mer_jax.schema).
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "synthetic_me"
  config.dataset.builder_config = tier
  config.dataset.split = "train"
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)  # None: TFDS default.
  config.dataset.manual_dir = ml_collections.config_dict.placeholder(str)  # Real datasets only.
  config.dataset.build_if_missing = True

  # Clip sampling and augmentation (mer_jax.input_pipeline).
  config.input = ml_collections.ConfigDict()
  config.input.num_frames = 8           # N; the seed paper uses 11..17 (configs/paper_s32.py).
  config.input.sampling = "uniform"     # "uniform" over onset..offset, or "apex"-centred window.
  config.input.short_clip = "repeat"    # Clips shorter than N: "repeat", "pad" (masked) or "error".
  config.input.temporal_jitter = 1      # Frames of random onset/offset shift while training.
  # Square side fed to the model, pixels. Area-downsampling 112 -> 32 keeps sub-pixel motion
  # as intensity change and smooths sensor noise; the small CNN generalised better there.
  config.input.image_size = 32
  config.input.resize_size = ml_collections.config_dict.placeholder(int)  # Short side before crop.
  config.input.random_crop = False
  config.input.flip = True
  config.input.shuffle_buffer = 1024

  # The model: parts from mer_jax.models.registry, each with its arguments.
  config.model = ml_collections.ConfigDict()
  set_part(config, "encoder", arg.encoder)
  set_part(config, "spatial_pool", arg.pool)
  set_part(config, "temporal_head", arg.head)
  # Difference images (frame minus the clip's first frame) carry the ~1 px motion; without
  # the RGB appearance the model cannot memorise subjects' faces.
  config.model.input_mode = "diff"
  config.model.pixel_stats = "centered"
  config.model.dropout_rate = 0.3
  config.model.magnify = ml_collections.config_dict.placeholder(ml_collections.ConfigDict)

  # Optional transfer learning (seed paper Figure 2 policies; mer_jax.transfer).
  config.transfer = ml_collections.ConfigDict()
  config.transfer.policy = ml_collections.config_dict.placeholder(str)
  config.transfer.specific_layer = ml_collections.config_dict.placeholder(str)
  config.transfer.pretrained_checkpoint = ml_collections.config_dict.placeholder(str)
  # Region prior for specific_layer="auto" on data without motion_mask (.npy, H x W).
  config.transfer.region_mask_path = ml_collections.config_dict.placeholder(str)

  # LOSO protocol. Nothing is ever selected on the test subject.
  config.folds = ml_collections.config_dict.placeholder(tuple)  # None: every subject.
  config.num_validation_subjects = 0
  config.model_selection = "last"       # "last" (fixed schedule) or "validation".

  # Optimisation.
  config.seed = 0
  config.batch_size = 16                # Global, over all devices and hosts.
  config.eval_batch_size = 16
  config.num_train_steps = 300          # Per fold.
  config.optimizer = "adamw"
  config.learning_rate = 5e-3
  config.warmup_steps = 20
  config.weight_decay = 1e-3
  config.grad_clip_norm = 1.0
  config.label_smoothing = 0.0
  config.class_weighting = "none"       # "balanced": inverse class frequency of training subjects.
  config.half_precision = False         # bf16 compute, float32 parameters.

  # Execution.
  config.step_mode = "pmap"             # "pmap" or "shard_map" (same per-device step).
  config.log_every_steps = 50
  config.checkpoint_every_steps = 100
  # A workdir holding a run of another identity: "refuse", or "move_aside" to superseded/.
  config.resume_mismatch = "refuse"

  config.distributed = ml_collections.ConfigDict()
  config.distributed.initialize = False
  config.distributed.coordinator_address = ml_collections.config_dict.placeholder(str)
  config.distributed.num_processes = ml_collections.config_dict.placeholder(int)
  config.distributed.process_id = ml_collections.config_dict.placeholder(int)
  config.distributed.cpu_collectives = ml_collections.config_dict.placeholder(str)  # "gloo" on CPU.

  if arg.magnify:
    config.model.magnify = magnify_config(config.input.num_frames)
  if arg.tiny:
    # The small local variant (big_vision's "runlocal"): seconds per fold; the tests use it.
    config.input.num_frames = 6
    config.input.image_size = 32
    if arg.encoder == "small_cnn":
      config.model.encoder_kwargs.widths = (8, 16)
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 6
    config.warmup_steps = 2
    config.log_every_steps = 2
    config.checkpoint_every_steps = 3
    if arg.magnify:
      config.model.magnify = magnify_config(config.input.num_frames)
  return config
