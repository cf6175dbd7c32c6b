"""Tiny: the synthetic `tiny` config, seconds per fold; used by the tests."""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.builder_config = "tiny"
  config.input.num_frames = 6
  config.input.image_size = 32
  config.model.encoder_kwargs.widths = (8, 16)
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 6
  config.warmup_steps = 2
  config.log_every_steps = 2
  config.checkpoint_every_steps = 3
  return config
