"""SMIC TFDS builder (`tfds build data_builders/smic`)."""

from .smic_dataset_builder import Builder
