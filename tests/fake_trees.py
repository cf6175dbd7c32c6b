"""Fake manual-download trees of the licensed micro-expression datasets.

Each `make_fake_*` function writes, under a given root, a tree that copies the
real release's layout (folder nesting and names, frame file numbering and
padding, `.xlsx` sheets with the real header rows and columns) with tiny
synthetic frames instead of faces, and injects the datasets' known faults.
Tests build the real TFDS builders from these trees; the trainer tests reuse
them (e.g. `make_fake_casme2(tmp_path)` then build `data_builders.casme2`).

Nothing here comes from the real datasets: IDs and frame numbers are made up
in the datasets' naming style (except the composite, whose IDs come from the
public MEGC2019 sample list).
"""

from __future__ import annotations

import csv
import os
from typing import Iterable, Mapping, Optional, Sequence

import cv2
import numpy as np
import openpyxl

# The official composite list shipped with the composite builder.
COMPOSITE_LIST = os.path.join(os.path.dirname(__file__), os.pardir, "data_builders",
                              "megc2019_composite", "megc2019_composite_3class.csv")


def write_frames(clip_dir: str, names: Iterable[str], *, size: tuple[int, int] = (24, 32),
                 seed: int = 0, grey: bool = False) -> list[str]:
  """Writes one small synthetic image (gradient plus noise) per file name.

  Args:
    clip_dir: folder to create.
    names: file names; the suffix picks the format (.jpg, .bmp, .png).
    size: (height, width) in pixels.
    seed: noise seed, so clips differ.
    grey: single-channel images (SAMM frames are greyscale).

  Returns:
    The written paths.
  """
  os.makedirs(clip_dir, exist_ok=True)
  rng = np.random.default_rng(seed)
  height, width = size
  ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :].repeat(height, axis=0)
  paths = []
  for t, name in enumerate(names):
    image = ramp + 4 * t + rng.uniform(0, 40, (height, width)).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if not grey:
      image = np.stack([image, image[::-1], 255 - image], axis=-1)
    path = os.path.join(clip_dir, name)
    if not cv2.imwrite(path, image):
      raise OSError(f"could not write fake frame {path}")
    paths.append(path)
  return paths


