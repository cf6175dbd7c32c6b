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
* frame numbers missing between a clip's first and last frame on disk: filled
  with a copy of the frame before the gap, so the time axis stays uniform
  (`list_frames`, recorded by `gap_repairs`); longer than `MAX_FILLED_GAP`
  frames: unrepairable.
* an emotion neither mapped nor a stated exclusion: skipped and listed with
  its sheet row and value (`BuildReport.skip_unknown_label`).

Unrepairable samples (clip folder missing, no frame on disk inside
[onset, offset], onset > offset, unreadable image file (a folder, a link
loop, any OS error, a corrupt JPEG per `jpeg_fault`), an image name that does
not end in its frame number (`img48 (1).jpg`), a Filename cell that is not a
plain name, unparseable onset or offset) raise `SampleError` naming the sample and the file, unless the builder
runs with `skip_unreadable=True`, in which case the sample is skipped and its
id and reason are stored in `info.metadata["skipped"]`.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import os
import re
import stat
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
  """The frame number of an image file: the run of digits that ends its stem.

  `img46.jpg` -> 46, `reg_img46.jpg` -> 46, `006_05562.jpg` -> 5562,
  `image0134106.bmp` -> 134106. A stem that does not end in digits has no
  frame number, so a Windows copy `img48 (1).jpg` is never read as frame 1.

  Raises:
    ValueError: naming the file when its stem does not end in digits.
  """
  stem = os.path.splitext(os.path.basename(filename))[0]
  match = re.search(r"(\d+)$", stem)
  if match is None:
    raise ValueError(f"frame file {filename!r} has no frame number at the end of its name")
  return int(match.group(1))


