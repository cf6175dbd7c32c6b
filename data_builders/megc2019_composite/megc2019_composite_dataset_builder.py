"""TFDS builder for the MEGC2019 composite benchmark (CASME II + SAMM + SMIC-HS).

The sample list is the official challenge file `megc2019_composite_3class.csv`
(shipped next to this module; no header; `db, subject, filename, label` with
0 negative, 1 positive, 2 surprise): 442 samples of 68 subjects. Labels come
from that list. Frames and onset/apex/offset come from the three datasets'
own builders (`data_builders.casme2/samm/smic`), so the repair rules are the
same. The list writes IDs differently from the folders; this builder maps:

* CASME II: `sub01, EP02_01f` -> `sub01/EP02_01f` (unchanged).
* SAMM: subject `6` -> folder `006`; filename `006_1_2` unchanged.
* SMIC: `s01, s01_ne_01` -> folder `s1/micro/negative/s1_ne_01` (no padding).

Subjects keep the folder spelling (`sub01`, `006`, `s1`), which is unique
across the three datasets, so LOSO over `subject` gives the 68 folds.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
import re
from typing import Optional

import tensorflow_datasets as tfds

from data_builders import common
from data_builders import manual_builder
from data_builders.casme2 import casme2_dataset_builder as casme2
from data_builders.samm import samm_dataset_builder as samm
from data_builders.smic import smic_dataset_builder as smic
from mer_jax import schema

OFFICIAL_LIST = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             "megc2019_composite_3class.csv")
DATASETS = ("casme2", "samm", "smic")

# release -> per-dataset release names
RELEASES = {
    "cropped": {"casme2": "cropped", "samm": "cropped", "smic": "cropped"},
    "raw": {"casme2": "raw", "samm": "full", "smic": "raw"},
}

LAYOUT = """\
<manual_dir>/
  casme2/   the CASME II manual directory (see data_builders/casme2):
            CASME2-coding-20140508.xlsx, Cropped/ (release "cropped") or
            CASME2_RAW_selected/ (release "raw")
  samm/     the SAMM manual directory (see data_builders/samm):
            SAMM_Micro_FACS_Codes_v2.xlsx, SAMM_CROP/ ("cropped") or SAMM/ ("raw")
  smic/     the SMIC manual directory (see data_builders/smic):
            SMIC_all_cropped/HS/ ("cropped") or SMIC_all_raw/HS/ ("raw")"""

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
The composite needs CASME II, SAMM and SMIC (all licensed; see their builders
for where to request them). Arrange the manual directory as

{LAYOUT}

(symbolic links to existing manual directories work), then run e.g.
  tfds build data_builders/megc2019_composite --config=cropped_128 --manual_dir=<manual_dir>
Expected: 442 samples, 68 subjects, 250 negative / 109 positive / 83 surprise.
The SMIC cropped release lacks the listed clip s18_sur_03: the cropped_*
configs then fail naming it unless built with skip_unreadable=True (441
samples, the skip recorded in info.metadata["skipped"]); raw_* has it.
"""


@dataclasses.dataclass(eq=False)
class CompositeConfig(tfds.core.BuilderConfig):
  """Composite release and frame size.

  Attributes:
    release: "cropped" (Cropped, SAMM_CROP, SMIC_all_cropped) or "raw"
      (CASME2_RAW_selected, SAMM, SMIC_all_raw).
    short_side: shorter image side in pixels after resizing (None: native).
    skip_unreadable: skip unrepairable samples (recorded in metadata).
  """
  release: str = "cropped"
  short_side: Optional[int] = 128
  skip_unreadable: bool = False


def _configs() -> list[CompositeConfig]:
  return [CompositeConfig(name=f"{release}_{side}", release=release, short_side=side,
                          description=f"{release} frames of the 3 datasets, short side {side} px")
          for release in RELEASES for side in (128, 256)]


@dataclasses.dataclass(frozen=True)
class ListedSample:
  """One row of the official list, with the folder spelling of its IDs."""
  db: str
  subject: str   # as in the list (`sub01`, `6`, `s01`)
  filename: str  # as in the list
  label: str     # class name
  folder_subject: str
  folder_clip: str
  line: int


def folder_ids(db: str, subject: str, filename: str) -> tuple[str, str]:
  """Maps an official-list ID to the dataset's (subject folder, clip folder).

  Raises:
    ValueError: an ID that does not follow the dataset's naming.
  """
  if db == "casme2":
    return casme2.subject_folder(subject), filename
  if db == "samm":
    return samm.subject_folder(subject), filename
  if db == "smic":
    match = re.fullmatch(r"s(\d+)_(ne|po|sur)_(\d+)", filename)
    subject_match = re.fullmatch(r"s(\d+)", subject)
    if match is None or subject_match is None:
      raise ValueError(f"SMIC id {subject!r}, {filename!r} is not s<k>, s<k>_<ne|po|sur>_<nn>")
    k = int(match.group(1))
    if k != int(subject_match.group(1)):
      raise ValueError(f"SMIC filename {filename!r} does not belong to subject {subject!r}")
    return f"s{k}", f"s{k}_{match.group(2)}_{match.group(3)}"
  raise ValueError(f"unknown db {db!r}, expected one of {DATASETS}")


