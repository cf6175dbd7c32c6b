"""TFDS builder for CAS(ME)^3 part A micro-expressions (colour, optional depth).

Part A stores whole task recordings, `spNO.<id>/<task a..m>/color/<n>.jpg`
(and `depth/<n>.png`), and one recording can hold several micro-expressions.
The label sheet's Onset/Apex/Offset are jpg indices `n` ("JpgIndex"). Each
example stores the frames from the (repaired) onset to the offset only, so
`onset` is always index 0, `offset` the last index, and `first_frame_number`
the `n` of the onset frame.

Known faults: 55 samples have onset == apex (the first frames were lost); they
are kept as annotated and flagged (`onset_equals_apex`). Samples longer than
2 s are kept and flagged (`longer_than_2s`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds

from data_builders import common
from data_builders import manual_builder

FPS = 30.0
ANNOTATION_FILE = "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
FRAMES_FOLDER = "part_A"
LONG_SAMPLE_SECONDS = 2.0

COLUMNS = ("Subject", "Filename", "Onset", "Apex", "Offset", "emotion", "Objective class")

# MEGC2019-style 3 classes; 'others' maps to no class and is excluded.
EMOTION_TO_CLASS = {
    "anger": "negative",
    "disgust": "negative",
    "fear": "negative",
    "sad": "negative",
    "sadness": "negative",
    "contempt": "negative",
    "happy": "positive",
    "happiness": "positive",
    "surprise": "surprise",
}
EXCLUDED_EMOTIONS = ("others",)  # Any other unmapped value is unknown (skipped, listed).

LAYOUT = f"""\
<manual_dir>/
  {ANNOTATION_FILE}
  {FRAMES_FOLDER}/
    spNO.1/a/color/0.jpg 1.jpg ...    <subject>/<task a..m>/color/<jpg index>.jpg
    spNO.1/a/depth/0.png 1.png ...    only for the rgbd_* configs
    spNO.1/b/...
(The spNO.* folders may also sit directly in <manual_dir>.)"""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
CAS(ME)^3 is licensed: request it from the Institute of Psychology, Chinese
Academy of Sciences (http://casme.psych.ac.cn/casme/e4), unpack part A and
arrange the manual directory as

{LAYOUT}

then run e.g.
  tfds build data_builders/casme3 --config=color_128 --manual_dir=<manual_dir>
See docs/datasets.md for expected counts and the repair rules.
"""


@dataclasses.dataclass(eq=False)
class Casme3Config(tfds.core.BuilderConfig):
  """CAS(ME)^3 part A options.

  Attributes:
    with_depth: also store the depth frames as `depth` (uint16 PNG video).
    short_side: shorter image side in pixels after resizing (None: native).
    skip_unreadable: skip unrepairable samples (recorded in metadata).
  """
  with_depth: bool = False
  short_side: Optional[int] = 128
  skip_unreadable: bool = False


def _configs() -> list[Casme3Config]:
  return [Casme3Config(name=f"{'rgbd' if depth else 'color'}_{side}", with_depth=depth,
                       short_side=side,
                       description=f"colour{' + depth' if depth else ''} frames, short side {side} px")
          for depth in (False, True) for side in (128, 256)]


def subject_folder(subject) -> str:
  """`1` / `"spNO.1"` -> `"spNO.1"` (the folder name)."""
  text = common.cell_text(subject)
  if text.isdigit():
    return f"spNO.{int(text)}"
  if text.startswith("spNO.") and text[5:].isdigit():
    return text
  raise ValueError(f"CAS(ME)^3 subject {subject!r} is neither a number nor spNO.<id>")


def _frames_root(manual_dir: str) -> str:
  nested = os.path.join(manual_dir, FRAMES_FOLDER)
  return nested if os.path.isdir(nested) else manual_dir