def is_image_file(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def is_known_stray_file(name: str) -> bool:
  """True for files the archives are known to carry that are not frames."""
  lowered = name.lower()
  return lowered in _KNOWN_STRAY_NAMES or lowered.endswith(".lnk")


# Longest run of consecutive missing frame numbers that is filled (see
# `list_frames`); a longer hole inside a stored clip is unrepairable.
MAX_FILLED_GAP = 5


@dataclasses.dataclass(frozen=True)
class FrameListing:
  """The frames of one clip folder on a uniform time axis.

  Missing frame numbers between the first and last frame on disk are filled
  with a copy of the last frame before them (see `list_frames`), so index
  `i` is always frame number `numbers[0] + i` and the clip keeps its fps.

  Attributes:
    numbers: every frame number from the first to the last on disk.
    paths: the image file holding each number's pixels (a filled number
      repeats the previous file).
    sources: the frame number on disk each index takes its pixels from.
    on_disk: the frame numbers that have their own file, increasing.
    gaps: `(first missing, last missing)` number pairs, increasing.
    stray: paths of non-image files found in the folder (ignored).
  """
  numbers: tuple[int, ...]
  paths: tuple[str, ...]
  sources: tuple[int, ...]
  on_disk: tuple[int, ...]
  gaps: tuple[tuple[int, int], ...]
  stray: tuple[str, ...]


def _entry_error(path: str, error: OSError) -> "SampleError":
  if error.errno == errno.ELOOP:
    return SampleError(f"frame {path} is a symbolic-link loop")
  return SampleError(f"{path} cannot be read: {error.strerror or error}")


def list_frames(clip_dir: os.PathLike | str) -> FrameListing:
  """Lists the image frames of `clip_dir` by frame number, filling gaps.

  Rules (nothing is dropped or reordered silently):
  * an image file whose stem does not end in its frame number but holds
    digits (`img48 (1).jpg`, `img48 - Copy.jpg`) is refused: it is a copy or a
    mis-numbered frame, and guessing its place would shift the time axis.
    Image files without any digits and non-image files are stray (ignored,
    listed).
  * an image name that is a folder, a symbolic-link loop or otherwise
    unreadable is refused.
  * missing frame numbers between the first and last frame on disk are
    filled with a copy of the last frame before the gap (`gaps` lists them;
    callers record the repair with `gap_repairs`).

  Raises:
    SampleError: the folder is missing or unreadable, holds no image, two
      files carry the same frame number (also `img46.jpg` / `IMG46.JPG`), or
      a refused file (rules above); the message names the file.
  """
  clip_dir = os.fspath(clip_dir)
  if not os.path.isdir(clip_dir):
    raise SampleError(f"clip folder {clip_dir} does not exist")
  try:
    names = sorted(os.listdir(clip_dir), key=natural_sort_key)
  except OSError as error:
    raise _entry_error(clip_dir, error) from None
  numbered: dict[int, str] = {}
  stray = []
  for name in names:
    path = os.path.join(clip_dir, name)
    try:
      mode = os.stat(path).st_mode  # Follows links: a loop raises ELOOP here.
    except OSError as error:
      raise _entry_error(path, error) from None
    if stat.S_ISDIR(mode):
      if is_image_file(name):
        raise SampleError(f"frame {path} is a folder, not an image file")
      continue
    if not is_image_file(name):
      stray.append(path)
      continue
    try:
      number = frame_number(name)
    except ValueError:
      if re.search(r"\d", name):
        raise SampleError(
            f"image file {path}: its name does not end in a frame number (a copy such as "
            "'img48 (1).jpg'?); rename or remove it") from None
      stray.append(path)
      continue
    if number in numbered:
      raise SampleError(
          f"clip folder {clip_dir}: files {os.path.basename(numbered[number])!r} and "
          f"{name!r} both carry frame number {number}")
    numbered[number] = path
  if not numbered:
    raise SampleError(f"clip folder {clip_dir} holds no image frames ({sorted(IMAGE_SUFFIXES)})")
  on_disk = tuple(sorted(numbered))
  numbers, paths, sources, gaps = [], [], [], []
  for previous, number in zip((None,) + on_disk[:-1], on_disk):
    if previous is not None and number > previous + 1:
      gaps.append((previous + 1, number - 1))
      for missing in range(previous + 1, number):
        numbers.append(missing)
        paths.append(numbered[previous])
        sources.append(previous)
    numbers.append(number)
    paths.append(numbered[number])
    sources.append(number)
  return FrameListing(tuple(numbers), tuple(paths), tuple(sources), on_disk, tuple(gaps),
                      tuple(stray))


def gap_repairs(listing: FrameListing, first: int, last: int, onset: int,
                offset: int) -> list[str]:
  """Repairs to record for the filled gaps of `listing` between frame numbers `first`..`last`.

  Args:
    listing: from `list_frames`.
    first, last: the frame numbers of the stored range (the whole folder, or
      a CAS(ME)^3 window).
    onset, offset: the sample's onset and offset frame numbers (after the
      locate rules), to say whether a gap is inside them.

  Returns:
    One description per gap, e.g. "frames 103..104 missing on disk (inside
    onset..offset 100..106): filled with copies of frame 102".

  Raises:
    SampleError: a gap inside the stored range longer than `MAX_FILLED_GAP`.
  """
  repairs = []
  for start, end in listing.gaps:
    if end < first or start > last:
      continue
    span = f"frame {start}" if start == end else f"frames {start}..{end}"
    where = "inside" if start <= offset and end >= onset else "outside"
    if end - start + 1 > MAX_FILLED_GAP:
      raise SampleError(
          f"{span} missing on disk ({where} onset..offset {onset}..{offset}): more than "
          f"{MAX_FILLED_GAP} consecutive frames, too long to fill")
    repairs.append(f"{span} missing on disk ({where} onset..offset {onset}..{offset}): "
                   f"filled with copies of frame {start - 1} (time axis kept)")
  return repairs


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
    on_disk: Optional[Sequence[int]] = None,
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
    on_disk: the numbers that have their own file (`FrameListing.on_disk`)
      when `frame_numbers` has filled gaps: onset, apex and offset snap only
      to these, never to a filled copy. Default: all of `frame_numbers`.

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
  inside = [n for n in (frame_numbers if on_disk is None else on_disk)
            if onset_n <= n <= offset_n]
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


def jpeg_fault(data: bytes) -> Optional[str]:
  """Why `data` is not a complete, well-formed JPEG stream, or None.

  The rule (decoders fill what they cannot read with grey and only warn):
  the stream starts with SOI (FF D8), its marker segments up to the first
  SOS are complete, the entropy-coded data holds no marker other than stuffed
  FF 00, fill bytes and restart markers RST0-7, and the stream ends with EOI
  (FF D9), optionally followed by zero padding. Truncated files (no EOI) and
  damage that breaks a marker are caught; flipped bits inside entropy-coded
  data that break no marker are not detectable here.
  """
  if data[:2] != b"\xff\xd8":
    return "no JPEG start-of-image marker"
  end = len(data.rstrip(b"\x00"))
  if data[end - 2:end] != b"\xff\xd9":
    return "no JPEG end-of-image marker (truncated file)"
  position = 2
  while True:  # Marker segments up to start-of-scan.
    if position + 4 > end or data[position] != 0xFF:
      return f"broken JPEG marker segment at byte {position}"
    marker = data[position + 1]
    if marker == 0xFF:  # Fill byte.
      position += 1
      continue
    length = int.from_bytes(data[position + 2:position + 4], "big")
    if length < 2 or position + 2 + length > end:
      return f"JPEG segment FF{marker:02X} at byte {position} runs past the end of the file"
    position += 2 + length
    if marker == 0xDA:  # SOS: entropy-coded data follows.
      break
  scan = data[position:end - 2]
  for match in re.finditer(rb"\xff(?!\x00|[\xd0-\xd7]|\xff)(.)", scan, re.DOTALL):
    marker = match.group(1)[0]
    if marker in (0xC4, 0xDA, 0xDB, 0xDD) or 0xE0 <= marker <= 0xEF:
      continue  # Tables and scans of progressive / multi-scan JPEGs.
    return f"unexpected JPEG marker FF{marker:02X} inside the image data (corrupt data)"
  return None


def _read_image_bytes(path: str) -> np.ndarray:
  try:
    return np.fromfile(path, dtype=np.uint8)
  except OSError as error:  # A link loop, a folder, no permission: named, never bare.
    raise _entry_error(path, error) from None


def read_rgb_frame(path: str) -> np.ndarray:
  """Decodes an image file to uint8 RGB (H, W, 3); grey images become 3 channels.

  JPEG files must pass `jpeg_fault` (a truncated or marker-damaged JPEG
  decodes to grey blocks without an error).

  Raises:
    SampleError: naming `path` when the file is empty, unreadable, a corrupt
      JPEG, or cannot be decoded.
  """
  import cv2

  data = _read_image_bytes(path)
  if data.size and os.path.splitext(path)[1].lower() in (".jpg", ".jpeg"):
    fault = jpeg_fault(data.tobytes())
    if fault:
      raise SampleError(f"frame {path} is a corrupt JPEG: {fault}")
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

  data = _read_image_bytes(path)
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
    report: "BuildReport", only: Optional[set[tuple[str, str]]] = None,
    excluded_emotions: Iterable[str] = ()) -> list[Sample]:
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
    excluded_emotions: native emotions (lower case) that map to no class by
      the dataset's stated rule; any other emotion missing from
      `emotion_to_class` is unknown and the row is skipped and recorded with
      its row number and value (`BuildReport.skip_unknown_label`).

  Raises:
    AnnotationError: a bad Subject cell, or two rows describing one clip
      (also when their Filename cells differ only in letter case).
    SampleError: an unrepairable sample (a Filename cell that is not a plain
      name, missing or unreadable frames) when skipping is off.
  """
  samples, seen, seen_folded = [], {}, {}
  excluded_emotions = {e.lower() for e in excluded_emotions}
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
    folded = clip_id.casefold()
    if folded in seen_folded:
      other_row, other_id = seen_folded[folded]
      raise AnnotationError(
          f"{sheet_name}: rows {other_row} ({other_id}) and {row['_row']} ({clip_id}) name "
          "clips that differ only in letter case: one folder on a case-insensitive disk, two "
          "samples here; fix the sheet")
    seen[clip_id] = row["_row"]
    seen_folded[folded] = (row["_row"], clip_id)
    where = f"{dataset} {clip_id} ({sheet_name} row {row['_row']})"
    fault = plain_name_fault(filename)
    if fault:
      report.fail_or_skip(clip_id, SampleError(f"{where}: Filename {filename!r} {fault}"))
      continue
    emotion = cell_text(row["Estimated Emotion"]).lower()
    if map_emotion(emotion, emotion_to_class) is None and emotion not in excluded_emotions:
      report.skip_unknown_label(clip_id, row=row["_row"], value=emotion, sheet=sheet_name)
      continue
    report.add_stray(stray_files_in(os.path.join(frames_root, subject)))
    try:
      listing = list_frames(os.path.join(frames_root, subject, filename))
      located = locate_sample(listing.numbers, *(row[c] for c in frame_columns),
                              where=where, on_disk=listing.on_disk)
      repairs = list(located.repairs) + gap_repairs(
          listing, listing.numbers[0], listing.numbers[-1], listing.numbers[located.onset],
          listing.numbers[located.offset])
    except SampleError as error:
      report.fail_or_skip(clip_id, error)
      continue
    report.add_stray(listing.stray)
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
        repairs=repairs, flags=located.flags))
  return samples


def plain_name_fault(name: str) -> Optional[str]:
  """Why an annotation's file or folder name is not a plain name, or None.

  A plain name has no path separator (`/`, `\\`), is not `.` or `..`, is not
  empty and has no control characters: `sub02/../sub01/EP02_01f` would build
  a clip of sub01's frames under subject sub02.
  """
  if not name:
    return "is empty"
  if "/" in name or "\\" in name or os.sep in name or (os.altsep and os.altsep in name):
    return "holds a path separator; a plain folder name is expected"
  if name in (".", ".."):
    return "is a relative path; a plain folder name is expected"
  if any(ord(c) < 32 for c in name):
    return "holds control characters"
  return None


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

  def skip_unknown_label(self, clip_id: str, *, row: int, value: str, sheet: str) -> None:
    """Records a row whose emotion is neither a known label nor a stated exclusion.

    Always skipped (with or without `skip_unreadable`): a label spelled
    differently from the dataset's known ones is never guessed; the entry in
    `skipped` names the sheet row and the value so it can be fixed.
    """
    reason = f"{sheet} row {row}: unknown emotion {value!r}"
    logging.warning("%s: skipping sample %s: %s", self.dataset, clip_id, reason)
    self.skipped.append({"clip_id": clip_id, "reason": reason, "row": row, "value": value})

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
    encoding_format: str = "jpeg",
) -> Iterator[tuple[str, dict[str, Any]]]:
  """Decodes each planned sample and yields `(clip_id, example)` for TFDS.

  Frames are resized to `short_side` and re-encoded as `encoding_format`
  (depth frames as 16-bit PNG) for the schema's `Sequence(Image)`; every example is checked with
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
    schema.validate_example(example, where=where)
    # Encoded here (OpenCV) so the `Sequence(Image)` features store bytes as given.
    example["frames"] = schema.encode_frames(frames, encoding_format)
    if depth is not None:
      example["depth"] = schema.encode_frames(depth, "png")
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


