"""Default: small CNN on difference images + temporal mean, LOSO on the synthetic benchmark.

Every other config imports this one and overrides what differs. The model and
schedule were chosen on the `synthetic_me/dev` dataset (same recipe, other
subjects), never on the LOSO test folds of `synthetic_me/default`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # Which records to read (any builder emitting mer_jax.schema).
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "synthetic_me"
  config.dataset.builder_config = "default"
  config.dataset.split = "train"
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)  # None: TFDS default.
  config.dataset.manual_dir = ml_collections.config_dict.placeholder(str)  # Real datasets only.
  config.dataset.build_if_missing = True

  # Clip sampling and augmentation (mer_jax.input_pipeline).
  config.input = ml_collections.ConfigDict()
  config.input.num_frames = 8           # N; the seed paper uses 11..17 (configs/paper_s32_*).
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

  # The model: parts from mer_jax.models.registry.
  config.model = ml_collections.ConfigDict()
  config.model.encoder = "small_cnn"
  config.model.encoder_kwargs = ml_collections.ConfigDict({"widths": (16, 32)})
  # Where a motion happens (brows vs mouth corners) separates the classes: a coarse grid
  # keeps it with few weights (global averaging discards it, flattening overfits).
  config.model.spatial_pool = "grid"
  config.model.spatial_pool_kwargs = ml_collections.ConfigDict({"grid_size": 4})
  config.model.temporal_head = "mean"
  config.model.temporal_head_kwargs = ml_collections.ConfigDict()
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

  config.distributed = ml_collections.ConfigDict()
  config.distributed.initialize = False
  config.distributed.coordinator_address = ml_collections.config_dict.placeholder(str)
  config.distributed.num_processes = ml_collections.config_dict.placeholder(int)
  config.distributed.process_id = ml_collections.config_dict.placeholder(int)
  config.distributed.cpu_collectives = ml_collections.config_dict.placeholder(str)  # "gloo" on CPU.
  return config
