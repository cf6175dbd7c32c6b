r"""Command line: LOSO training and evaluation of a config.

  python -m mer_jax.main --config=configs/default.py --workdir=/tmp/mer_demo
  python -m mer_jax.main --config=configs/default.py:head=bilstm --workdir=DIR \
      --config.num_train_steps=500 --config.step_mode=shard_map

Run from the repository root: config files are files of the repository and
import each other as `configs.<name>` (as in the Flax examples).

Several hosts: run the same command on every host with
`--config.distributed.initialize=True` (plus coordinator address, process count
and id unless the cluster environment - Slurm, Kubernetes, Cloud TPU - provides
them).
"""

import difflib
import sys

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


def _known_fields(argv) -> list[str]:
  """Dotted field names of the config named by `--config=` in `argv` (for suggestions)."""
  from mer_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None:
    return []
  try:
    config = config_flags.config_flags._LoadConfigModule(  # pylint: disable=protected-access
        "config", spec.partition(":")[0])
    get_config = config.get_config
    value = get_config(spec.partition(":")[2]) if ":" in spec else get_config()
    return sorted(workdir_lib.flat_fields(value.to_dict()))
  except Exception:  # pylint: disable=broad-except  (suggestions only)
    return []


def parse_flags(argv):
  """absl flag parsing, with unknown `--config.<field>` overrides named instead of a traceback."""
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError) as e:
    overrides = [a[len("--config."):].split("=", 1)[0] for a in argv[1:]
                 if a.startswith("--config.")]
    known = _known_fields(argv[1:])
    unknown = [o for o in overrides if known and o not in known] or overrides
    lines = []
    for field in unknown:
      close = difflib.get_close_matches(field, known, n=3)
      lines.append(f"--config.{field}: the config has no such field" +
                   (f" (closest: {', '.join(close)})" if close else ""))
    print("error: " + ("; ".join(lines) if lines else str(e)), file=sys.stderr)
    sys.exit(2)


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
  initialize_distributed(FLAGS.config)
  from mer_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from mer_jax import train  # pylint: disable=import-outside-toplevel
  logging.info("JAX devices: %s", jax.devices())
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (ValueError, checkpoints.CheckpointError, train.NonFiniteLossError) as e:
    # A mistake in the config, the data or the workdir: its message says what to do.
    logging.error("%s: %s", type(e).__name__, e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run():
  """Console-script entry point (`mer-jax-train`)."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