# ----------------------------------------------------------------------------
# Long videos (spotting datasets: CAS(ME)^2, SAMM long videos).


def read_xlsx_sheet(path: os.PathLike | str, sheet: int | str) -> list[tuple[int, tuple]]:
  """All non-empty rows of one sheet of an `.xlsx` file, for sheets without a header.

  Args:
    path: the workbook.
    sheet: 0-based sheet position, or sheet name (matched case- and
      whitespace-insensitively).

  Returns:
    (1-based row number, cell values) per row that has a non-empty cell.

  Raises:
    AnnotationError: the file is no workbook or has no such sheet (the
      message lists the sheets it has).
  """
  import openpyxl  # Imported here: only builders reading xlsx need it.

  path = os.fspath(path)
  try:
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
  except Exception as error:  # openpyxl raises several unrelated types.
    raise AnnotationError(f"{path}: cannot be read as an .xlsx workbook ({error})") from error
  try:
    names = [ws.title for ws in workbook.worksheets]
    if isinstance(sheet, int):
      if not 0 <= sheet < len(names):
        raise AnnotationError(f"{path}: has {len(names)} sheet(s) {names}, no sheet {sheet + 1}")
      worksheet = workbook.worksheets[sheet]
    else:
      wanted = _normalise_header(sheet)
      matches = [ws for ws in workbook.worksheets if _normalise_header(ws.title) == wanted]
      if not matches:
        raise AnnotationError(f"{path}: no sheet named {sheet!r}; sheets: {names}")
      worksheet = matches[0]
    rows = []
    for number, row in enumerate(worksheet.iter_rows(values_only=True), start=1):
      if row and any(cell is not None and str(cell).strip() != "" for cell in row):
        rows.append((number, tuple(row)))
    return rows
  finally:
    workbook.close()


