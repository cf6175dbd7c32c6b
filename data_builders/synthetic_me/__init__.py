"""The synthetic micro-expression benchmark (`synthetic_me`) as a TFDS dataset.

`import data_builders.synthetic_me` registers the builder; see
`docs/synthetic_me.md` and `mer_jax.synthetic` for what it renders.
"""

from data_builders.synthetic_me.synthetic_me_dataset_builder import Builder
from data_builders.synthetic_me.synthetic_me_dataset_builder import SyntheticMeConfig

__all__ = ["Builder", "SyntheticMeConfig"]
