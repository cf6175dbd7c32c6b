"""TFDS builder for SAMM long videos (spotting), long-video schema.

The release (Yap et al., FG 2020) holds 200 fps greyscale recordings with
macro- and micro-expression intervals in `SAMM_LongVideos_V3_Release.xlsx`:
one sheet, a preamble of a few rows, then a header row with at least
`Subject, Filename, Onset, Apex, Offset, Type, Action Units` (the release
also has `Inducement Code, Duration, Notes`). The builder finds the header
row by its cells, so the preamble's length does not matter. `Filename` is
`<subject>_<video>_<n>` (`006_1_1`); `Type` is `Micro - 1/2` (micro) or
`Macro`. The sheet has no emotion column: intervals carry label -1 unless an
`Estimated Emotion` column is present (then mapped as the SAMM clip builder
does).

Frames: `SAMM_longvideos/<subject>_<video>/<subject>_<video>_<NNNN>.jpg`
(frame numbers from 1, the sheet's numbers; the padding does not matter).
Every video folder becomes one record; a video without an annotated interval
is kept with none.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Optional

import tensorflow_datasets as tfds

from data_builders import common
from data_builders import manual_builder
from mer_jax import schema
from mer_jax.spotting import schema as long_schema

FPS = 200.0
DATASET = "samm_long"
ANNOTATION_FILE = "SAMM_LongVideos_V3_Release.xlsx"
FRAMES_FOLDER = "SAMM_longvideos"
COLUMNS = ("Subject", "Filename", "Onset", "Apex", "Offset", "Type", "Action Units")

# The MEGC2019 rule of the SAMM clip builder, for sheets that carry emotions.
EMOTION_TO_CLASS = {"anger": "negative", "contempt": "negative", "disgust": "negative",
                    "fear": "negative", "sadness": "negative", "happiness": "positive",
                    "surprise": "surprise"}

LAYOUT = f"""\
<manual_dir>/
  {ANNOTATION_FILE}   preamble rows, then a header row with {', '.join(COLUMNS)}
  {FRAMES_FOLDER}/
    006_1/006_1_0001.jpg ...           <subject>_<video>/<subject>_<video>_<frame number>.jpg"""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
SAMM long videos are licensed: request them from Manchester Metropolitan
University (http://www2.docm.mmu.ac.uk/STAFF/M.Yap/dataset.php), unpack them
and arrange the manual directory as

{LAYOUT}

then run e.g.
  python -m data_builders.build samm_long/full_128 --manual_dir=<manual_dir>
See docs/spotting.md for the layout rules and repairs.
"""


@dataclasses.dataclass(eq=False)
class SammLongConfig(tfds.core.BuilderConfig):
  """Frame size of the SAMM long videos.

  Attributes:
    short_side: shorter image side in pixels after resizing (None: native).
    skip_unreadable: skip videos that cannot be built (recorded in metadata).
  """
  short_side: Optional[int] = 128
  skip_unreadable: bool = False


def _type(value) -> Optional[str]:
  text = common.cell_text(value).lower()
  if text.startswith("micro"):
    return "micro"
  if text.startswith("macro"):
    return "macro"
  return None


