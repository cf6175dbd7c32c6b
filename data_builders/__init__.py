"""TFDS dataset builders of mer_jax, one package per dataset.

Importing a builder's package registers it with TFDS, e.g.

  import data_builders.synthetic_me  # registers "synthetic_me"
  tfds.builder("synthetic_me/tiny")

This package imports none of them itself, so importing one builder does not
pull in the others (or TensorFlow, until a builder is used).
"""