def plan_samples(manual_dir: str, report: common.BuildReport, *,
                 with_depth: bool) -> list[common.Sample]:
  """Plans one `common.Sample` per label-sheet row (frames onset..offset).

  Raises:
    FileNotFoundError: manual dir or label sheet missing (with layout).
    common.AnnotationError: malformed sheet or duplicate rows.
    common.SampleError: an unrepairable sample when skipping is off.
  """
  common.require_path(manual_dir, what="CAS(ME)^3 manual directory", layout=LAYOUT)
  xlsx = common.require_path(os.path.join(manual_dir, ANNOTATION_FILE),
                             what="CAS(ME)^3 label sheet", layout=LAYOUT)
  rows = common.read_xlsx_rows(xlsx, required_columns=COLUMNS, header_row=1)
  root = _frames_root(manual_dir)
  samples, seen, seen_folded, listings = [], {}, {}, {}
  for row in rows:
    try:
      subject = subject_folder(row["Subject"])
    except ValueError as error:
      raise common.AnnotationError(f"{ANNOTATION_FILE} row {row['_row']}: {error}") from None
    task = common.cell_text(row["Filename"])
    onset_n = common.parse_frame_value(row["Onset"])
    clip_id = f"{subject}/{task}/{onset_n if onset_n is not None else row['_row']}"
    if clip_id in seen:
      raise common.AnnotationError(
          f"{ANNOTATION_FILE}: rows {seen[clip_id]} and {row['_row']} both describe {clip_id}")
    folded = clip_id.casefold()
    if folded in seen_folded and seen_folded[folded][1] != clip_id:
      raise common.AnnotationError(
          f"{ANNOTATION_FILE}: rows {seen_folded[folded][0]} ({seen_folded[folded][1]}) and "
          f"{row['_row']} ({clip_id}) name clips that differ only in letter case; fix the sheet")
    seen[clip_id] = row["_row"]
    seen_folded[folded] = (row["_row"], clip_id)
    where = f"casme3 {clip_id} ({ANNOTATION_FILE} row {row['_row']})"
    fault = common.plain_name_fault(task)
    if fault:
      report.fail_or_skip(clip_id, common.SampleError(f"{where}: Filename {task!r} {fault}"))
      continue
    emotion = common.cell_text(row["emotion"]).lower()
    if (common.map_emotion(emotion, EMOTION_TO_CLASS) is None
        and emotion not in EXCLUDED_EMOTIONS):
      report.skip_unknown_label(clip_id, row=row["_row"], value=emotion, sheet=ANNOTATION_FILE)
      continue
    try:
      color_dir = os.path.join(root, subject, task, "color")
      if color_dir not in listings:  # Recordings hold several samples: list once.
        listings[color_dir] = common.list_frames(color_dir)
      listing = listings[color_dir]
      located = common.locate_sample(listing.numbers, row["Onset"], row["Apex"], row["Offset"],
                                     where=where, on_disk=listing.on_disk)
      window = slice(located.onset, located.offset + 1)
      repairs = list(located.repairs) + common.gap_repairs(
          listing, listing.numbers[located.onset], listing.numbers[located.offset],
          listing.numbers[located.onset], listing.numbers[located.offset])
      frame_paths = listing.paths[window]
      depth_paths = None
      if with_depth:
        # A filled colour frame takes the depth frame of the same source number.
        depth_paths = [os.path.join(root, subject, task, "depth", f"{n}.png")
                       for n in listing.sources[window]]
        missing = [p for p in depth_paths if not os.path.isfile(p)]
        if missing:
          raise common.SampleError(f"depth frame {missing[0]} missing ({len(missing)} missing)")
    except common.SampleError as error:
      report.fail_or_skip(clip_id, error)
      continue
    report.add_stray(listing.stray)
    flags = list(located.flags)
    first, last = listing.numbers[located.onset], listing.numbers[located.offset]
    if (last - first + 1) / FPS > LONG_SAMPLE_SECONDS:
      flags.append("longer_than_2s")
    objective = common.parse_frame_value(row["Objective class"])
    samples.append(common.Sample(
        clip_id=clip_id,
        frame_paths=frame_paths,
        depth_paths=depth_paths,
        fields=dict(
            label=common.map_emotion(emotion, EMOTION_TO_CLASS),
            subject=subject, clip_id=clip_id, dataset="casme3", fps=FPS,
            onset=0, apex=located.apex - located.onset, offset=located.offset - located.onset,
            action_units="", emotion=emotion,  # Part A's ME sheet has no AU column.
            apex_source=located.apex_source,
            objective_class=-1 if objective is None else objective,
            first_frame_number=first),
        repairs=repairs, flags=flags))
  return samples


class Builder(manual_builder.ManualDownloadBuilder):
  """CAS(ME)^3 part A micro-expressions with 3-class labels."""

  BUILDER_CONFIGS = _configs()
  DEFAULT_CONFIG_NAME = "color_128"
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  DESCRIPTION = ("CAS(ME)^3 part A micro-expressions (Li et al., IEEE TPAMI 2023), "
                 "3-class labels; depth optional.")
  HOMEPAGE = "http://casme.psych.ac.cn/casme/e4"
  CITATION = ("Li J. et al. CAS(ME)^3: A third generation facial spontaneous "
              "micro-expression database with depth information and high ecological "
              "validity. IEEE TPAMI, 2023.")

  def _extra_features(self):
    extra = super()._extra_features()
    if self.builder_config.with_depth:
      # 16-bit PNGs encoded by OpenCV (`common.generate_examples`), decodable without TF.
      extra["depth"] = tfds.features.Sequence(
          tfds.features.Image(shape=(None, None, 1), dtype=np.uint16, encoding_format="png"))
    return extra

  def _plan(self, manual_dir: str, report: common.BuildReport) -> list[common.Sample]:
    return common.keep_labelled(
        plan_samples(manual_dir, report, with_depth=self.builder_config.with_depth), report)
