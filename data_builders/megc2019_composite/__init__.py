"""MEGC2019 composite TFDS builder (`tfds build data_builders/megc2019_composite`)."""

from .megc2019_composite_dataset_builder import Builder
