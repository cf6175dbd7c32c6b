"""Imports every built-in model part so that it registers itself by name.

Add one import line here for each new part module.
"""

# pylint: disable=unused-import
from mer_jax.models import pooling  # noqa: F401  mean pools, per-frame head
from mer_jax.models import small_cnn  # noqa: F401  small_cnn encoder
