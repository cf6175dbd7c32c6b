r"""Builds a mer_jax dataset: `python -m data_builders.build NAME/CONFIG [options]`.

  python -m data_builders.build synthetic_me/default
  python -m data_builders.build casme2/cropped_128 --manual_dir=/data/casme2
  python -m data_builders.build megc2019_composite/cropped_128 --manual_dir=/data/megc2019 \
      --skip_unreadable

Records are ArrayRecord files (`mer_jax.schema.RECORD_FORMAT`), read by index
without TensorFlow; building them still needs TensorFlow where TFDS does. The
same as `tfds build data_builders/NAME --config=CONFIG --manual_dir=...
--file_format=array_record`, whose command line in tensorflow-datasets 4.9.10
needs apache_beam installed.
Prints the build summary (counts per class and subject, repairs, skipped IDs).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

BUILDERS = ("synthetic_me", "casme2", "samm", "smic", "megc2019_composite", "casme3",
            "synthetic_me_long", "casme_sq", "samm_long")


def build(name_and_config: str, *, manual_dir: str | None = None, data_dir: str | None = None,
          skip_unreadable: bool | None = None):
  """Builds `NAME/CONFIG` and returns the prepared TFDS builder."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  name, _, config = name_and_config.partition("/")
  if name not in BUILDERS:
    raise ValueError(f"unknown dataset {name!r}; mer_jax builders are {list(BUILDERS)}")
  importlib.import_module(f"data_builders.{name}")  # Registers the builder with TFDS.
  builder_class = tfds.builder_cls(name)
  configs = [c.name for c in builder_class.BUILDER_CONFIGS]
  if config and config not in configs:
    raise ValueError(f"dataset {name!r} has no config {config!r}; configs: {configs}")
  kwargs = {"config": config or None, "data_dir": data_dir}
  if skip_unreadable is not None:
    kwargs["skip_unreadable"] = skip_unreadable
  builder = builder_class(**kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("dataset", help="NAME/CONFIG, e.g. casme2/cropped_128")
  parser.add_argument("--manual_dir", default=None, help="where the licensed download lies")
  parser.add_argument("--data_dir", default=None, help="where records go (TFDS default if unset)")
  parser.add_argument("--skip_unreadable", action="store_true", default=None,
                      help="skip (and record) samples that cannot be repaired instead of failing")
  args = parser.parse_args(argv)
  builder = build(args.dataset, manual_dir=args.manual_dir, data_dir=args.data_dir,
                  skip_unreadable=args.skip_unreadable)
  print(f"built {builder.info.full_name} in {builder.data_dir}: "
        f"{builder.info.splits['train'].num_examples} examples")
  metadata = dict(builder.info.metadata or {})
  if metadata:
    print(json.dumps(metadata, indent=1, sort_keys=True, default=str))
  return 0


if __name__ == "__main__":
  sys.exit(main())