def find_header_row(path: os.PathLike | str, required_columns: Sequence[str], *,
                    max_row: int = 40) -> int:
  """The 1-based row of the first sheet whose cells include all `required_columns`.

  For sheets whose header follows a preamble of varying length (SAMM long
  videos). Matching is case- and whitespace-insensitive.

  Raises:
    AnnotationError: no row among the first `max_row` holds them all.
  """
  wanted = {_normalise_header(c) for c in required_columns}
  for number, row in read_xlsx_sheet(path, 0):
    if number > max_row:
      break
    if wanted <= {_normalise_header(cell) for cell in row if cell is not None}:
      return number
  raise AnnotationError(
      f"{os.path.basename(os.fspath(path))} ({os.fspath(path)}): no header row with columns "
      f"{list(required_columns)} among the first {max_row} rows")


def video_gap_repairs(listing: FrameListing) -> list[str]:
  """Repairs to record for the filled gaps of a whole long video.

  Raises:
    SampleError: a gap longer than `MAX_FILLED_GAP` frames.
  """
  repairs = []
  for start, end in listing.gaps:
    span = f"frame {start}" if start == end else f"frames {start}..{end}"
    if end - start + 1 > MAX_FILLED_GAP:
      raise SampleError(f"{span} missing on disk: more than {MAX_FILLED_GAP} consecutive "
                        "frames, too long to fill")
    repairs.append(f"{span} missing on disk: filled with copies of frame {start - 1} "
                   "(time axis kept)")
  return repairs


