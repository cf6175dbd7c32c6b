"""Model parts and the composed clip classifier.

`create_model(config.model)` builds a `MERModel` from parts registered by name
in `mer_jax.models.registry` (encoders, spatial pools, temporal heads).
"""

from mer_jax.models.mer_model import MERModel, create_model
from mer_jax.models.registry import available, build_part

__all__ = ["MERModel", "create_model", "available", "build_part"]
