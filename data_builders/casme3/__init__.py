"""CAS(ME)^3 part A TFDS builder (`tfds build data_builders/casme3`)."""

from .casme3_dataset_builder import Builder
