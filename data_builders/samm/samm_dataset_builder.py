"""TFDS builder for SAMM (full frames or the SAMM_CROP release).

Frame numbers: SAMM names frames `<subject>_<NNNNN>.jpg` with the recording's
zero-padded frame number; the FACS sheet's Onset/Apex/Offset Frame use the
same numbers. The builder stores every frame of the clip folder and maps a
frame number to its position in the folder's sorted frame list
(`first_frame_number` is the number of index 0).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import tensorflow_datasets as tfds

from data_builders import common
from data_builders import manual_builder

FPS = 200.0
ANNOTATION_FILE = "SAMM_Micro_FACS_Codes_v2.xlsx"
HEADER_ROW = 14  # 13 preamble rows precede the header.
RELEASES = {"full": "SAMM", "cropped": "SAMM_CROP"}

COLUMNS = ("Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame",
           "Action Units", "Estimated Emotion", "Objective Classes")

# MEGC2019 composite rule for SAMM: 'Other' maps to no class and is excluded.
EMOTION_TO_CLASS = {
    "anger": "negative",
    "contempt": "negative",
    "disgust": "negative",
    "fear": "negative",
    "sadness": "negative",
    "happiness": "positive",
    "surprise": "surprise",
}
EXCLUDED_EMOTIONS = ("other",)  # Any other unmapped value is unknown (skipped, listed).

LAYOUT = f"""\
<manual_dir>/
  {ANNOTATION_FILE}     header on row {HEADER_ROW} (13 preamble rows)
  SAMM/                               release "full"
    006/006_1_2/006_05562.jpg ...     <subject>/<subject>_<inducement>_<n>/<subject>_<5-digit frame>.jpg
  SAMM_CROP/                          release "cropped", same nesting
Only the frame folder of the release you build is needed."""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
SAMM is licensed: request it from Manchester Metropolitan University
(http://www2.docm.mmu.ac.uk/STAFF/M.Yap/dataset.php), unpack it and arrange the
manual directory as

{LAYOUT}

then run e.g.
  tfds build data_builders/samm --config=full_256 --manual_dir=<manual_dir>
See docs/datasets.md for expected counts and the repair rules.
"""


@dataclasses.dataclass(eq=False)
class SammConfig(tfds.core.BuilderConfig):
  """SAMM release and frame size.

  Attributes:
    release: "full" (SAMM/) or "cropped" (SAMM_CROP/).
    short_side: shorter image side in pixels after resizing (None: native).
    skip_unreadable: skip unrepairable samples (recorded in metadata).
  """
  release: str = "full"
  short_side: Optional[int] = 128
  skip_unreadable: bool = False


def _configs() -> list[SammConfig]:
  return [SammConfig(name=f"{release}_{side}", release=release, short_side=side,
                     description=f"{folder}/ frames, short side {side} px")
          for release, folder in RELEASES.items() for side in (128, 256)]


def subject_folder(subject) -> str:
  """`6` / `6.0` / `"006"` -> `"006"` (SAMM folders are 3-digit)."""
  text = common.cell_text(subject)
  if not text.isdigit():
    raise ValueError(f"SAMM subject {subject!r} is not a number")
  return f"{int(text):03d}"


def plan_samples(
    manual_dir: str,
    release: str,
    report: common.BuildReport,
    *,
    only: Optional[set[tuple[str, str]]] = None,
) -> list[common.Sample]:
  """Plans one `common.Sample` per FACS-sheet row.

  Args:
    manual_dir: the manual directory (layout in `LAYOUT`).
    release: "full" or "cropped".
    report: receives stray files and unrepairable samples.
    only: if given, plan just these `(subject folder, filename)` pairs.

  Returns:
    Samples; `fields["label"]` is None when the emotion maps to no class.

  Raises:
    FileNotFoundError: manual dir, sheet or frame folder missing (with layout).
    common.AnnotationError: malformed sheet or duplicate rows.
    common.SampleError: an unrepairable sample when skipping is off.
  """
  if release not in RELEASES:
    raise ValueError(f"SAMM release must be one of {sorted(RELEASES)}, got {release!r}")
  common.require_path(manual_dir, what="SAMM manual directory", layout=LAYOUT)
  xlsx = common.require_path(os.path.join(manual_dir, ANNOTATION_FILE),
                             what="SAMM FACS sheet", layout=LAYOUT)
  rows = common.read_xlsx_rows(xlsx, required_columns=COLUMNS, header_row=HEADER_ROW)
  frames_root = common.require_path(os.path.join(manual_dir, RELEASES[release]),
                                    what=f"SAMM frame folder for release {release!r}",
                                    layout=LAYOUT)
  return common.plan_sheet_samples(
      rows, sheet_name=ANNOTATION_FILE, frames_root=frames_root, dataset="samm", fps=FPS,
      subject_folder=subject_folder, frame_columns=("Onset Frame", "Apex Frame", "Offset Frame"),
      emotion_to_class=EMOTION_TO_CLASS, objective_column="Objective Classes", report=report, only=only,
      excluded_emotions=EXCLUDED_EMOTIONS)


class Builder(manual_builder.ManualDownloadBuilder):
  """SAMM micro-expression clips with MEGC2019 3-class labels."""

  BUILDER_CONFIGS = _configs()
  DEFAULT_CONFIG_NAME = "full_128"
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  DESCRIPTION = ("SAMM spontaneous micro-facial movements (Davison et al., IEEE TAFFC "
                 "2018), 3-class MEGC2019 labels.")
  HOMEPAGE = "http://www2.docm.mmu.ac.uk/STAFF/M.Yap/dataset.php"
  CITATION = ("Davison A. K. et al. SAMM: A spontaneous micro-facial movement dataset. "
              "IEEE Transactions on Affective Computing 9(1), 2018.")

  def _plan(self, manual_dir: str, report: common.BuildReport) -> list[common.Sample]:
    return common.keep_labelled(plan_samples(manual_dir, self.builder_config.release, report),
                                report)
