r"""The default run and its variants: LOSO on the synthetic benchmark, switched by argument.

  python -m mer_jax.main --config=configs/default.py --workdir=DIR            # the demo
  python -m mer_jax.main --config=configs/default.py:head=bilstm --workdir=DIR
  python -m mer_jax.main --config=configs/default.py:pool=attention,tier=low_amplitude ...
  python -m mer_jax.main --config=configs/default.py:tiny --workdir=DIR       # seconds; tests

Arguments (comma-separated, big_vision style):
  tier      synthetic_me builder config: default | low_amplitude | dev | low_amplitude_dev |
            composite | composite_dev | tiny (the *dev tiers are where choices are made)
  input     frames (clips of N frames) | flow (onset->apex optical flow and strain maps,
            mer_jax.motion_input; encoder and pool then come from the motion model) |
            onset (the onset frame alone, RGB: carries no expression, so a model must stay
            at chance under LOSO; the no-label-leak check of docs/baselines.md)
  model     with input=flow: ststnet | off_apexnet | flow_linear | flow_resnet |
            off_apexnet_linear (min-max scaled flow) | off_apexnet_std (standardised flow) |
            off_apexnet_faint (the default: standardised, smoother TV-L1 flow; chosen on the
            dev twins, docs/baselines.md);
            with input=frames: small_cnn (the default) | pixel_linear (a linear classifier
            on grid-pooled difference images, docs/baselines.md)
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
TIERS = ("default", "low_amplitude", "dev", "low_amplitude_dev", "composite", "composite_dev",
         "tiny")
INPUTS = ("frames", "flow", "onset")
# input=frames,model=<name>: models on pixel clips.
FRAME_MODELS = {
    "small_cnn": dict(encoder="small_cnn", pool="grid", pool_kwargs={}),
    # Pixel-difference linear: the identity encoder, 8 x 8 grid cells of the 32 x 32 difference
    # images (frame minus onset), averaged over the N frames by head "mean", one Dense layer.
    # For sub-pixel motion a difference image is linear in the displacement times the
    # intensity, so this is apex - onset (scaled by the mean intensity) seen by a linear model.
    "pixel_linear": dict(encoder="identity", pool="grid", pool_kwargs={"grid_size": 8}),
}
# input=flow,model=<name>: the motion models of docs/motion_models.md (parts and head together).
FLOW_MODELS = {
    "ststnet": dict(encoder="ststnet", pool="flatten", pool_kwargs={}, classifier_hidden=()),
    "off_apexnet": dict(encoder="off_apexnet", pool="flatten", pool_kwargs={},
                        classifier_hidden=(1024, 1024)),
    "flow_linear": dict(encoder="identity", pool="grid", pool_kwargs={"grid_size": 7},
                        classifier_hidden=()),
    "flow_resnet": dict(encoder="flow_resnet", pool="grid", pool_kwargs={"grid_size": 4},
                        classifier_hidden=()),
    # OFF-ApexNet's two streams with a single Dense classifier, on onset->apex and
    # apex->offset flow (CausalNet's pair; 6 channels), min-max scaled. Chosen on
    # synthetic_me/dev (16 folds, seed 0, 300 steps): UF1 0.979; onset->apex only 0.964 (600
    # steps: 0.964), flow_resnet 0.958, ststnet 0.953. The demo model until off_apexnet_faint
    # beat it on the dev twins. Never chosen on synthetic_me/default's folds.
    "off_apexnet_linear": dict(encoder="off_apexnet", pool="flatten", pool_kwargs={},
                               classifier_hidden=(), apex_offset=True),
    # The same network on standardised flow: fixed scaling keeps each clip's magnitude, and
    # each input feature is z-scored with the fold's training statistics
    # (config.model.flow_standardize), as the classical baseline's StandardScaler does.
    # Seed 0 against off_apexnet_linear (min-max): low_amplitude_dev 0.927 vs 0.891, dev
    # 0.974 vs 0.979, composite_dev (24 folds) 0.603 vs 0.787: the choice for faint motion
    # of one recording setup, not for a mix of setups (docs/baselines.md).
    "off_apexnet_std": dict(encoder="off_apexnet", pool="flatten", pool_kwargs={},
                            classifier_hidden=(), apex_offset=True, normalize="fixed",
                            flow_standardize=True),
    # off_apexnet_std on a smoother TV-L1 flow (data weight lambda 0.02, OpenCV's 0.15):
    # at 0.25 px the default flow fits sensor noise. Probe on low_amplitude_dev (LOSO logistic
    # regression on 14 x 14 pooled u, v, strain; accuracy): Farneback 0.974, TV-L1 lambda 0.15
    # 0.839, 0.05 0.917, 0.02 0.927, 0.5 0.755. This model, seed 0: dev 0.995,
    # low_amplitude_dev 0.974, composite_dev (24 folds) 0.740; the best mean over the three dev
    # twins, so it is "ours" of docs/baselines.md and the demo model.
    "off_apexnet_faint": dict(encoder="off_apexnet", pool="flatten", pool_kwargs={},
                              classifier_hidden=(), apex_offset=True, normalize="fixed",
                              flow_standardize=True, tvl1={"lambda_": 0.02}),
}
DEFAULT_FLOW_MODEL = "off_apexnet_faint"


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
  arg = config_args.parse_arg(arg, tier="", input="frames", model="", encoder="", pool="",
                              head="mean", magnify=False, tiny=False)
  tier = arg.tier or ("tiny" if arg.tiny else "default")
  if tier not in TIERS:
    raise ValueError(f"config argument tier={tier!r} must be one of {TIERS}")
  if arg.input not in INPUTS:
    raise ValueError(f"config argument input={arg.input!r} must be one of {INPUTS}")
  flow = arg.input == "flow"
  models = FLOW_MODELS if flow else FRAME_MODELS
  if arg.input == "onset" and arg.model:
    raise ValueError(f"config argument model={arg.model!r}: input=onset takes no model "
                     "argument (the small CNN reads the onset frame)")
  if arg.model and arg.model not in models:
    raise ValueError(
        f"config argument model={arg.model!r}: with input={arg.input} the models are "
        f"{sorted(models)}" + ("" if flow else f"; the motion models {sorted(FLOW_MODELS)} "
                                                "need input=flow"))
  flow_model = models[arg.model or (DEFAULT_FLOW_MODEL if flow else "small_cnn")]
  encoder = arg.encoder or flow_model.get("encoder", "small_cnn")
  pool = arg.pool or flow_model.get("pool", "grid")
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
  # Grain (mer_jax.input_pipeline): decoding and augmentation in `num_workers` processes
  # (0: Grain's threads in the trainer's process), `num_threads` threads each (None: the
  # cores, at most 8); the fold's encoded records stay in memory after the first epoch.
  config.input.num_workers = 0
  config.input.num_threads = ml_collections.config_dict.placeholder(int)
  config.input.cache_records = True
  # "frames" (clips of N frames) or "flow" (onset->apex optical flow + strain maps,
  # mer_jax.motion_input; the model then needs input_mode="flow").
  config.input.representation = "frames"
  # Device-resident clips (mer_jax.resident_frames, used by the device loop below with frame
  # input): the most memory, MiB, a dataset's decoded, resized frames may take on each device.
  config.input.resident_max_mib = 1024.0

  # Optical flow (used when config.input.representation == "flow"): TV-L1 on the device
  # (mer_jax.flow), computed once per dataset version and setting, cached, reused.
  config.flow = ml_collections.ConfigDict()
  config.flow.size = 112                # Frames resized (short side) and cropped to this first.
  config.flow.strain = "softnet"        # Strain variant (mer_jax.flow.strain.STRAIN_VARIANTS).
  config.flow.apex_offset = False       # Also apex->offset flow (CausalNet): 6 channels.
  config.flow.normalize = "minmax"      # Per-sample min-max (the field's way) or "fixed".
  config.flow.tvl1 = ml_collections.ConfigDict()  # TV-L1 parameters; empty: OpenCV's defaults.
  config.flow.cache_dir = ml_collections.config_dict.placeholder(str)  # None: beside data_dir.
  config.flow.build_if_missing = True
  config.flow.batch_size = 16           # Clips per TV-L1 device call.

  # The model: parts from mer_jax.models.registry, each with its arguments.
  config.model = ml_collections.ConfigDict()
  set_part(config, "encoder", encoder)
  set_part(config, "spatial_pool", pool,
           **(flow_model.get("pool_kwargs", {}) if pool == flow_model.get("pool") else {}))
  set_part(config, "temporal_head", arg.head)
  # Difference images (frame minus the clip's first frame) carry the ~1 px motion; without
  # the RGB appearance the model cannot memorise subjects' faces.
  config.model.input_mode = "diff"
  config.model.pixel_stats = "centered"
  config.model.dropout_rate = 0.3
  # Hidden Dense widths before the classifier: () one Dense; two widths the seed paper's
  # {fc1, fc2, fc3} (Section 3.1); (1024, 1024) OFF-ApexNet's head.
  config.model.classifier_hidden = ()
  # Flow input: z-score each input feature with the fold's training statistics (a BatchNorm
  # without scale and bias; mer_jax.models.mer_model.MERModel).
  config.model.flow_standardize = False
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
  # Folds trained together as one program (mer_jax.fold_parallel; flow features or
  # device-resident frames, input.resident_max_mib): 1 one at a
  # time, k folds at once, -1 every fold. num_seeds: seeds config.seed.. trained beside them
  # (results.json adds per-seed figures, mean and std). fold_devices: devices on the fold
  # mesh axis (0: automatic; the rest split each fold's batch).
  config.parallel_folds = 1
  config.num_seeds = 1
  config.fold_devices = 0
  # True: the device-resident loop (lax.scan between checkpoints) even one fold at a time.
  config.device_loop = False
  # The device loop's steps between checkpoints: "scan" (one lax.scan), "dispatch" (a call
  # per step) or "auto" (scan on GPU/TPU; dispatch on CPU, where XLA's loops run slower).
  config.scan_steps = "auto"
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
  if arg.input == "onset":
    # One frame, the onset: "uniform" sampling of N = 1 over onset..offset takes the onset,
    # and without jitter never a later frame. RGB: a difference image of one frame is zero.
    config.input.num_frames = 1
    config.input.temporal_jitter = 0
    config.model.input_mode = "rgb"
  if flow:
    # Onset->apex flow (u, v, strain) at 28 x 28, as STSTNet and HTNet feed it.
    config.input.representation = "flow"
    config.model.input_mode = "flow"
    config.input.image_size = 28
    config.model.classifier_hidden = tuple(flow_model.get("classifier_hidden", ()))
    config.flow.apex_offset = flow_model.get("apex_offset", False)
    config.flow.normalize = flow_model.get("normalize", config.flow.normalize)
    config.model.flow_standardize = flow_model.get("flow_standardize", False)
    config.flow.tvl1 = ml_collections.ConfigDict(flow_model.get("tvl1", {}))
    # One checkpoint per fold: a motion model's fold trains in seconds, saves dominate.
    config.checkpoint_every_steps = config.num_train_steps
  if arg.tiny:
    # The small local variant (big_vision's "runlocal"): seconds per fold; the tests use it.
    if arg.input == "frames":
      config.input.num_frames = 6
      config.input.image_size = 32
    if arg.input == "flow":
      config.flow.size = 48  # The tiny records' frames are 64 px; TV-L1 at 112 px is 5x slower.
    if encoder == "small_cnn":
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
