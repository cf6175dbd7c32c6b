"""Micro- and macro-expression spotting in long videos.

* `mer_jax.spotting.metrics`: MEGC spotting precision / recall / F1 (IoU >= 0.5,
  pooled over videos, per expression type and overall) and spot-then-recognise
  scores (recognition UF1 / UAR on the spotted intervals, STRS). NumPy only.
* `mer_jax.spotting.schema`: the long-video record schema written by the
  `synthetic_me_long`, `casme_sq` (CAS(ME)^2) and `samm_long` builders.
* `mer_jax.spotting.features`: per-frame motion maps (TV-L1 flow k frames
  apart) and onset->apex recognition maps. JAX and NumPy.
* `mer_jax.spotting.model`: the per-frame spotter and the interval recogniser
  (Flax), windowed scoring of long videos.
* `mer_jax.spotting.peaks`: per-frame probabilities -> intervals (smoothing,
  threshold with hysteresis, non-maximum suppression). NumPy only.
* `mer_jax.spotting.data`: synthetic long videos with their features, cached.
* `mer_jax.spotting.train`: LOSO training and evaluation, spot-then-recognise
  (`python -m mer_jax.spotting.train`); Orbax and absl, so not imported here.
* `mer_jax.spotting.rescore`: a finished LOSO run re-scored with other peak
  parameters from its stored probabilities, and the dev grid search
  (`python -m mer_jax.spotting.rescore`); not imported here either.

See docs/spotting.md.
"""
