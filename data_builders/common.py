"""Helpers shared by the real micro-expression dataset builders.

The builders for CASME II, SAMM, SMIC, CAS(ME)^3 and the MEGC2019 composite all
do the same things: list the frames of a clip folder, map the dataset's own
frame numbers to 0-based indices, repair known annotation faults by stated
rules, read `.xlsx` annotation sheets, decode and resize frames, and report
what was built. This module holds that shared machinery; each builder module
only knows its dataset's layout and columns.

Repair rules (applied by `locate_sample`, recorded in `apex_source` and in the
build summary; nothing is repaired silently):

* annotated onset/offset frame missing on disk: the nearest frame on disk
  inside [onset, offset] is used (onset moves later, offset earlier).
* apex not a number (CASME II `/`) or outside [onset, offset] (SAMM):
  apex = midpoint (onset + offset) // 2 of the annotated frame numbers, snapped
  to the nearest frame on disk, `apex_source="midpoint_repaired"`.
* annotated apex frame missing on disk: nearest frame on disk inside the
  clip's [onset, offset], `apex_source="nearest_frame"`.
* no apex in the dataset (SMIC): midpoint, `apex_source="midpoint"`.
* onset == apex (CAS(ME)^3, lost first frames): kept as annotated (the schema
  allows it) and flagged in the summary under `flags`, so users of onset-apex
  optical flow can drop those samples.
* non-image files (`.lnk`, `Thumbs.db`, ...) in subject or clip folders: ignored
  and listed in the summary under `stray_files`.

Unrepairable samples (clip folder missing, no frame on disk inside
[onset, offset], onset > offset, unreadable image file, unparseable onset or
offset) raise `SampleError` naming the sample and the file, unless the builder
runs with `skip_unreadable=True`, in which case the sample is skipped and its
id and reason are stored in `info.metadata["skipped"]`.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from absl import logging
import numpy as np

from mer_jax import schema

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})

# Files the datasets' archives are known to carry next to frames (Windows
# shortcuts and thumbnail caches, macOS folder metadata).
_KNOWN_STRAY_NAMES = frozenset({"thumbs.db", ".ds_store", "desktop.ini"})


class SampleError(ValueError):
  """A sample that no stated rule can repair (the message names the file)."""


class AnnotationError(ValueError):
  """An annotation file that cannot be read as documented."""


# ----------------------------------------------------------------------------
# Layout checks and frame listing.


def require_path(path: os.PathLike | str, *, what: str, layout: str) -> str:
  """Returns `path` as a string if it exists, else raises with the layout.

  Args:
    path: file or folder the builder needs.
    what: short description used in the message ("CASME II annotation file").
    layout: the expected manual-dir tree, shown to the user.

  Raises:
    FileNotFoundError: naming `path` and showing `layout`.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{what} not found: {path}\nExpected layout of the manual directory:\n{layout}")
  return path


def natural_sort_key(text: str) -> tuple:
  """Sort key that orders embedded numbers numerically (`img9` < `img10`)."""
  return tuple(int(part) if part.isdigit() else part.lower()
               for part in re.split(r"(\d+)", text))


def frame_number(filename: str) -> int:
  """The frame number of an image file: the last run of digits in its stem.

  `img46.jpg` -> 46, `reg_img46.jpg` -> 46, `006_05562.jpg` -> 5562,
  `image0134106.bmp` -> 134106.

  Raises:
    ValueError: naming the file when its stem has no digits.
  """
  stem = os.path.splitext(os.path.basename(filename))[0]
  digits = re.findall(r"\d+", stem)
  if not digits:
    raise ValueError(f"frame file {filename!r} has no frame number in its name")
  return int(digits[-1])


