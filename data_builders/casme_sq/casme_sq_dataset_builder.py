"""TFDS builder for CAS(ME)^2 long videos (spotting), long-video schema.

The release (Qu et al., IEEE TAFFC 2018) holds 30 fps recordings of 22
participants watching emotional videos, with macro- and micro-expression
intervals in `CAS(ME)^2code_final.xlsx`:

* sheet 1 (coding, **no header row**), one row per expression: participant
  number, `<video name>_<n>` (`anger1_1`), onset, apex, offset (0 = unknown),
  action units, emotion category (negative / positive / surprise / others),
  expression type (`macro-expression` / `micro-expression`), self-reported
  emotion (the file spells `happyiness` once);
* sheet `naming rule1`: subject code (`s15`) in column 2, participant number
  in column 3;
* sheet `naming rule2`: 4-digit video code (`0401`, may be stored as 401) in
  column 1, video name (`anger1`) in column 2.

Frames: `rawpic/s15/15_0401girlcrashing/img1.jpg ...` (`imgN`, N from 1, the
sheet's frame numbers); the video folder of a row is the one in the subject's
folder whose name starts with `<subject digits>_<video code>`. Every video
folder of an annotated subject becomes one record (a video without annotated
interval is kept, with none: spotting scores its false positives).
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
from mer_jax.spotting import schema as long_schema

FPS = 30.0
DATASET = "casme_sq"
ANNOTATION_FILE = "CAS(ME)^2code_final.xlsx"
RELEASES = {"raw": "rawpic", "cropped": "cropped"}
SUBJECT_SHEET, VIDEO_SHEET = "naming rule1", "naming rule2"

# The emotion-category column (the MEGC 3 classes plus 'others', which has none).
CATEGORY_TO_LABEL = {"negative": 0, "positive": 1, "surprise": 2, "others": -1}
TYPES = {"macro-expression": "macro", "micro-expression": "micro", "macro": "macro",
         "micro": "micro"}
# Known misspellings in the self-reported emotion column: repaired and recorded.
EMOTION_SPELLING = {"happyiness": "happiness"}

LAYOUT = f"""\
<manual_dir>/
  {ANNOTATION_FILE}     sheet 1 coding rows (no header); sheets '{SUBJECT_SHEET}', '{VIDEO_SHEET}'
  rawpic/                             release "raw"
    s15/15_0101disgustingteeth/img1.jpg ...   s<subject>/<subject>_<4-digit video code><name>/imgN.jpg
  cropped/                            release "cropped", same nesting
Only the frame folder of the release you build is needed."""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
CAS(ME)^2 is licensed: request it from the Institute of Psychology, Chinese
Academy of Sciences (http://casme.psych.ac.cn/casme/e3), unpack it and arrange
the manual directory as

{LAYOUT}

then run e.g.
  python -m data_builders.build casme_sq/raw_128 --manual_dir=<manual_dir>
See docs/spotting.md for the layout rules and repairs.
"""


@dataclasses.dataclass(eq=False)
class CasmeSqConfig(tfds.core.BuilderConfig):
  """CAS(ME)^2 release and frame size.

  Attributes:
    release: "raw" (rawpic/) or "cropped" (cropped/).
    short_side: shorter image side in pixels after resizing (None: native).
    skip_unreadable: skip videos that cannot be built (recorded in metadata).
  """
  release: str = "raw"
  short_side: Optional[int] = 128
  skip_unreadable: bool = False


def _configs() -> list[CasmeSqConfig]:
  return [CasmeSqConfig(name=f"{release}_{side}", release=release, short_side=side,
                        description=f"{folder}/ frames, short side {side} px, 30 fps")
          for release, folder in RELEASES.items() for side in (128, 256)]


def _digits(value) -> Optional[str]:
  match = re.search(r"(\d+)\s*$", common.cell_text(value))
  return match.group(1) if match else None