def read_official_list(path: str = OFFICIAL_LIST) -> list[ListedSample]:
  """Parses the official composite list.

  Raises:
    FileNotFoundError: `path` missing.
    common.AnnotationError: a malformed line (named by number).
  """
  samples = []
  with open(path, newline="") as handle:
    for line, row in enumerate(csv.reader(handle), start=1):
      if not row or not "".join(row).strip():
        continue
      try:
        if len(row) != 4:
          raise ValueError(f"expected 4 fields db,subject,filename,label, got {len(row)}")
        db, subject, filename, label = (field.strip() for field in row)
        if label not in ("0", "1", "2"):
          raise ValueError(f"label {label!r} is not 0, 1 or 2")
        folder_subject, folder_clip = folder_ids(db, subject, filename)
      except ValueError as error:
        raise common.AnnotationError(f"{path} line {line}: {error}") from None
      samples.append(ListedSample(db, subject, filename, schema.CLASS_NAMES[int(label)],
                                  folder_subject, folder_clip, line))
  return samples


def plan_samples(manual_dir: str, release: str, report: common.BuildReport) -> list[common.Sample]:
  """Plans the listed samples from the three datasets' manual directories.

  Raises:
    FileNotFoundError: a dataset folder or annotation file missing (layout).
    common.SampleError: a listed sample missing from its dataset or
      unrepairable, when skipping is off.
  """
  if release not in RELEASES:
    raise ValueError(f"composite release must be one of {sorted(RELEASES)}, got {release!r}")
  common.require_path(manual_dir, what="MEGC2019 composite manual directory", layout=LAYOUT)
  listed = read_official_list()
  by_db = collections.defaultdict(dict)
  for item in listed:
    by_db[item.db][(item.folder_subject, item.folder_clip)] = item
  planned = {}
  for db in DATASETS:
    db_dir = common.require_path(os.path.join(manual_dir, db),
                                 what=f"{db} manual directory of the composite", layout=LAYOUT)
    db_report = common.BuildReport(db, release, skip_unreadable=report.skip_unreadable)
    wanted = set(by_db[db])
    db_release = RELEASES[release][db]
    if db == "casme2":
      samples = casme2.plan_samples(db_dir, db_release, db_report, only=wanted)
    elif db == "samm":
      samples = samm.plan_samples(db_dir, db_release, db_report, only=wanted)
    else:
      samples = smic.plan_samples(db_dir, db_release, "HS", db_report, only=wanted)
    report.merge(db_report, prefix=f"{db}/")
    for sample in samples:
      planned[(db, sample.fields["subject"], sample.clip_id.split("/", 1)[1])] = sample
  result = []
  skipped = set(report.skipped_ids)
  for item in listed:
    key = (item.db, item.folder_subject, item.folder_clip)
    clip_id = f"{item.db}/{item.folder_subject}/{item.folder_clip}"
    sample = planned.get(key)
    if sample is None:
      if clip_id not in skipped:
        report.fail_or_skip(clip_id, common.SampleError(
            f"official list line {item.line} ({item.db},{item.subject},{item.filename}) has no "
            f"row in the {item.db} annotation / no clip folder under {manual_dir}/{item.db}"))
      continue
    fields = dict(sample.fields)
    flags = list(sample.flags)
    native = fields["label"]
    if native != item.label:
      flags.append(f"official label {item.label} differs from native emotion "
                   f"{fields['emotion']!r} ({native})")
    fields.update(label=item.label, clip_id=clip_id, dataset=item.db,
                  megc_subject=item.subject, megc_filename=item.filename)
    result.append(dataclasses.replace(sample, clip_id=clip_id, fields=fields, flags=flags))
  return result


class Builder(manual_builder.ManualDownloadBuilder):
  """MEGC2019 composite: 442 samples, 68 subjects, 3 classes."""

  BUILDER_CONFIGS = _configs()
  DEFAULT_CONFIG_NAME = "cropped_128"
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  DESCRIPTION = ("MEGC2019 composite micro-expression benchmark (See et al., FG 2019): "
                 "CASME II + SAMM + SMIC-HS, 3 classes, LOSO over 68 subjects.")
  HOMEPAGE = "https://facial-micro-expressiongc.github.io/MEGC2019/"
  CITATION = ("See J., Yap M. H., Li J., Hong X., Wang S.-J. MEGC 2019 - the second "
              "facial micro-expressions grand challenge. FG 2019.")

  def _extra_features(self):
    return {**super()._extra_features(), "megc_subject": tfds.features.Text(),
            "megc_filename": tfds.features.Text()}

  def _plan(self, manual_dir: str, report: common.BuildReport) -> list[common.Sample]:
    return plan_samples(manual_dir, self.builder_config.release, report)