def is_image_file(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def is_known_stray_file(name: str) -> bool:
  """True for files the archives are known to carry that are not frames."""
  lowered = name.lower()
  return lowered in _KNOWN_STRAY_NAMES or lowered.endswith(".lnk")


@dataclasses.dataclass(frozen=True)
class FrameListing:
  """The frames of one clip folder, in temporal order.

  Attributes:
    numbers: the dataset's frame numbers, strictly increasing.
    paths: the image file of each number, same order.
    stray: paths of non-image files found in the folder (ignored).
  """
  numbers: tuple[int, ...]
  paths: tuple[str, ...]
  stray: tuple[str, ...]


def list_frames(clip_dir: os.PathLike | str) -> FrameListing:
  """Lists the image frames of `clip_dir`, sorted by frame number.

  Raises:
    SampleError: the folder is missing, holds no image, or two files carry the
      same frame number.
  """
  clip_dir = os.fspath(clip_dir)
  if not os.path.isdir(clip_dir):
    raise SampleError(f"clip folder {clip_dir} does not exist")
  numbered: dict[int, str] = {}
  stray = []
  for name in sorted(os.listdir(clip_dir), key=natural_sort_key):
    path = os.path.join(clip_dir, name)
    if os.path.isdir(path):
      continue
    if not is_image_file(name):
      stray.append(path)
      continue
    try:
      number = frame_number(name)
    except ValueError:
      stray.append(path)
      continue
    if number in numbered:
      raise SampleError(
          f"clip folder {clip_dir}: files {os.path.basename(numbered[number])!r} and "
          f"{name!r} both carry frame number {number}")
    numbered[number] = path
  if not numbered:
    raise SampleError(f"clip folder {clip_dir} holds no image frames ({sorted(IMAGE_SUFFIXES)})")
  numbers = tuple(sorted(numbered))
  return FrameListing(numbers, tuple(numbered[n] for n in numbers), tuple(stray))


def stray_files_in(folder: os.PathLike | str) -> list[str]:
  """Non-folder, non-image entries directly inside `folder` (e.g. `.lnk`)."""
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    return []
  return [os.path.join(folder, name) for name in sorted(os.listdir(folder))
          if not os.path.isdir(os.path.join(folder, name)) and not is_image_file(name)]


# ----------------------------------------------------------------------------
# Frame numbers -> indices, with the repair rules.


def parse_frame_value(value: Any) -> Optional[int]:
  """An annotated frame number, or None if it is no number (`/`, empty).

  Accepts ints, integral floats (`46.0`, as spreadsheets store numbers) and
  numeric strings.
  """
  if value is None or isinstance(value, bool):
    return None
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, float):
    return int(value) if value.is_integer() else None
  text = str(value).strip()
  if re.fullmatch(r"-?\d+(\.0+)?", text):
    return int(float(text))
  return None


@dataclasses.dataclass(frozen=True)
class Located:
  """Onset/apex/offset as 0-based indices into a frame list, plus repairs.

  Attributes:
    onset, apex, offset: indices into the frame list the function was given.
    apex_source: one of `schema.APEX_SOURCES`.
    repairs: human-readable description of every repair made.
    flags: notable but unrepaired facts (`onset_equals_apex`).
  """
  onset: int
  apex: int
  offset: int
  apex_source: str
  repairs: tuple[str, ...] = ()
  flags: tuple[str, ...] = ()


def _nearest(numbers: Sequence[int], target: int) -> int:
  # Ties go to the earlier frame so the rule is deterministic.
  return min(numbers, key=lambda n: (abs(n - target), n))


def locate_sample(
    frame_numbers: Sequence[int],
    onset: Any,
    apex: Any,
    offset: Any,
    *,
    where: str,
    has_apex: bool = True,
) -> Located:
  """Maps annotated frame numbers to indices into `frame_numbers`.

  Args:
    frame_numbers: the dataset frame numbers on disk, strictly increasing
      (e.g. `FrameListing.numbers`, or a window of it).
    onset, apex, offset: annotated frame numbers (ints, floats, strings or
      `/`); `apex` is ignored when `has_apex` is False.
    where: sample name used in messages and repairs (`casme2 sub04/EP12_01f`).
    has_apex: False for datasets without an apex annotation (SMIC): the apex
      becomes the midpoint with `apex_source="midpoint"`.

  Returns:
    `Located` with indices into `frame_numbers` (see the module docstring for
    the rules).

  Raises:
    SampleError: onset/offset unparseable, onset > offset, or no frame on disk
      inside [onset, offset].
  """
  onset_n, offset_n = parse_frame_value(onset), parse_frame_value(offset)
  if onset_n is None or offset_n is None:
    raise SampleError(f"{where}: onset {onset!r} / offset {offset!r} is not a frame number")
  if onset_n > offset_n:
    raise SampleError(f"{where}: onset frame {onset_n} is after offset frame {offset_n}")
  inside = [n for n in frame_numbers if onset_n <= n <= offset_n]
  if not inside:
    raise SampleError(
        f"{where}: no frame on disk inside annotated onset..offset {onset_n}..{offset_n} "
        f"(frames on disk: {frame_numbers[0]}..{frame_numbers[-1]})")
  repairs, flags = [], []
  first, last = inside[0], inside[-1]
  if first != onset_n:
    repairs.append(f"onset frame {onset_n} missing on disk: used frame {first}")
  if last != offset_n:
    repairs.append(f"offset frame {offset_n} missing on disk: used frame {last}")
  midpoint = (onset_n + offset_n) // 2
  apex_n = parse_frame_value(apex) if has_apex else None
  if not has_apex:
    apex_source, apex_frame = "midpoint", _nearest(inside, midpoint)
  elif apex_n is None:
    apex_source, apex_frame = "midpoint_repaired", _nearest(inside, midpoint)
    repairs.append(f"apex {apex!r} is not a frame number: used midpoint frame {apex_frame}")
  elif not onset_n <= apex_n <= offset_n:
    apex_source, apex_frame = "midpoint_repaired", _nearest(inside, midpoint)
    repairs.append(f"apex frame {apex_n} outside onset..offset {onset_n}..{offset_n}: "
                   f"used midpoint frame {apex_frame}")
  elif apex_n not in inside:
    apex_source, apex_frame = "nearest_frame", _nearest(inside, apex_n)
    repairs.append(f"apex frame {apex_n} missing on disk: used nearest frame {apex_frame}")
  else:
    apex_source, apex_frame = "annotated", apex_n
    if apex_n == onset_n:
      flags.append("onset_equals_apex")
  index = {n: i for i, n in enumerate(frame_numbers)}
  return Located(index[first], index[apex_frame], index[last], apex_source,
                 tuple(repairs), tuple(flags))


