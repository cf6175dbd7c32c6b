"""The TFDS builder machinery shared by every real (manual-download) dataset.

Each dataset's `Builder` subclasses `ManualDownloadBuilder` and supplies only
what differs: its description, homepage and citation, any extra features, and
`_plan(manual_dir, report)`, which reads the release and returns the samples
to write (`data_builders.common.Sample`), with repairs and skips recorded in
the `BuildReport`.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import tensorflow_datasets as tfds

from data_builders import common
from data_builders import records
from mer_jax import schema


class ManualDownloadBuilder(records.ArrayRecordBuilder, skip_registration=True):
  """A micro-expression dataset read from `manual_dir`, one `train` split.

  Builder configs need the fields `short_side` and `skip_unreadable`.
  """

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": ("Uniform time axis: frame numbers missing inside a clip are filled with a "
                "copy of the previous frame and recorded (clips with gaps gain frames, their "
                "indices follow the frame numbers); unknown emotions, path-like or "
                "case-only-duplicate Filename cells, Windows copy names, folders, link loops "
                "and corrupt JPEGs are refused by name (docs/datasets.md)."),
      "2.0.0": ("Records readable without TensorFlow (issue 12): ArrayRecord files read by "
                "index, `frames` a Sequence(Image) of JPEGs encoded by OpenCV (was a "
                "TFRecord Video encoded by TF). Rebuild: `python -m data_builders.build "
                "NAME/CONFIG --manual_dir=...`."),
  }
  DESCRIPTION = ""
  HOMEPAGE = ""
  CITATION = ""

  def __init__(self, *, skip_unreadable: Optional[bool] = None, **kwargs):
    """Args: skip_unreadable overrides the config's flag; kwargs go to TFDS."""
    super().__init__(**kwargs)
    self._skip_unreadable = (self.builder_config.skip_unreadable
                             if skip_unreadable is None else skip_unreadable)

  def _extra_features(self) -> dict[str, Any]:
    """Features beside the shared schema; subclasses add their own."""
    return {
        "objective_class": tfds.features.Scalar(dtype=np.int32),
        "first_frame_number": tfds.features.Scalar(dtype=np.int32),
    }

  def _report_name(self) -> str:
    """The dataset name used in the build summary and the examples' `dataset` field."""
    return self.name

  def _plan(self, manual_dir: str, report: common.BuildReport) -> list[common.Sample]:
    """Reads the release in `manual_dir` and returns the samples to write."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=schema.features(encoding_format="jpeg", extra_features=self._extra_features()),
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    report = common.BuildReport(self._report_name(), self.builder_config.name,
                                skip_unreadable=self._skip_unreadable)
    samples = self._plan(os.fspath(dl_manager.manual_dir), report)
    return {"train": self._generate_examples(samples, report)}

  def _generate_examples(self, samples: list[common.Sample], report: common.BuildReport):
    """Yields `(clip_id, example)`; writes the build summary into `info.metadata`."""
    yield from common.generate_examples(samples, short_side=self.builder_config.short_side,
                                        report=report, metadata=self.info.metadata)
