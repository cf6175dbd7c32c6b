"""TFDS builder of `synthetic_me_long`, synthetic long videos for spotting.

Every video is rendered by `mer_jax.synthetic_long` from the builder config:
nothing is downloaded and the same config writes identical records.

  import data_builders.synthetic_me_long  # registers the builder
  builder = tfds.builder("synthetic_me_long/cas_like", data_dir=...)
  builder.download_and_prepare()
  source = builder.as_data_source(split="train")  # ArrayRecord: by index, no TensorFlow

One `train` split holds every video (one record per video, long-video schema
of `mer_jax.spotting.schema`, plus `nuisances`: the blinks, mouth movements
and quick head moves, which are not expressions). Leave-one-subject-out
folds come from the `subject` field.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from data_builders import records
from mer_jax import schema as clip_schema
from mer_jax import synthetic_long
from mer_jax.spotting import schema as long_schema

_DESCRIPTION = """\
Procedural long face videos with micro-expressions (at most 0.5 s, about a
pixel of motion) and macro-expressions (longer, larger) made of facial
action-unit displacement fields, under label-free blinks, mouth movements,
head motion, sensor noise and flicker. Every interval's onset, apex, offset,
type and class is exact. See docs/spotting.md.
"""


@dataclasses.dataclass(eq=False)
class SyntheticMeLongConfig(tfds.core.BuilderConfig):
  """A `synthetic_me_long` variant.

  Attributes:
    params: every renderer and dataset-size parameter.
  """
  params: synthetic_long.LongVideoConfig = dataclasses.field(
      default_factory=synthetic_long.LongVideoConfig)

  def __post_init__(self):
    if not isinstance(self.params, synthetic_long.LongVideoConfig):
      raise ValueError(
          f"SyntheticMeLongConfig {self.name!r}: params must be a "
          f"mer_jax.synthetic_long.LongVideoConfig, got {type(self.params).__name__}")
    if self.description is None:
      self.description = synthetic_long.describe(self.params)


class Builder(records.ArrayRecordBuilder):
  """DatasetBuilder for `synthetic_me_long`."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "2.0.0": "ArrayRecord files read by index without TensorFlow (issue 12; were "
                            "TFRecord); same features and pixels. Rebuild: `python -m "
                            "data_builders.build synthetic_me_long/CONFIG`."}
  BUILDER_CONFIGS = [SyntheticMeLongConfig(name=name, params=params)
                     for name, params in synthetic_long.PRESETS.items()]
  DEFAULT_CONFIG_NAME = "cas_like"

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.params.size
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=long_schema.features(
            height=size, width=size,
            extra_features={"nuisances": tfds.features.Sequence({
                "kind": tfds.features.Text(),
                "start": tfds.features.Scalar(dtype=np.int32),
                "end": tfds.features.Scalar(dtype=np.int32)})}),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: videos are rendered.
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    config_name = self.builder_config.name
    for video_id, example in synthetic_long.generate_dataset(self.builder_config.params):
      long_schema.validate_video(example, where=f"synthetic_me_long/{config_name} {video_id}")
      # Encoded bytes pass through tfds.features.Image untouched; OpenCV's PNG
      # encoder is much faster than TFDS's own (it expects BGR).
      example["frames"] = clip_schema.encode_frames(example["frames"], "png")
      yield video_id, example