# ----------------------------------------------------------------------------
# Spreadsheets.


def _normalise_header(value: Any) -> str:
  return " ".join(str(value).split()).lower() if value is not None else ""


def read_xlsx_rows(
    path: os.PathLike | str,
    *,
    required_columns: Sequence[str],
    header_row: int = 1,
) -> list[dict[str, Any]]:
  """Reads the first sheet of an `.xlsx` file as one dict per data row.

  Column names are matched case- and whitespace-insensitively; the returned
  dicts are keyed by the names in `required_columns` (other columns are kept
  under their header text). Rows whose cells are all empty are dropped.
  Each dict also has `"_row"`: its 1-based row number in the sheet.

  Args:
    path: the `.xlsx` file.
    required_columns: header names that must be present.
    header_row: 1-based row of the header (SAMM: 14, after 13 preamble rows).

  Raises:
    AnnotationError: the file cannot be opened as xlsx, or its header row
      lacks a required column (the message names file, row and columns).
  """
  import openpyxl  # Imported here: only builders reading xlsx need it.

  path = os.fspath(path)
  name = os.path.basename(path)
  try:
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
  except Exception as error:  # openpyxl raises several unrelated types.
    raise AnnotationError(f"{path}: cannot be read as an .xlsx workbook ({error})") from error
  try:
    sheet = workbook.worksheets[0]
    rows = sheet.iter_rows(min_row=header_row, values_only=True)
    header = next(rows, None)
    if header is None:
      raise AnnotationError(f"{name}: sheet {sheet.title!r} has no row {header_row} (header)")
    positions = {}
    for column, value in enumerate(header):
      if value is not None and _normalise_header(value) not in positions:
        positions[_normalise_header(value)] = column
    missing = [c for c in required_columns if _normalise_header(c) not in positions]
    if missing:
      found = [str(v) for v in header if v is not None]
      raise AnnotationError(
          f"{name} ({path}): header row {header_row} lacks column(s) {missing}; "
          f"found {found}; expected at least {list(required_columns)}")
    keys = {positions[_normalise_header(c)]: c for c in required_columns}
    for column, value in enumerate(header):
      if value is not None and column not in keys:
        keys[column] = str(value).strip()
    records = []
    for offset, row in enumerate(rows, start=1):
      if row is None or all(cell is None or str(cell).strip() == "" for cell in row):
        continue
      record = {key: (row[column] if column < len(row) else None)
                for column, key in keys.items()}
      record["_row"] = header_row + offset
      records.append(record)
    return records
  finally:
    workbook.close()


def cell_text(value: Any) -> str:
  """A spreadsheet cell as stripped text (`None` -> "", `4.0` -> "4")."""
  if value is None:
    return ""
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value).strip()


# ----------------------------------------------------------------------------
# Frame decoding.


