r"""Command line: LOSO training and evaluation of a config.

  python -m mer_jax.main --config=configs/demo.py --workdir=/tmp/mer_demo
  python -m mer_jax.main --config=configs/default.py --workdir=DIR \
      --config.num_train_steps=500 --config.step_mode=shard_map

Several hosts: run the same command on every host with
`--config.distributed.initialize=True` (plus coordinator address, process count
and id unless the cluster environment - Slurm, Kubernetes, Cloud TPU - provides
them).
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from mer_jax import logs

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed(config) -> None:
  """Joins a multi-process JAX cluster when config.distributed.initialize is set."""
  dist = config.distributed
  if not dist.initialize:
    return
  if dist.cpu_collectives:
    # CPU processes need explicit collectives to all-reduce across processes.
    jax.config.update("jax_cpu_collectives_implementation", dist.cpu_collectives)
  kwargs = {k: dist[k] for k in ("coordinator_address", "num_processes", "process_id")
            if dist[k] is not None}
  jax.distributed.initialize(**kwargs)
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  logs.quiet_library_logs()
  # Keep TensorFlow (used only for the input pipeline) off any accelerator.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.set_visible_devices([], "GPU")
  initialize_distributed(FLAGS.config)
  from mer_jax import train  # pylint: disable=import-outside-toplevel
  logging.info("JAX devices: %s", jax.devices())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run():
  """Console-script entry point (`mer-jax-train`)."""
  app.run(main)


if __name__ == "__main__":
  run()
