"""SAMM long-video TFDS builder (`tfds build data_builders/samm_long`)."""

from .samm_long_dataset_builder import Builder