@dataclasses.dataclass
class LongVideo:
  """One planned long-video example (`mer_jax.spotting.schema`).

  Attributes:
    video_id: unique key within the built dataset.
    subject: subject id as the dataset writes it.
    frame_paths: frame files in temporal order (gaps filled).
    first_frame_number: the dataset's frame number of index 0.
    intervals: dicts with the schema's interval fields (indices into
      `frame_paths`).
    repairs, flags: what the planning repaired or noticed, recorded when the
      video is written.
  """
  video_id: str
  subject: str
  frame_paths: Sequence[str]
  first_frame_number: int
  intervals: list[dict[str, Any]]
  repairs: list[str] = dataclasses.field(default_factory=list)
  flags: list[str] = dataclasses.field(default_factory=list)


def encode_video_frames(paths: Sequence[str], short_side: Optional[int], *,
                        quality: int = 95) -> list[bytes]:
  """Decodes, resizes and re-encodes a long video's frames as JPEG bytes.

  One frame at a time, so a video of thousands of frames never sits in
  memory decoded. Frames of another native size than the first are resized
  to the first frame's size (one size per video).

  Returns:
    JPEG bytes per frame (RGB content, as `tfds.features.Image` stores it).

  Raises:
    SampleError: naming the first unreadable file.
  """
  import cv2

  encoded, size = [], None
  for path in paths:
    image = resize_short_side(read_rgb_frame(path), short_side)
    if size is None:
      size = image.shape[:2]
    elif image.shape[:2] != size:
      image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                            (cv2.IMWRITE_JPEG_QUALITY, quality))
    if not ok:
      raise SampleError(f"frame {path}: JPEG encoding failed")
    encoded.append(data.tobytes())
  return encoded