def read_naming_rules(xlsx: str) -> tuple[dict[int, str], dict[str, str]]:
  """(participant number -> subject folder `s15`, video name -> 4-digit code).

  Raises:
    common.AnnotationError: a naming sheet is missing or a row is unreadable
      (named by sheet and row).
  """
  subjects = {}
  for row_number, row in common.read_xlsx_sheet(xlsx, SUBJECT_SHEET):
    digits = _digits(row[1] if len(row) > 1 else None)
    participant = common.parse_frame_value(row[2] if len(row) > 2 else None)
    if digits is None or participant is None:
      if row_number == 1:
        continue  # A header line some copies carry.
      raise common.AnnotationError(
          f"{ANNOTATION_FILE} sheet '{SUBJECT_SHEET}' row {row_number}: expected the subject "
          f"code (s15) in column 2 and the participant number in column 3, got {row[:3]}")
    subjects[participant] = f"s{int(digits):02d}"
  videos = {}
  for row_number, row in common.read_xlsx_sheet(xlsx, VIDEO_SHEET):
    code = common.parse_frame_value(row[0])
    name = common.cell_text(row[1] if len(row) > 1 else None).lower()
    if code is None or not name:
      if row_number == 1:
        continue
      raise common.AnnotationError(
          f"{ANNOTATION_FILE} sheet '{VIDEO_SHEET}' row {row_number}: expected the video code "
          f"(0401) in column 1 and the video name (anger1) in column 2, got {row[:2]}")
    videos[name] = f"{code:04d}"
  return subjects, videos


def _interval(row_number: int, row: tuple) -> tuple[common.AnnotatedInterval, list[str], list[str]]:
  """One coding row -> an annotated interval, with the repairs and flags it needs."""
  cells = list(row) + [None] * (9 - len(row))
  kind = common.cell_text(cells[7]).lower()
  if kind not in TYPES:
    raise common.SampleError(
        f"{ANNOTATION_FILE} row {row_number}: expression type {cells[7]!r} is neither "
        "'macro-expression' nor 'micro-expression'")
  category = common.cell_text(cells[6]).lower()
  repairs, flags = [], []
  if category in CATEGORY_TO_LABEL:
    label = CATEGORY_TO_LABEL[category]
  else:
    label = long_schema.NO_LABEL
    flags.append(f"row {row_number}: unknown emotion category {cells[6]!r}: no 3-class label "
                 "(the interval still counts for spotting)")
  emotion = common.cell_text(cells[8]).lower() or category
  if emotion in EMOTION_SPELLING:
    repairs.append(f"row {row_number}: emotion {emotion!r} read as {EMOTION_SPELLING[emotion]!r}")
    emotion = EMOTION_SPELLING[emotion]
  return (common.AnnotatedInterval(
      row=row_number, onset=cells[2], apex=cells[3], offset=cells[4], type=TYPES[kind],
      label=label, emotion=emotion, action_units=common.cell_text(cells[5])), repairs, flags)


