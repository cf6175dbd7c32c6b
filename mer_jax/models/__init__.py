"""Model parts and the composed clip classifier (the light core: jax, flax, numpy).

`create_model(config.model)` builds a `MERModel` from parts named in
`mer_jax.models.registry` (encoders, spatial pools, temporal heads).
"""

from mer_jax.models.mer_model import MERModel, check_model_config, create_model
from mer_jax.models.registry import available, build_part, part_defaults, register

__all__ = ["MERModel", "check_model_config", "create_model", "available", "build_part",
           "part_defaults", "register"]