def resize_short_side(image: np.ndarray, short_side: Optional[int], *,
                      interpolation: Optional[int] = None) -> np.ndarray:
  """Resizes `image` (H, W[, C]) so that min(H, W) == `short_side`.

  Aspect ratio is kept (the long side is rounded). `None` returns the image
  unchanged. Downscaling uses area averaging (no aliasing), upscaling bilinear.
  """
  import cv2

  if short_side is None:
    return image
  height, width = image.shape[:2]
  scale = short_side / min(height, width)
  if scale == 1:
    return image
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  if interpolation is None:
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
  return cv2.resize(image, size, interpolation=interpolation)


def read_rgb_frame(path: str) -> np.ndarray:
  """Decodes an image file to uint8 RGB (H, W, 3); grey images become 3 channels.

  Raises:
    SampleError: naming `path` when the file is empty or cannot be decoded.
  """
  import cv2

  data = np.fromfile(path, dtype=np.uint8)
  image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
  if image is None:
    raise SampleError(f"frame {path} cannot be decoded as an image")
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_depth_frame(path: str) -> np.ndarray:
  """Decodes a depth PNG to (H, W, 1) keeping its dtype (uint16 for CAS(ME)^3).

  Raises:
    SampleError: naming `path` when it cannot be decoded.
  """
  import cv2

  data = np.fromfile(path, dtype=np.uint8)
  image = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH) if data.size else None
  if image is None:
    raise SampleError(f"depth frame {path} cannot be decoded as an image")
  if image.dtype == np.uint8:
    image = image.astype(np.uint16)
  return image[..., None]


def load_clip(paths: Sequence[str], short_side: Optional[int], *,
              depth: bool = False) -> tuple[np.ndarray, bool]:
  """Decodes and resizes the frames of one clip to a common size.

  Args:
    paths: image files in temporal order.
    short_side: target length in pixels of the shorter image side, or None.
    depth: decode as single-channel depth (nearest-neighbour resizing, since
      averaging depths across an object boundary invents surfaces).

  Returns:
    (frames, resized_mismatch): frames `(T, H, W, 3)` uint8 (or `(T, H, W, 1)`
    uint16 for depth) and whether some frames had a different native size
    than the first and were resized to it.

  Raises:
    SampleError: naming the first unreadable file.
  """
  import cv2

  reader = read_depth_frame if depth else read_rgb_frame
  interpolation = cv2.INTER_NEAREST if depth else None
  frames, mismatch, size = [], False, None
  for path in paths:
    image = resize_short_side(reader(path), short_side, interpolation=interpolation)
    if size is None:
      size = image.shape[:2]
    elif image.shape[:2] != size:
      # Video records need one frame size per clip.
      mismatch = True
      image = cv2.resize(image, (size[1], size[0]),
                         interpolation=interpolation or cv2.INTER_AREA)
    if image.ndim == 2:
      image = image[..., None]
    frames.append(image)
  return np.stack(frames), mismatch


# ----------------------------------------------------------------------------
# Samples, generation and the build report.


@dataclasses.dataclass
class Sample:
  """One planned example: where its frames are and all non-frame fields.

  Attributes:
    clip_id: unique key within the built dataset.
    frame_paths: frame files in temporal order (the stored clip).
    fields: every schema field except `frames` (label as a class name).
    depth_paths: depth files aligned with `frame_paths`, or None.
    repairs: repairs made while planning (added to the report when emitted).
    flags: flags raised while planning.
  """
  clip_id: str
  frame_paths: Sequence[str]
  fields: dict[str, Any]
  depth_paths: Optional[Sequence[str]] = None
  repairs: Sequence[str] = ()
  flags: Sequence[str] = ()