def write_depth_frames(clip_dir: str, names: Iterable[str], *,
                       size: tuple[int, int] = (24, 32)) -> None:
  """Writes uint16 single-channel PNGs (fake depth in millimetres)."""
  os.makedirs(clip_dir, exist_ok=True)
  for t, name in enumerate(names):
    depth = np.full(size, 600 + t, dtype=np.uint16)
    depth[: size[0] // 2] += 300
    if not cv2.imwrite(os.path.join(clip_dir, name), depth):
      raise OSError(f"could not write fake depth frame {name}")


def write_xlsx(path: str, header: Sequence[Optional[str]], rows: Iterable[Sequence],
               *, preamble: Sequence[Sequence] = ()) -> None:
  """Writes a one-sheet workbook: `preamble` rows, the header, then `rows`."""
  workbook = openpyxl.Workbook()
  sheet = workbook.active
  for row in preamble:
    sheet.append(list(row))
  sheet.append(list(header))
  for row in rows:
    sheet.append(list(row))
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  workbook.save(path)


def corrupt_file(path: str) -> None:
  """Overwrites an image with bytes no decoder accepts (a damaged download)."""
  with open(path, "wb") as handle:
    handle.write(b"not an image")


def _renamed(header: Sequence[Optional[str]], rename: Mapping[str, str]) -> list:
  return [rename.get(name, name) if name is not None else None for name in header]


# ----------------------------------------------------------------------------
# CASME II

CASME2_HEADER = ("Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                 "Action Units", "Estimated Emotion")

# (subject, filename, frames on disk, onset, apex, offset, AUs, emotion)
CASME2_SAMPLES = (
    (1, "EP02_01f", range(46, 53), 46, 49, 52, "12", "happiness"),
    (1, "EP03_02", range(10, 17), 11, 13, 15, "4+7", "disgust"),
    (2, "EP09_01", range(20, 26), 20, 22, 25, "R1+R2", "surprise"),
    (2, "EP15_01", range(1, 6), 1, 3, 5, "14", "others"),        # excluded
    (3, "EP01_2", [100, 101, 102, 104, 105, 106], 100, 103, 106, "4", "repression"),  # apex missing
    (4, "EP12_01f", range(30, 37), 30, "/", 36, "4+7", "repression"),  # apex '/'
    (5, "EP07_01", range(5, 10), 5, 7, 10, "L10", "disgust"),     # offset frame missing
)


def make_fake_casme2(
    root: os.PathLike | str,
    *,
    release: str = "raw",
    frame_size: tuple[int, int] = (24, 32),
    samples: Sequence[tuple] = CASME2_SAMPLES,
    unrepairable: Sequence[str] = (),
    rename_columns: Mapping[str, str] = {},
) -> str:
  """Writes a fake CASME II manual directory and returns its path.

  Layout: `CASME2-coding-20140508.xlsx` (or `-20190701` for
  release="cropped_updated") and `CASME2_RAW_selected/subXX/<Filename>/imgN.jpg`
  (`Cropped[-updated]/subXX/<Filename>/reg_imgN.jpg` when cropped). Faults, as
  in the real release: a stray `.lnk` in `sub01`, a `Thumbs.db` in a clip
  folder, apex `/` (sub04/EP12_01f), an annotated apex frame and an offset
  frame missing on disk, an 'others' sample.

  Args:
    root: where to create the tree (the manual dir).
    release: "raw", "cropped" or "cropped_updated".
    frame_size: (height, width) of the frames.
    samples: rows, see `CASME2_SAMPLES`.
    unrepairable: add samples that no rule can repair: "corrupt_frame"
      (sub06/EP01_01: a frame file is not an image) and/or "missing_folder"
      (sub06/EP02_01: row without a clip folder).
    rename_columns: header renames, to fake a malformed sheet.
  """
  root = os.fspath(root)
  folder, prefix, xlsx = {
      "raw": ("CASME2_RAW_selected", "img", "CASME2-coding-20140508.xlsx"),
      "cropped": ("Cropped", "reg_img", "CASME2-coding-20140508.xlsx"),
      "cropped_updated": ("Cropped-updated", "reg_img", "CASME2-coding-20190701.xlsx"),
  }[release]
  samples = list(samples)
  if "corrupt_frame" in unrepairable:
    samples.append((6, "EP01_01", range(1, 5), 1, 2, 4, "12", "happiness"))
  if "missing_folder" in unrepairable:
    samples.append((6, "EP02_01", (), 1, 2, 4, "12", "happiness"))
  rows = []
  for seed, (subject, filename, numbers, onset, apex, offset, aus, emotion) in enumerate(samples):
    clip_dir = os.path.join(root, folder, f"sub{subject:02d}", filename)
    if numbers:
      write_frames(clip_dir, [f"{prefix}{n}.jpg" for n in numbers], size=frame_size, seed=seed)
    rows.append((subject, filename, None, onset, apex, offset, None, aus, emotion))
  if "corrupt_frame" in unrepairable:
    corrupt_file(os.path.join(root, folder, "sub06", "EP01_01", f"{prefix}3.jpg"))
  sub01 = os.path.join(root, folder, "sub01")
  if os.path.isdir(sub01):
    with open(os.path.join(sub01, "EP02_01f - Shortcut.lnk"), "wb") as handle:
      handle.write(b"L\x00\x00\x00")
  if os.path.isdir(os.path.join(sub01, "EP03_02")):
    with open(os.path.join(sub01, "EP03_02", "Thumbs.db"), "wb") as handle:
      handle.write(b"\x00" * 8)
  write_xlsx(os.path.join(root, xlsx), _renamed(CASME2_HEADER, rename_columns), rows)
  return root


# ----------------------------------------------------------------------------
# SAMM

SAMM_HEADER = ("Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame",
               "Offset Frame", "Duration", "Type", "Action Units", "Estimated Emotion",
               "Objective Classes", "Notes")

# 13 rows before the header, as in SAMM_Micro_FACS_Codes_v2.xlsx.
SAMM_PREAMBLE = (
    ("SAMM Micro-FACS Codes (fake, generated for tests)",),
    (),
    ("Subject: participant number",),
    ("Filename: <subject>_<inducement code>_<n>",),
    ("Onset/Apex/Offset Frame: frame numbers of the recording",),
    ("Duration: offset - onset + 1 frames",),
    ("Type: Micro - 1/2 (<= 100 frames)",),
    ("Action Units: FACS codes",),
    ("Estimated Emotion: from the inducement and AUs",),
    ("Objective Classes: I-VII",),
    (),
    (),
    (),
)

# (subject, filename, frames on disk, onset, apex, offset, AUs, emotion, objective class)
SAMM_SAMPLES = (
    (6, "006_1_2", range(5560, 5567), 5561, 5563, 5565, "4+7", "Anger", 4),
    (6, "006_1_3", range(2000, 2006), 2000, 2002, 2005, "R12", "Happiness", 1),
    (11, "011_2_1", range(300, 306), 300, 301, 305, "1+2", "Surprise", 2),
    (28, "028_4_1", range(100, 111), 101, 120, 109, "L14", "Contempt", 3),   # apex > offset
    (32, "032_3_1", range(40, 49), 42, 20, 48, "9", "Disgust", 6),          # apex < onset
    (7, "007_6_1", range(10, 15), 10, 12, 14, "43", "Other", 7),            # excluded
)


def make_fake_samm(
    root: os.PathLike | str,
    *,
    release: str = "full",
    frame_size: tuple[int, int] = (24, 32),
    samples: Sequence[tuple] = SAMM_SAMPLES,
    rename_columns: Mapping[str, str] = {},
) -> str:
  """Writes a fake SAMM manual directory and returns its path.

  Layout: `SAMM_Micro_FACS_Codes_v2.xlsx` (13 preamble rows, header on row
  14) and `SAMM/<sss>/<sss>_<i>_<n>/<sss>_<NNNNN>.jpg` (greyscale; `SAMM_CROP`
  for release="cropped"). Faults: apex outside [onset, offset] for 028_4_1
  and 032_3_1 (as in the real sheet), an 'Other' sample.
  """
  root = os.fspath(root)
  folder = {"full": "SAMM", "cropped": "SAMM_CROP"}[release]
  rows = []
  for seed, (subject, filename, numbers, onset, apex, offset, aus, emotion, objective) in (
      enumerate(samples)):
    sss = f"{subject:03d}"
    if numbers:
      write_frames(os.path.join(root, folder, sss, filename),
                   [f"{sss}_{n:05d}.jpg" for n in numbers], size=frame_size, seed=seed, grey=True)
    rows.append((sss, filename, int(filename.split("_")[1]), onset, apex, offset,
                 offset - onset + 1, "Micro - 1/2", aus, emotion, objective, None))
  write_xlsx(os.path.join(root, "SAMM_Micro_FACS_Codes_v2.xlsx"),
             _renamed(SAMM_HEADER, rename_columns), rows, preamble=SAMM_PREAMBLE)
  return root


# ----------------------------------------------------------------------------
# SMIC

_SMIC_EMOTIONS = {"ne": "negative", "po": "positive", "sur": "surprise"}

# (subject number, clip name, number of frames)
SMIC_SAMPLES = (
    (1, "s1_ne_01", 5), (1, "s1_po_01", 4), (1, "s1_sur_01", 6),
    (2, "s2_ne_01", 3), (2, "s2_ne_02", 5), (3, "s3_po_01", 4),
)


def make_fake_smic(
    root: os.PathLike | str,
    *,
    release: str = "raw",
    modalities: Sequence[str] = ("HS",),
    frame_size: tuple[int, int] = (24, 32),
    samples: Sequence[tuple] = SMIC_SAMPLES,
    first_frame: int = 134100,
) -> str:
  """Writes a fake SMIC manual directory and returns its path.

  Layout: `SMIC_all_raw/<HS|VIS|NIR>/s<k>/micro/<emotion>/s<k>_<ne|po|sur>_<nn>/
  image<7 digits>.bmp` (`SMIC_all_cropped` for release="cropped"), plus a
  `non_micro/` folder the builder must ignore and a `Thumbs.db` in a clip.
  """
  root = os.fspath(root)
  folder = {"raw": "SMIC_all_raw", "cropped": "SMIC_all_cropped"}[release]
  for modality in modalities:
    camera = os.path.join(root, folder, modality)
    for seed, (k, clip, count) in enumerate(samples):
      emotion = _SMIC_EMOTIONS[clip.split("_")[1]]
      start = first_frame + 50 * seed
      write_frames(os.path.join(camera, f"s{k}", "micro", emotion, clip),
                   [f"image{n:07d}.bmp" for n in range(start, start + count)],
                   size=frame_size, seed=seed)
    first_k, first_clip = samples[0][0], samples[0][1]
    write_frames(os.path.join(camera, f"s{first_k}", "non_micro", "s1_other_01"),
                 ["image0000001.bmp"], size=frame_size)
    thumbs = os.path.join(camera, f"s{first_k}", "micro",
                          _SMIC_EMOTIONS[first_clip.split("_")[1]], first_clip, "Thumbs.db")
    with open(thumbs, "wb") as handle:
      handle.write(b"\x00" * 8)
  return root


# ----------------------------------------------------------------------------
# CAS(ME)^3 part A

CASME3_XLSX = "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
CASME3_HEADER = ("Subject", "Filename", "Onset", "Apex", "Offset", "emotion", "Objective class",
                 "Expression type", "shade")

# (subject, task, onset, apex, offset, emotion, objective class); task videos
# hold frames 0..CASME3_TASK_FRAMES-1.
CASME3_TASK_FRAMES = 90
CASME3_SAMPLES = (
    ("spNO.1", "a", 10, 13, 16, "happy", 1),
    ("spNO.1", "a", 40, 40, 45, "disgust", 4),     # onset == apex
    ("spNO.1", "b", 5, 8, 70, "surprise", 2),      # longer than 2 s at 30 fps
    ("spNO.2", "c", 20, 22, 24, "others", 7),      # excluded
    ("spNO.2", "c", 50, 60, 55, "sad", 5),         # apex > offset
)


def make_fake_casme3(
    root: os.PathLike | str,
    *,
    with_depth: bool = True,
    frame_size: tuple[int, int] = (24, 32),
    samples: Sequence[tuple] = CASME3_SAMPLES,
) -> str:
  """Writes a fake CAS(ME)^3 part A manual directory and returns its path.

  Layout: the label sheet and `part_A/spNO.<id>/<task>/color/<n>.jpg`
  (+ `depth/<n>.png` uint16). Faults: onset == apex, a sample over 2 s, an
  apex after the offset, an 'others' sample.
  """
  root = os.fspath(root)
  rows = []
  for seed, (subject, task, onset, apex, offset, emotion, objective) in enumerate(samples):
    task_dir = os.path.join(root, "part_A", subject, task)
    if not os.path.isdir(os.path.join(task_dir, "color")):
      write_frames(os.path.join(task_dir, "color"),
                   [f"{n}.jpg" for n in range(CASME3_TASK_FRAMES)], size=frame_size, seed=seed)
      if with_depth:
        write_depth_frames(os.path.join(task_dir, "depth"),
                           [f"{n}.png" for n in range(CASME3_TASK_FRAMES)], size=frame_size)
    rows.append((subject, task, onset, apex, offset, emotion, objective, "Micro-expression", 0))
  write_xlsx(os.path.join(root, CASME3_XLSX), CASME3_HEADER, rows)
  return root


# ----------------------------------------------------------------------------
# MEGC2019 composite


def read_composite_list() -> list[tuple[str, str, str, int]]:
  """(db, subject, filename, label) rows of the official composite list."""
  with open(COMPOSITE_LIST, newline="") as handle:
    return [(db, subject, filename, int(label)) for db, subject, filename, label in csv.reader(handle)]


def make_fake_composite(
    root: os.PathLike | str,
    *,
    frames_per_clip: int = 2,
    frame_size: tuple[int, int] = (16, 16),
    release: str = "cropped",
) -> str:
  """Writes fake CASME II, SAMM and SMIC trees holding the 442 official IDs.

  Layout: `<root>/casme2`, `<root>/samm`, `<root>/smic` as the single-dataset
  fakes (release "cropped": Cropped, SAMM_CROP, SMIC_all_cropped). Clips have
  `frames_per_clip` frames numbered from 1 with onset 1, apex 2 (or 1),
  offset `frames_per_clip`. Each sheet also holds one 'others' row that is
  not in the list. The SMIC list IDs (`s01_ne_01`) become folders `s1/.../
  s1_ne_01`; SAMM subject `6` becomes folder `006`.
  """
  root = os.fspath(root)
  native = {"casme2": ("disgust", "happiness", "surprise"),
            "samm": ("Anger", "Happiness", "Surprise")}
  last = frames_per_clip
  apex = min(2, last)
  casme2_rows, samm_rows, smic_rows = [], [], []
  for db, subject, filename, label in read_composite_list():
    if db == "casme2":
      casme2_rows.append((int(subject[3:]), filename, range(1, last + 1), 1, apex, last, "4",
                          native[db][label]))
    elif db == "samm":
      samm_rows.append((int(subject), filename, range(1, last + 1), 1, apex, last, "4",
                        native[db][label], 1))
    else:
      k, code, n = filename.split("_")
      smic_rows.append((int(subject[1:]), f"s{int(k[1:])}_{code}_{n}", last))
  casme2_rows.append((1, "EP99_99", range(1, last + 1), 1, apex, last, "", "others"))
  samm_rows.append((6, "006_9_9", range(1, last + 1), 1, apex, last, "", "Other", 7))
  make_fake_casme2(os.path.join(root, "casme2"),
                   release={"cropped": "cropped", "raw": "raw"}[release],
                   frame_size=frame_size, samples=casme2_rows)
  make_fake_samm(os.path.join(root, "samm"), release={"cropped": "cropped", "raw": "full"}[release],
                 frame_size=frame_size, samples=samm_rows)
  make_fake_smic(os.path.join(root, "smic"), release=release, frame_size=frame_size,
                 samples=smic_rows, first_frame=1)
  return root


def read_records(builder, split: str = "train") -> list[dict]:
  """Every record of a built split, read by index without TensorFlow (`as_data_source`).

  `Sequence(Image)` features (`frames`, `depth`) come back as one stacked array
  `(T, H, W, C)`; everything else as TFDS's NumPy decoding gives it.
  """
  source = builder.as_data_source(split)
  examples = []
  for i in range(len(source)):
    example = dict(source[i])
    for key in ("frames", "depth"):
      if key in example:
        example[key] = np.stack(example[key])
    examples.append(example)
  return examples
