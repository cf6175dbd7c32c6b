"""Synthetic long videos for spotting (`synthetic_me_long`) as a TFDS dataset.

`import data_builders.synthetic_me_long` registers the builder. Its records
follow the long-video schema (`mer_jax.spotting.schema`), not the clip schema.
"""

from data_builders.synthetic_me_long.synthetic_me_long_dataset_builder import Builder
from data_builders.synthetic_me_long.synthetic_me_long_dataset_builder import SyntheticMeLongConfig

__all__ = ["Builder", "SyntheticMeLongConfig"]
