"""TFDS builder for SMIC (HS, VIS and NIR; raw or cropped release).

SMIC has no coding sheet: the emotion comes from the folder the clip sits in
(`micro/negative|positive|surprise`), and each clip folder holds exactly the
micro-expression, so onset is the first stored frame, offset the last, and the
apex (SMIC has none) the midpoint `(onset + offset) // 2` of their frame
numbers, snapped to a frame on disk and recorded as `apex_source="midpoint"`.
Frames are ordered by the last number in their file name.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional

import tensorflow_datasets as tfds

from data_builders import common
from data_builders import manual_builder

MODALITY_FPS = {"HS": 100.0, "VIS": 25.0, "NIR": 25.0}
RELEASES = {"raw": "SMIC_all_raw", "cropped": "SMIC_all_cropped"}
EMOTION_FOLDERS = ("negative", "positive", "surprise")  # Already the 3 classes.
EMOTION_CODES = {"negative": "ne", "positive": "po", "surprise": "sur"}  # In clip names.
CLIP_NAME = re.compile(r"^s(\d+)_(ne|po|sur)_(\d+)$")

LAYOUT = """\
<manual_dir>/
  SMIC_all_raw/                       release "raw"
    HS/ VIS/ NIR/                     one folder per camera
      s1/micro/negative/s1_ne_01/*.bmp
      s1/micro/positive/s1_po_01/*.bmp
      s2/micro/surprise/s2_sur_02/*.bmp   (subject folders not zero-padded)
  SMIC_all_cropped/                   release "cropped", same nesting
Only the release and camera you build are needed; folders other than micro/
(e.g. non_micro/) are ignored."""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
SMIC is licensed: request it from the University of Oulu (Center for Machine
Vision and Signal Analysis), unpack it and arrange the manual directory as

{LAYOUT}

then run e.g.
  tfds build data_builders/smic --config=hs_raw_128 --manual_dir=<manual_dir>
See docs/datasets.md for expected counts and the repair rules.
"""


@dataclasses.dataclass(eq=False)
class SmicConfig(tfds.core.BuilderConfig):
  """SMIC camera, release and frame size.

  Attributes:
    modality: "HS" (100 fps), "VIS" or "NIR" (25 fps).
    release: "raw" (SMIC_all_raw) or "cropped" (SMIC_all_cropped).
    short_side: shorter image side in pixels after resizing (None: native).
    skip_unreadable: skip unrepairable samples (recorded in metadata).
  """
  modality: str = "HS"
  release: str = "raw"
  short_side: Optional[int] = 128
  skip_unreadable: bool = False


def _configs() -> list[SmicConfig]:
  return [SmicConfig(name=f"{modality.lower()}_{release}_{side}", modality=modality,
                     release=release, short_side=side,
                     description=f"SMIC-{modality} {folder} frames, short side {side} px")
          for modality in MODALITY_FPS for release, folder in RELEASES.items()
          for side in (128, 256)]


def plan_samples(
    manual_dir: str,
    release: str,
    modality: str,
    report: common.BuildReport,
    *,
    only: Optional[set[tuple[str, str]]] = None,
) -> list[common.Sample]:
  """Plans one `common.Sample` per clip folder under `<subject>/micro/<emotion>/`.

  Args:
    manual_dir: the manual directory (layout in `LAYOUT`).
    release: "raw" or "cropped".
    modality: "HS", "VIS" or "NIR".
    report: receives stray files and unrepairable samples.
    only: if given, plan just these `(subject folder, clip folder)` pairs,
      e.g. `("s1", "s1_ne_01")`; a requested pair not on disk is an
      unrepairable sample.

  Returns:
    Samples ordered by subject and clip name (labels from the folder).

  Raises:
    FileNotFoundError: manual dir or camera folder missing (with layout).
    common.SampleError: an unrepairable sample when skipping is off (this
      includes a clip folder whose name does not match its emotion folder).
  """
  if release not in RELEASES:
    raise ValueError(f"SMIC release must be one of {sorted(RELEASES)}, got {release!r}")
  if modality not in MODALITY_FPS:
    raise ValueError(f"SMIC modality must be one of {sorted(MODALITY_FPS)}, got {modality!r}")
  common.require_path(manual_dir, what="SMIC manual directory", layout=LAYOUT)
  camera_root = common.require_path(os.path.join(manual_dir, RELEASES[release], modality),
                                    what=f"SMIC {modality} folder of release {release!r}",
                                    layout=LAYOUT)
  report.add_stray(common.stray_files_in(camera_root))
  found = {}  # (subject, clip) -> (emotion, clip_dir)
  for subject in sorted(os.listdir(camera_root), key=common.natural_sort_key):
    micro = os.path.join(camera_root, subject, "micro")
    if not os.path.isdir(micro):
      continue
    for emotion in EMOTION_FOLDERS:
      emotion_dir = os.path.join(micro, emotion)
      report.add_stray(common.stray_files_in(emotion_dir))
      if not os.path.isdir(emotion_dir):
        continue
      for clip in sorted(os.listdir(emotion_dir), key=common.natural_sort_key):
        clip_dir = os.path.join(emotion_dir, clip)
        if not os.path.isdir(clip_dir):
          continue
        match = CLIP_NAME.match(clip)
        if match is None or match.group(2) != EMOTION_CODES[emotion]:
          # A misfiled clip would get the wrong label: never guess.
          report.fail_or_skip(f"{subject}/{clip}", common.SampleError(
              f"clip folder {clip_dir}: name should be "
              f"s<k>_{EMOTION_CODES[emotion]}_<nn> to match its emotion folder {emotion!r}"))
          continue
        found[(subject, clip)] = (emotion, clip_dir)
  wanted = sorted(found if only is None else only,
                  key=lambda key: (common.natural_sort_key(key[0]), common.natural_sort_key(key[1])))
  samples = []
  for subject, clip in wanted:
    clip_id = f"{subject}/{clip}"
    if (subject, clip) not in found:
      report.fail_or_skip(clip_id, common.SampleError(
          f"no clip folder {subject}/micro/<emotion>/{clip} under {camera_root}"))
      continue
    emotion, clip_dir = found[(subject, clip)]
    try:
      listing = common.list_frames(clip_dir)
      located = common.locate_sample(listing.numbers, listing.numbers[0], None,
                                     listing.numbers[-1], where=f"smic {clip_id}",
                                     has_apex=False, on_disk=listing.on_disk)
      repairs = list(located.repairs) + common.gap_repairs(
          listing, listing.numbers[0], listing.numbers[-1], listing.numbers[0],
          listing.numbers[-1])
    except common.SampleError as error:
      report.fail_or_skip(clip_id, error)
      continue
    report.add_stray(listing.stray)
    samples.append(common.Sample(
        clip_id=clip_id,
        frame_paths=listing.paths,
        fields=dict(
            label=emotion, subject=subject, clip_id=clip_id,
            dataset=f"smic_{modality.lower()}", fps=MODALITY_FPS[modality],
            onset=located.onset, apex=located.apex, offset=located.offset,
            action_units="", emotion=emotion, apex_source=located.apex_source,
            objective_class=-1, first_frame_number=listing.numbers[0]),
        repairs=repairs, flags=located.flags))
  return samples


class Builder(manual_builder.ManualDownloadBuilder):
  """SMIC micro-expression clips (3 classes from the folder names)."""

  BUILDER_CONFIGS = _configs()
  DEFAULT_CONFIG_NAME = "hs_raw_128"
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  DESCRIPTION = ("SMIC spontaneous micro-expressions (Li et al., FG 2013): negative, "
                 "positive, surprise; apex = onset/offset midpoint.")
  HOMEPAGE = ("https://www.oulu.fi/en/university/faculties-and-units/"
              "faculty-information-technology-and-electrical-engineering/"
              "center-machine-vision-and-signal-analysis")
  CITATION = ("Li X., Pfister T., Huang X., Zhao G., Pietikainen M. A spontaneous "
              "micro-expression database: Inducement, collection and baseline. FG 2013.")

  def _report_name(self) -> str:
    return f"smic_{self.builder_config.modality.lower()}"

  def _plan(self, manual_dir: str, report: common.BuildReport) -> list[common.Sample]:
    config = self.builder_config
    return plan_samples(manual_dir, config.release, config.modality, report)