def plan_videos(manual_dir: str, report: common.BuildReport) -> list[common.LongVideo]:
  """Plans one `common.LongVideo` per folder of `SAMM_longvideos/`.

  Raises:
    FileNotFoundError: manual dir, sheet or frame folder missing (with layout).
    common.AnnotationError: no header row, a Filename that is not
      `<subject>_<video>_<n>`, or a Subject cell contradicting it.
    common.SampleError: an unbuildable video when skipping is off.
  """
  common.require_path(manual_dir, what="SAMM long-video manual directory", layout=LAYOUT)
  xlsx = common.require_path(os.path.join(manual_dir, ANNOTATION_FILE),
                             what="SAMM long-video sheet", layout=LAYOUT)
  frames_root = common.require_path(os.path.join(manual_dir, FRAMES_FOLDER),
                                    what="SAMM long-video frame folder", layout=LAYOUT)
  header_row = common.find_header_row(xlsx, COLUMNS)
  rows = common.read_xlsx_rows(xlsx, required_columns=COLUMNS, header_row=header_row)
  rows_by_video = collections.defaultdict(list)
  for row in rows:
    filename = common.cell_text(row["Filename"])
    match = re.fullmatch(r"(\d+)_(\d+)_(\d+)", filename)
    if match is None:
      raise common.AnnotationError(
          f"{ANNOTATION_FILE} row {row['_row']}: Filename {filename!r} is not "
          "<subject>_<video>_<n> (e.g. 006_1_1)")
    subject = common.parse_frame_value(row["Subject"])
    if subject is not None and subject != int(match.group(1)):
      raise common.AnnotationError(
          f"{ANNOTATION_FILE} row {row['_row']}: Subject {row['Subject']!r} contradicts "
          f"Filename {filename!r}")
    rows_by_video[f"{match.group(1)}_{match.group(2)}"].append(row)

  report.add_stray(common.stray_files_in(frames_root))
  folders = sorted((name for name in os.listdir(frames_root)
                    if os.path.isdir(os.path.join(frames_root, name))),
                   key=common.natural_sort_key)
  videos = []
  for video_id in sorted(set(folders) | set(rows_by_video), key=common.natural_sort_key):
    subject = video_id.split("_")[0]
    try:
      if video_id not in folders:
        raise common.SampleError(
            f"{len(rows_by_video[video_id])} annotated interval(s) (rows "
            f"{[r['_row'] for r in rows_by_video[video_id]]}) but no folder "
            f"{os.path.join(frames_root, video_id)}")
      listing = common.list_frames(os.path.join(frames_root, video_id))
      report.add_stray(listing.stray)
      annotations, flags = [], []
      for row in rows_by_video.get(video_id, []):
        kind = _type(row["Type"])
        if kind is None:
          raise common.SampleError(f"{ANNOTATION_FILE} row {row['_row']}: Type {row['Type']!r} "
                                   "is neither 'Micro - 1/2' nor 'Macro'")
        emotion = common.cell_text(row.get("Estimated Emotion")).lower()
        class_name = common.map_emotion(emotion, EMOTION_TO_CLASS) if emotion else None
        annotations.append(common.AnnotatedInterval(
            row=row["_row"], onset=row["Onset"], apex=row["Apex"], offset=row["Offset"],
            type=kind, label=(schema.CLASS_NAMES.index(class_name) if class_name
                              else long_schema.NO_LABEL),
            emotion=emotion, action_units=common.cell_text(row["Action Units"])))
      intervals, repairs, located_flags = common.locate_video_intervals(
          listing, annotations, where=f"{DATASET} {video_id}", sheet=ANNOTATION_FILE)
      repairs = common.video_gap_repairs(listing) + repairs
    except common.SampleError as error:
      report.fail_or_skip(video_id, error)
      continue
    if not intervals:
      flags.append("no annotated interval (kept: spotting scores false positives here)")
    videos.append(common.LongVideo(
        video_id=video_id, subject=subject, frame_paths=listing.paths,
        first_frame_number=listing.numbers[0], intervals=intervals, repairs=repairs,
        flags=flags + located_flags))
  return videos


class Builder(manual_builder.ManualDownloadBuilder):
  """SAMM long videos with macro- and micro-expression intervals."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: long-video schema (mer_jax.spotting.schema).",
                   "2.0.0": "ArrayRecord files read by index without TensorFlow (issue 12; were "
                            "TFRecord); same features. Rebuild: `python -m data_builders.build "
                            "samm_long/CONFIG --manual_dir=...`."}
  BUILDER_CONFIGS = [SammLongConfig(name=f"full_{side}", short_side=side,
                                    description=f"{FRAMES_FOLDER}/ frames, short side {side} px, "
                                                "200 fps") for side in (128, 256)]
  DEFAULT_CONFIG_NAME = "full_128"
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  DESCRIPTION = ("SAMM long videos (Yap et al., FG 2020): 200 fps recordings with macro- and "
                 "micro-expression intervals, for spotting.")
  HOMEPAGE = "http://www2.docm.mmu.ac.uk/STAFF/M.Yap/dataset.php"
  CITATION = ("Yap C. H., Kendrick C. and Yap M. H. SAMM long videos: A spontaneous facial "
              "micro- and macro-expressions dataset. IEEE FG 2020.")

  def _report_name(self) -> str:
    return DATASET

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.DESCRIPTION,
        features=long_schema.features(encoding_format="jpeg"),
        homepage=self.HOMEPAGE, citation=self.CITATION, metadata=tfds.core.MetadataDict())

  def _plan(self, manual_dir: str, report: common.BuildReport) -> list[common.LongVideo]:
    return plan_videos(manual_dir, report)

  def _generate_examples(self, samples, report):
    yield from common.generate_video_examples(
        samples, dataset=DATASET, fps=FPS, short_side=self.builder_config.short_side,
        report=report, metadata=self.info.metadata)
