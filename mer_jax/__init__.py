"""mer_jax: facial micro-expression recognition in JAX/Flax.

The layout follows the data's path: `data_builders/` (TFDS builders) ->
`mer_jax.input_pipeline` -> `mer_jax.magnify` -> `mer_jax.models` ->
`mer_jax.train` / `mer_jax.evaluation` -> `mer_jax.gradcam`, `mer_jax.reports`
-> `benchmarks/`.
"""

__version__ = "0.1.0"
