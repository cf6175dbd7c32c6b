"""SAMM TFDS builder (`tfds build data_builders/samm`)."""

from .samm_dataset_builder import Builder