def generate_video_examples(
    videos: Iterable[LongVideo], *, dataset: str, fps: float, short_side: Optional[int],
    report: BuildReport, metadata: Optional[dict] = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
  """Encodes each planned long video and yields `(video_id, example)` for TFDS.

  Every example is checked with `mer_jax.spotting.schema.validate_video`;
  unreadable videos go through `report.fail_or_skip`. The summary (videos per
  subject, intervals per type and class, repairs, skips) is logged and
  written into `metadata` when the iteration ends.
  """
  from mer_jax.spotting import schema as long_schema  # pylint: disable=import-outside-toplevel

  per_type: collections.Counter = collections.Counter()
  per_label: collections.Counter = collections.Counter()
  num_videos = 0
  for video in videos:
    try:
      frames = encode_video_frames(video.frame_paths, short_side)
    except SampleError as error:
      report.fail_or_skip(video.video_id, error)
      continue
    example = {"frames": frames, "video_id": video.video_id, "subject": video.subject,
               "dataset": dataset, "fps": fps, "num_frames": len(frames),
               "first_frame_number": video.first_frame_number, "intervals": video.intervals}
    long_schema.validate_video(example, where=f"{dataset} {video.video_id}")
    num_videos += 1
    report.per_subject[video.subject] += 1
    report.per_dataset[dataset] += 1
    report.repairs += [{"clip_id": video.video_id, "repair": r} for r in video.repairs]
    report.flags += [{"clip_id": video.video_id, "flag": f} for f in video.flags]
    for interval in video.intervals:
      per_type[interval["type"]] += 1
      label = int(interval["label"])
      per_label[schema.CLASS_NAMES[label] if label >= 0 else "none"] += 1
    yield video.video_id, example
  report.log()
  summary = report.as_metadata()
  summary.update(
      num_examples=num_videos, num_videos=num_videos,
      num_intervals=sum(per_type.values()), intervals_per_type=dict(sorted(per_type.items())),
      intervals_per_class=dict(sorted(per_label.items())))
  summary.pop("per_class", None)  # Clip counts; a long video has no single class.
  logging.info("%s/%s: %d videos, intervals per type %s, per class %s", report.dataset,
               report.config, num_videos, summary["intervals_per_type"],
               summary["intervals_per_class"])
  if metadata is not None:
    metadata.update(summary)


@dataclasses.dataclass(frozen=True)
class AnnotatedInterval:
  """One annotation row of a long video, cells as read (frame numbers unparsed)."""
  row: int
  onset: Any
  apex: Any
  offset: Any
  type: str           # "micro" or "macro"
  label: int          # index into schema.CLASS_NAMES, or -1
  emotion: str
  action_units: str


def locate_video_intervals(listing: FrameListing, annotations: Sequence[AnnotatedInterval], *,
                           where: str, sheet: str) -> tuple[list[dict[str, Any]], list[str],
                                                            list[str]]:
  """Maps a long video's annotated intervals to indices into its frames.

  Rules, beside `locate_sample`'s (missing onset/offset frames snap inside,
  unusable apex -> midpoint):
  * offset 0 means "unknown" (CAS(ME)^2): the apex frame is used as the
    offset, as the spotting literature does (SOFTNet), and recorded;
  * a row repeating an earlier row's onset, apex, offset and type is dropped
    and recorded (it would count one expression twice).

  Args:
    listing: the video's frames (`list_frames`).
    annotations: its rows in sheet order.
    where: the video's name for messages (`casme_sq s15/15_0101...`).
    sheet: the annotation file's name, for messages.

  Returns:
    (intervals sorted by onset, repairs, flags).

  Raises:
    SampleError: an interval no rule can repair (named by its sheet row).
  """
  intervals, repairs, flags, seen = [], [], [], {}
  for a in annotations:
    here = f"{where} ({sheet} row {a.row})"
    offset = a.offset
    if parse_frame_value(offset) == 0:
      apex = parse_frame_value(a.apex)
      if apex is None or apex <= 0:
        raise SampleError(f"{here}: offset 0 (unknown) and no usable apex {a.apex!r}")
      repairs.append(f"row {a.row}: offset 0 (unknown): used the apex frame {apex} as offset")
      offset = apex
    key = (parse_frame_value(a.onset), parse_frame_value(a.apex), parse_frame_value(offset), a.type)
    if key in seen:
      repairs.append(f"row {a.row} repeats row {seen[key]} ({a.type} {key[0]}..{key[2]}): dropped")
      continue
    seen[key] = a.row
    located = locate_sample(listing.numbers, a.onset, a.apex, offset, where=here,
                            on_disk=listing.on_disk)
    repairs += [f"row {a.row}: {r}" for r in located.repairs]
    flags += [f"row {a.row}: {f}" for f in located.flags]
    intervals.append({"onset": located.onset, "apex": located.apex, "offset": located.offset,
                      "type": a.type, "label": a.label, "emotion": a.emotion,
                      "action_units": a.action_units, "apex_source": located.apex_source})
  intervals.sort(key=lambda x: (x["onset"], x["offset"]))
  return intervals, repairs, flags
