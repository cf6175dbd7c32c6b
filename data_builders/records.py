"""The record format every mer_jax builder writes: ArrayRecord, readable without TensorFlow.

`ArrayRecordBuilder` is a `GeneratorBasedBuilder` whose default file format is
`mer_jax.schema.RECORD_FORMAT` ("array_record"): records are read by index
(`builder.as_data_source`, Grain) on machines without TensorFlow. TensorFlow
is still needed to *build* records where TFDS needs it.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from mer_jax import schema


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder writing ArrayRecord files unless a `file_format` is passed."""

  def __init__(self, *, file_format=None, **kwargs):
    try:
      super().__init__(file_format=file_format or schema.RECORD_FORMAT, **kwargs)
    except ValueError as e:
      if file_format is not None or "File format is already set" not in str(e):
        raise
      # A data_dir written in another format at this version (dataset_info.json
      # says so): open it as it is, so that readers can refuse it by name
      # (`input_pipeline.check_record_format`) instead of failing here.
      super().__init__(**kwargs)