def plan_sheet_samples(
    rows: Iterable[Mapping[str, Any]], *, sheet_name: str, frames_root: str, dataset: str,
    fps: float, subject_folder: Callable[[Any], str], frame_columns: tuple[str, str, str],
    emotion_to_class: Mapping[str, str], objective_column: Optional[str],
    report: "BuildReport", only: Optional[set[tuple[str, str]]] = None) -> list[Sample]:
  """One `Sample` per annotation-sheet row (the CASME II / SAMM layout).

  Args:
    rows: sheet rows (dicts with `_row`, "Subject", "Filename", "Estimated Emotion",
      "Action Units" and the `frame_columns`).
    sheet_name: the sheet's file name, for messages.
    frames_root: folder holding `<subject folder>/<Filename>/` frame folders.
    dataset, fps: the schema fields of every clip.
    subject_folder: maps the sheet's Subject cell to the subject folder name.
    frame_columns: the onset, apex and offset column names.
    emotion_to_class: native emotion (lower case) -> 3-class name.
    objective_column: the column holding the objective class, if the sheet has one.
    report: receives stray files and unrepairable samples.
    only: if given, plan just these `(subject folder, filename)` pairs.

  Raises:
    AnnotationError: a bad Subject cell or two rows describing one clip.
  """
  samples, seen = [], {}
  for row in rows:
    try:
      subject = subject_folder(row["Subject"])
    except ValueError as error:
      raise AnnotationError(f"{sheet_name} row {row['_row']}: {error}") from None
    filename = cell_text(row["Filename"])
    if only is not None and (subject, filename) not in only:
      continue
    clip_id = f"{subject}/{filename}"
    if clip_id in seen:
      raise AnnotationError(
          f"{sheet_name}: rows {seen[clip_id]} and {row['_row']} both describe {clip_id}")
    seen[clip_id] = row["_row"]
    report.add_stray(stray_files_in(os.path.join(frames_root, subject)))
    try:
      listing = list_frames(os.path.join(frames_root, subject, filename))
      located = locate_sample(
          listing.numbers, *(row[c] for c in frame_columns),
          where=f"{dataset} {clip_id} ({sheet_name} row {row['_row']})")
    except SampleError as error:
      report.fail_or_skip(clip_id, error)
      continue
    report.add_stray(listing.stray)
    emotion = cell_text(row["Estimated Emotion"]).lower()
    objective = parse_frame_value(row.get(objective_column)) if objective_column else None
    samples.append(Sample(
        clip_id=clip_id,
        frame_paths=listing.paths,
        fields=dict(
            label=map_emotion(emotion, emotion_to_class),
            subject=subject, clip_id=clip_id, dataset=dataset, fps=fps,
            onset=located.onset, apex=located.apex, offset=located.offset,
            action_units=cell_text(row["Action Units"]), emotion=emotion,
            apex_source=located.apex_source,
            objective_class=-1 if objective is None else objective,
            first_frame_number=listing.numbers[0]),
        repairs=located.repairs, flags=located.flags))
  return samples


class BuildReport:
  """Collects what a build did: counts, repairs, exclusions, skips.

  `as_metadata()` is stored in `info.metadata` (JSON) and `log()` prints it
  through absl logging.
  """

  def __init__(self, dataset: str, config: str, *, skip_unreadable: bool):
    self.dataset = dataset
    self.config = config
    self.skip_unreadable = skip_unreadable
    self.per_class: collections.Counter = collections.Counter()
    self.per_subject: collections.Counter = collections.Counter()
    self.per_dataset: collections.Counter = collections.Counter()
    self.repairs: list[dict[str, str]] = []
    self.flags: list[dict[str, str]] = []
    self.excluded: list[dict[str, str]] = []
    self.skipped: list[dict[str, str]] = []
    self.stray_files: list[str] = []

  def fail_or_skip(self, clip_id: str, error: Exception) -> None:
    """Records an unrepairable sample, or raises when skipping is off.

    Raises:
      SampleError: when `skip_unreadable` is False; names the sample and file.
    """
    if not self.skip_unreadable:
      raise SampleError(
          f"{self.dataset} sample {clip_id} cannot be built: {error}. Fix or re-download it, "
          "or build with skip_unreadable=True to skip it (recorded in "
          "info.metadata['skipped'])") from error
    logging.warning("%s: skipping sample %s: %s", self.dataset, clip_id, error)
    self.skipped.append({"clip_id": clip_id, "reason": str(error)})

  def exclude(self, clip_id: str, reason: str) -> None:
    """Records a sample left out by a stated rule (e.g. emotion 'others')."""
    self.excluded.append({"clip_id": clip_id, "reason": reason})

  def add_stray(self, paths: Iterable[str]) -> None:
    for path in paths:
      if path not in self.stray_files:
        self.stray_files.append(path)

  def add_emitted(self, sample: Sample) -> None:
    fields = sample.fields
    self.per_class[fields["label"]] += 1
    self.per_subject[fields["subject"]] += 1
    self.per_dataset[fields["dataset"]] += 1
    for repair in sample.repairs:
      self.repairs.append({"clip_id": sample.clip_id, "repair": repair})
    for flag in sample.flags:
      self.flags.append({"clip_id": sample.clip_id, "flag": flag})

  def merge(self, other: "BuildReport", *, prefix: str = "") -> None:
    """Adds `other`'s skips, exclusions and stray files (clip ids prefixed)."""
    self.skipped += [dict(entry, clip_id=prefix + entry["clip_id"]) for entry in other.skipped]
    self.excluded += [dict(entry, clip_id=prefix + entry["clip_id"]) for entry in other.excluded]
    self.add_stray(other.stray_files)

  @property
  def skipped_ids(self) -> list[str]:
    return [entry["clip_id"] for entry in self.skipped]

  def as_metadata(self) -> dict[str, Any]:
    """JSON-serialisable summary (stored as `info.metadata`)."""
    excluded_counts = collections.Counter(entry["reason"] for entry in self.excluded)
    return {
        "dataset": self.dataset,
        "config": self.config,
        "num_examples": sum(self.per_class.values()),
        "num_subjects": len(self.per_subject),
        "per_class": {name: self.per_class.get(name, 0) for name in schema.CLASS_NAMES},
        "per_dataset": dict(sorted(self.per_dataset.items())),
        "per_subject": dict(sorted(self.per_subject.items(), key=lambda kv: natural_sort_key(kv[0]))),
        "repairs": list(self.repairs),
        "flags": list(self.flags),
        "excluded": list(self.excluded),
        "excluded_counts": dict(excluded_counts),
        "skipped": list(self.skipped),
        "skipped_ids": self.skipped_ids,
        "stray_files": list(self.stray_files),
    }

  def log(self) -> None:
    summary = self.as_metadata()
    logging.info("%s/%s build summary: %d examples, %d subjects, per class %s",
                 self.dataset, self.config, summary["num_examples"], summary["num_subjects"],
                 summary["per_class"])
    logging.info("%s per subject: %s", self.dataset, summary["per_subject"])
    for entry in self.repairs:
      logging.info("%s repair %s: %s", self.dataset, entry["clip_id"], entry["repair"])
    for entry in self.flags:
      logging.info("%s flag %s: %s", self.dataset, entry["clip_id"], entry["flag"])
    for reason, count in summary["excluded_counts"].items():
      logging.info("%s excluded %d samples: %s", self.dataset, count, reason)
    for entry in self.skipped:
      logging.warning("%s skipped %s: %s", self.dataset, entry["clip_id"], entry["reason"])
    for path in self.stray_files:
      logging.info("%s ignored stray file %s", self.dataset, path)


