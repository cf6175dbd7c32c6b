"""CASME II TFDS builder (`tfds build data_builders/casme2`)."""

from .casme2_dataset_builder import Builder
