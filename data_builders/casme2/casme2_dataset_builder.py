"""TFDS builder for CASME II (raw, cropped and the 2019 cropped revision).

Frame numbers: CASME II names frames `imgN.jpg` (`reg_imgN.jpg` when cropped)
with N counting from the clip's first recorded frame, not from 1; the coding
sheet's OnsetFrame/ApexFrame/OffsetFrame use the same N. The builder stores
every frame of the clip folder and maps N to its position in the folder's
sorted frame list, so `onset`/`apex`/`offset` are 0-based indices and
`first_frame_number` is the N of index 0.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import tensorflow_datasets as tfds

from data_builders import common
from data_builders import manual_builder

FPS = 200.0

# release -> (annotation file, frame folder, frame name prefix)
RELEASES = {
    "raw": ("CASME2-coding-20140508.xlsx", "CASME2_RAW_selected"),
    "cropped": ("CASME2-coding-20140508.xlsx", "Cropped"),
    "cropped_updated": ("CASME2-coding-20190701.xlsx", "Cropped-updated"),
}

COLUMNS = ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame",
           "Action Units", "Estimated Emotion")

# MEGC2019 composite rule for CASME II (see docs/datasets.md): repression IS
# negative; 'others', 'fear' and 'sadness' map to no class and are excluded.
EMOTION_TO_CLASS = {
    "disgust": "negative",
    "repression": "negative",
    "happiness": "positive",
    "surprise": "surprise",
}
# Emotions the composite rule excludes; any other unmapped value is unknown
# (skipped and listed with its sheet row).
EXCLUDED_EMOTIONS = ("others", "fear", "sadness")

LAYOUT = """\
<manual_dir>/
  CASME2-coding-20140508.xlsx         coding sheet (raw and cropped releases)
  CASME2_RAW_selected/                release "raw"
    sub01/EP02_01f/img46.jpg ...      imgN.jpg, N from the clip's first frame
  Cropped/                            release "cropped"
    sub01/EP02_01f/reg_img46.jpg ...
  CASME2-coding-20190701.xlsx         2019 revision (release "cropped_updated")
  Cropped-updated/sub01/EP02_01f/reg_img46.jpg ...
Only the files of the release you build are needed."""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
CASME II is licensed: request it from the Institute of Psychology, Chinese
Academy of Sciences (http://casme.psych.ac.cn/casme/e2), unpack it and arrange
the manual directory as

{LAYOUT}

then run e.g.
  tfds build data_builders/casme2 --config=cropped_128 --manual_dir=<manual_dir>
See docs/datasets.md for expected counts and the repair rules.
"""


@dataclasses.dataclass(eq=False)
class Casme2Config(tfds.core.BuilderConfig):
  """CASME II release and frame size.

  Attributes:
    release: "raw", "cropped" or "cropped_updated" (see `RELEASES`).
    short_side: frames are resized so the shorter side has this many pixels
      (None keeps the native size).
    skip_unreadable: skip unrepairable samples (recorded in metadata) instead
      of failing the build.
  """
  release: str = "cropped"
  short_side: Optional[int] = 128
  skip_unreadable: bool = False


def _configs() -> list[Casme2Config]:
  return [
      Casme2Config(name=f"{release}_{side}", release=release, short_side=side,
                   description=f"{folder} frames, short side {side} px, annotations {xlsx}")
      for release, (xlsx, folder) in RELEASES.items() for side in (128, 256)
  ]


def subject_folder(subject) -> str:
  """`1` / `1.0` / `"sub01"` -> `"sub01"` (the folder name)."""
  text = common.cell_text(subject)
  if text.lower().startswith("sub"):
    text = text[3:]
  if not text.isdigit():
    raise ValueError(f"CASME II subject {subject!r} is not a number or subNN")
  return f"sub{int(text):02d}"


def read_annotations(manual_dir: str, release: str) -> list[dict]:
  """Rows of the release's coding sheet (see `common.read_xlsx_rows`).

  Raises:
    FileNotFoundError: the sheet is missing (message shows the layout).
    common.AnnotationError: the header lacks a column of `COLUMNS`.
  """
  xlsx = common.require_path(os.path.join(manual_dir, RELEASES[release][0]),
                             what="CASME II coding sheet", layout=LAYOUT)
  return common.read_xlsx_rows(xlsx, required_columns=COLUMNS, header_row=1)


def plan_samples(
    manual_dir: str,
    release: str,
    report: common.BuildReport,
    *,
    only: Optional[set[tuple[str, str]]] = None,
) -> list[common.Sample]:
  """Plans one `common.Sample` per coding-sheet row.

  Args:
    manual_dir: the manual directory (layout in `LAYOUT`).
    release: key of `RELEASES`.
    report: receives stray files and unrepairable samples.
    only: if given, plan just these `(subject folder, filename)` pairs.

  Returns:
    Samples whose `fields["label"]` is the 3-class name, or None when the
    emotion maps to no class (the caller decides whether to exclude).

  Raises:
    FileNotFoundError: manual dir, frame folder or coding sheet missing.
    common.AnnotationError: malformed sheet or duplicate rows.
    common.SampleError: an unrepairable sample when skipping is off.
  """
  if release not in RELEASES:
    raise ValueError(f"CASME II release must be one of {sorted(RELEASES)}, got {release!r}")
  common.require_path(manual_dir, what="CASME II manual directory", layout=LAYOUT)
  rows = read_annotations(manual_dir, release)
  frames_root = common.require_path(os.path.join(manual_dir, RELEASES[release][1]),
                                    what=f"CASME II frame folder for release {release!r}",
                                    layout=LAYOUT)
  xlsx_name = RELEASES[release][0]
  return common.plan_sheet_samples(
      rows, sheet_name=xlsx_name, frames_root=frames_root, dataset="casme2", fps=FPS,
      subject_folder=subject_folder, frame_columns=("OnsetFrame", "ApexFrame", "OffsetFrame"),
      emotion_to_class=EMOTION_TO_CLASS, objective_column="Objective Class", report=report, only=only,
      excluded_emotions=EXCLUDED_EMOTIONS)


class Builder(manual_builder.ManualDownloadBuilder):
  """CASME II micro-expression clips with MEGC2019 3-class labels."""

  BUILDER_CONFIGS = _configs()
  DEFAULT_CONFIG_NAME = "cropped_128"
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  DESCRIPTION = ("CASME II spontaneous micro-expressions (Yan et al., PLoS ONE 2014), "
                 "3-class MEGC2019 labels.")
  HOMEPAGE = "http://casme.psych.ac.cn/casme/e2"
  CITATION = ("Yan W.-J. et al. CASME II: An improved spontaneous micro-expression "
              "database and the baseline evaluation. PLoS ONE 9(1), 2014.")

  def _plan(self, manual_dir: str, report: common.BuildReport) -> list[common.Sample]:
    return common.keep_labelled(plan_samples(manual_dir, self.builder_config.release, report),
                                report)