def plan_videos(manual_dir: str, release: str,
                report: common.BuildReport) -> list[common.LongVideo]:
  """Plans one `common.LongVideo` per video folder of every annotated subject.

  Raises:
    FileNotFoundError: manual dir, sheet or frame folder missing (with layout).
    common.AnnotationError: unreadable naming sheets, a participant or video
      name the naming sheets do not know.
    common.SampleError: an unbuildable video when skipping is off.
  """
  if release not in RELEASES:
    raise ValueError(f"CAS(ME)^2 release must be one of {sorted(RELEASES)}, got {release!r}")
  common.require_path(manual_dir, what="CAS(ME)^2 manual directory", layout=LAYOUT)
  xlsx = common.require_path(os.path.join(manual_dir, ANNOTATION_FILE),
                             what="CAS(ME)^2 coding sheet", layout=LAYOUT)
  frames_root = common.require_path(os.path.join(manual_dir, RELEASES[release]),
                                    what=f"CAS(ME)^2 frame folder for release {release!r}",
                                    layout=LAYOUT)
  subjects, codes = read_naming_rules(xlsx)
  rows_by_video = collections.defaultdict(list)  # (subject, code) -> [(row number, row)]
  for row_number, row in common.read_xlsx_sheet(xlsx, 0):
    participant = common.parse_frame_value(row[0])
    name = common.cell_text(row[1] if len(row) > 1 else None)
    video_name = name.rsplit("_", 1)[0].lower()
    if participant not in subjects:
      raise common.AnnotationError(
          f"{ANNOTATION_FILE} row {row_number}: participant {row[0]!r} is not in sheet "
          f"'{SUBJECT_SHEET}' (known: {sorted(subjects)})")
    if video_name not in codes:
      raise common.AnnotationError(
          f"{ANNOTATION_FILE} row {row_number}: video name {video_name!r} (from {name!r}) is "
          f"not in sheet '{VIDEO_SHEET}'")
    rows_by_video[(subjects[participant], codes[video_name])].append((row_number, row))

  videos = []
  for subject in sorted(set(subjects.values()), key=common.natural_sort_key):
    subject_dir = os.path.join(frames_root, subject)
    folders = {}
    if os.path.isdir(subject_dir):
      report.add_stray(common.stray_files_in(subject_dir))
      for folder in sorted(os.listdir(subject_dir)):
        match = re.fullmatch(r"(\d+)_(\d{4}).*", folder)
        if match and os.path.isdir(os.path.join(subject_dir, folder)):
          if match.group(2) in folders:
            raise common.AnnotationError(
                f"{subject_dir}: folders {folders[match.group(2)]!r} and {folder!r} both carry "
                f"video code {match.group(2)}")
          folders[match.group(2)] = folder
    annotated_codes = {code for (s, code) in rows_by_video if s == subject}
    for code in sorted(set(folders) | annotated_codes):
      video_id = f"{subject}/{folders.get(code, subject[1:] + '_' + code)}"
      try:
        if code not in folders:
          raise common.SampleError(
              f"{len(rows_by_video[(subject, code)])} annotated interval(s) (rows "
              f"{[n for n, _ in rows_by_video[(subject, code)]]}) but no folder "
              f"{subject_dir}/{subject[1:]}_{code}*")
        listing = common.list_frames(os.path.join(subject_dir, folders[code]))
        report.add_stray(listing.stray)
        annotations, repairs, flags = [], common.video_gap_repairs(listing), []
        for row_number, row in rows_by_video.get((subject, code), []):
          annotation, row_repairs, row_flags = _interval(row_number, row)
          annotations.append(annotation)
          repairs += row_repairs
          flags += row_flags
        intervals, located_repairs, located_flags = common.locate_video_intervals(
            listing, annotations, where=f"{DATASET} {video_id}", sheet=ANNOTATION_FILE)
      except common.SampleError as error:
        report.fail_or_skip(video_id, error)
        continue
      if not intervals:
        flags.append("no annotated interval (kept: spotting scores false positives here)")
      videos.append(common.LongVideo(
          video_id=video_id, subject=subject, frame_paths=listing.paths,
          first_frame_number=listing.numbers[0], intervals=intervals,
          repairs=repairs + located_repairs, flags=flags + located_flags))
  return videos


class Builder(manual_builder.ManualDownloadBuilder):
  """CAS(ME)^2 long videos with macro- and micro-expression intervals."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: long-video schema (mer_jax.spotting.schema).",
                   "2.0.0": "ArrayRecord files read by index without TensorFlow (issue 12; were "
                            "TFRecord); same features. Rebuild: `python -m data_builders.build "
                            "casme_sq/CONFIG --manual_dir=...`."}
  BUILDER_CONFIGS = _configs()
  DEFAULT_CONFIG_NAME = "raw_128"
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  DESCRIPTION = ("CAS(ME)^2 (Qu et al., IEEE TAFFC 2018): long 30 fps videos with macro- and "
                 "micro-expression intervals, for spotting.")
  HOMEPAGE = "http://casme.psych.ac.cn/casme/e3"
  CITATION = ("Qu F. et al. CAS(ME)^2: A database for spontaneous macro-expression and "
              "micro-expression spotting and recognition. IEEE Transactions on Affective "
              "Computing 9(4), 2018.")

  def _report_name(self) -> str:
    return DATASET

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.DESCRIPTION,
        features=long_schema.features(encoding_format="jpeg"),
        homepage=self.HOMEPAGE, citation=self.CITATION, metadata=tfds.core.MetadataDict())

  def _plan(self, manual_dir: str, report: common.BuildReport) -> list[common.LongVideo]:
    return plan_videos(manual_dir, self.builder_config.release, report)

  def _generate_examples(self, samples, report):
    yield from common.generate_video_examples(
        samples, dataset=DATASET, fps=FPS, short_side=self.builder_config.short_side,
        report=report, metadata=self.info.metadata)

