"""Micro- and macro-expression spotting in long videos.

* `mer_jax.spotting.metrics`: MEGC spotting precision / recall / F1 (IoU >= 0.5,
  pooled over videos, per expression type and overall) and spot-then-recognise
  scores (recognition UF1 / UAR on the spotted intervals, STRS). NumPy only.
* `mer_jax.spotting.schema`: the long-video record schema written by the
  `synthetic_me_long`, `casme_sq` (CAS(ME)^2) and `samm_long` builders.

See docs/spotting.md.
"""