def generate_examples(
    samples: Iterable[Sample],
    *,
    short_side: Optional[int],
    report: BuildReport,
    metadata: Optional[dict] = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
  """Decodes each planned sample and yields `(clip_id, example)` for TFDS.

  Frames are resized to `short_side`; every example is checked with
  `schema.validate_example`. Unreadable samples go through
  `report.fail_or_skip`. When the iteration ends the summary is logged and,
  if `metadata` (the builder's `info.metadata`) is given, written into it.
  """
  for sample in samples:
    where = f"{report.dataset} {sample.clip_id}"
    try:
      frames, mismatch = load_clip(sample.frame_paths, short_side)
      depth = None
      if sample.depth_paths is not None:
        depth, _ = load_clip(sample.depth_paths, short_side, depth=True)
        if depth.shape[:3] != frames.shape[:3]:
          raise SampleError(
              f"depth frames {depth.shape[:3]} do not match colour frames {frames.shape[:3]} "
              f"(first depth file {sample.depth_paths[0]})")
    except SampleError as error:
      report.fail_or_skip(sample.clip_id, error)
      continue
    if mismatch:
      sample.repairs = list(sample.repairs) + [
          "frames of different native sizes: resized to the first frame's size"]
    example = dict(sample.fields)
    example["frames"] = frames
    if depth is not None:
      example["depth"] = depth
    schema.validate_example(example, where=where)
    report.add_emitted(sample)
    yield sample.clip_id, example
  report.log()
  if metadata is not None:
    metadata.update(report.as_metadata())


def keep_labelled(samples: Iterable[Sample], report: BuildReport) -> list[Sample]:
  """Drops samples whose `fields["label"]` is None, recording each exclusion.

  The stated rule: a sample whose native emotion maps to no MEGC2019 class
  ('others', ...) is excluded and counted in `info.metadata["excluded"]`.
  """
  kept = []
  for sample in samples:
    if sample.fields["label"] is None:
      report.exclude(sample.clip_id,
                     f"emotion {sample.fields['emotion']!r} maps to no 3-class label")
    else:
      kept.append(sample)
  return kept


def map_emotion(emotion: str, mapping: Mapping[str, str]) -> Optional[str]:
  """The 3-class label of a native emotion (case-insensitive), or None."""
  return mapping.get(" ".join(emotion.split()).lower())
