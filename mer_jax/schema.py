"""The one feature schema every mer_jax dataset builder emits.

The synthetic benchmark (`data_builders/synthetic_me`) and the real datasets
(CASME II, SAMM, SMIC, MEGC2019 composite, CAS(ME)^3) all write records with the
fields below, so one input pipeline (`mer_jax.input_pipeline`) reads any of them.

Core fields (every builder):

| field            | type / shape                 | meaning                                                    |
|------------------|------------------------------|------------------------------------------------------------|
| `frames`         | Sequence(Image) -> uint8 `(T, H, W, 3)` | RGB frames of the clip, in temporal order, PNG or JPEG each |
| `label`          | ClassLabel (`CLASS_NAMES`)   | 3-class MEGC2019 label: negative / positive / surprise      |
| `subject`        | string                       | subject id as the dataset writes it (`sub01`, `006`, `s3`)  |
| `clip_id`        | string                       | unique within the dataset (`sub01/EP02_01f`)                |
| `dataset`        | string                       | `synthetic_me`, `casme2`, `samm`, `smic_hs`, ...            |
| `fps`            | float32                      | frames per second of the recording                          |
| `onset`          | int32                        | 0-based index into `frames` of the onset frame              |
| `apex`           | int32                        | 0-based index into `frames` of the apex frame               |
| `offset`         | int32                        | 0-based index into `frames` of the offset frame             |
| `action_units`   | string                       | FACS codes joined with `+` (`4+15`, `R12`), may be empty     |
| `emotion`        | string                       | the dataset's native emotion label (`disgust`, `happiness`) |
| `apex_source`    | string                       | one of `APEX_SOURCES`: how `apex` was obtained              |

Onset/apex/offset are always indices into the stored `frames`, never the
dataset's own frame numbers (CASME II numbers frames from the clip's first
recorded frame, not 1). Builders that know the original numbers add
`first_frame_number` (int32) so a user can map back.

Ground truth only the synthetic benchmark has (`with_ground_truth=True`):

| field         | type / shape            | meaning                                                     |
|---------------|-------------------------|-------------------------------------------------------------|
| `motion_mask` | uint8 `(H, W)`, {0, 1}  | 1 where the apex displacement magnitude is non-negligible   |
| `apex_flow`   | float32 `(H, W, 2)`     | apex displacement field (dx, dy) in pixels: backward flow, output pixel (x, y) samples the neutral face at (x + dx, y + dy) |

Per-dataset extras (e.g. `objective_class` for SAMM and CAS(ME)^3) go through
`extra_features`.

Records are ArrayRecord files (`RECORD_FORMAT`), read by index without
TensorFlow (`tfds.data_source`, Grain). Frames are a `Sequence(Image)` of
already encoded PNG/JPEG bytes (`encode_frames`), not a `tfds.features.Video`:
`Video` needs TensorFlow even to be constructed, and the input pipeline
decodes only the frames it samples (OpenCV), so records stay readable on
machines without TensorFlow. Builders encode with OpenCV; TFDS stores the
bytes as they are.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("negative", "positive", "surprise")
NUM_CLASSES = len(CLASS_NAMES)

# How the `apex` field of a record was obtained. Repairs are never silent.
APEX_SOURCES: tuple[str, ...] = (
    "annotated",          # taken from the dataset's annotation as is
    "ground_truth",       # synthetic data: the renderer's own apex
    "midpoint",           # dataset has no apex (SMIC): (onset + offset) // 2
    "midpoint_repaired",  # annotated apex unusable ('/', outside [onset, offset]): midpoint
    "nearest_frame",      # annotated apex frame missing on disk: nearest existing frame
)

# The file format every builder writes: random access by index, no TensorFlow to read.
RECORD_FORMAT = "array_record"

CORE_FIELDS: tuple[str, ...] = (
    "frames", "label", "subject", "clip_id", "dataset", "fps",
    "onset", "apex", "offset", "action_units", "emotion", "apex_source",
)
GROUND_TRUTH_FIELDS: tuple[str, ...] = ("motion_mask", "apex_flow")


def features(
    *,
    height: Optional[int] = None,
    width: Optional[int] = None,
    encoding_format: str = "png",
    with_ground_truth: bool = False,
    extra_features: Optional[Mapping[str, object]] = None,
):
  """Returns the `tfds.features.FeaturesDict` of the shared schema.

  Args:
    height: frame height in pixels, or None when clips differ in size.
    width: frame width in pixels, or None when clips differ in size.
    encoding_format: per-frame encoding inside the records, "png" (lossless,
      the default: micro-expressions are sub-pixel motions that JPEG blurs) or
      "jpeg" (smaller, for the real datasets' large frames).
    with_ground_truth: add `motion_mask` and `apex_flow` (synthetic only);
      requires `height` and `width`.
    extra_features: additional dataset-specific features by name.
  """
  import tensorflow_datasets as tfds  # Imported lazily: schema constants need no TF.

  if encoding_format not in ("png", "jpeg"):
    raise ValueError(f"encoding_format must be 'png' or 'jpeg', got {encoding_format!r}")
  feats = {
      "frames": tfds.features.Sequence(
          tfds.features.Image(shape=(height, width, 3), encoding_format=encoding_format)),
      "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
      "subject": tfds.features.Text(),
      "clip_id": tfds.features.Text(),
      "dataset": tfds.features.Text(),
      "fps": tfds.features.Scalar(dtype=np.float32),
      "onset": tfds.features.Scalar(dtype=np.int32),
      "apex": tfds.features.Scalar(dtype=np.int32),
      "offset": tfds.features.Scalar(dtype=np.int32),
      "action_units": tfds.features.Text(),
      "emotion": tfds.features.Text(),
      "apex_source": tfds.features.Text(),
  }
  if with_ground_truth:
    if height is None or width is None:
      raise ValueError("with_ground_truth=True needs a fixed height and width")
    feats["motion_mask"] = tfds.features.Tensor(shape=(height, width), dtype=np.uint8)
    feats["apex_flow"] = tfds.features.Tensor(shape=(height, width, 2), dtype=np.float32)
  for name, feature in (extra_features or {}).items():
    if name in feats:
      raise ValueError(f"extra feature {name!r} clashes with a core schema field")
    feats[name] = feature
  return tfds.features.FeaturesDict(feats)


def encode_frames(frames, encoding_format: str = "png", *, jpeg_quality: int = 95
                  ) -> list[bytes]:
  """Encodes RGB uint8 frames `(T, H, W, 3)` (or `(T, H, W, 1)`/uint16 for depth) with OpenCV.

  The bytes go into a `Sequence(Image)` feature unchanged, so writing a record
  needs no TensorFlow (TFDS would encode NumPy images with TF) and OpenCV's
  encoders are several times faster than TF's per-frame ones.

  Raises:
    ValueError: an unknown format, or a frame OpenCV cannot encode.
  """
  import cv2  # pylint: disable=import-outside-toplevel  (the constants above need no OpenCV)

  if encoding_format not in ("png", "jpeg"):
    raise ValueError(f"encoding_format must be 'png' or 'jpeg', got {encoding_format!r}")
  params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if encoding_format == "jpeg" else []
  encoded = []
  for t, frame in enumerate(frames):
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[-1] == 3:
      frame = frame[..., ::-1]  # OpenCV writes BGR.
    ok, data = cv2.imencode(f".{'jpg' if encoding_format == 'jpeg' else 'png'}",
                            np.ascontiguousarray(frame), params)
    if not ok:
      raise ValueError(f"OpenCV cannot encode frame {t} (shape {frame.shape}, dtype "
                       f"{frame.dtype}) as {encoding_format}")
    encoded.append(data.tobytes())
  return encoded


def validate_example(example: Mapping[str, object], *, where: str = "example") -> None:
  """Checks one generated example against the schema's invariants.

  Builders call this before yielding, so a bad record fails the build with
  the sample named instead of corrupting training later.

  Raises:
    ValueError: naming `where` and the field at fault.
  """
  missing = [f for f in CORE_FIELDS if f not in example]
  if missing:
    raise ValueError(f"{where}: missing schema fields {missing}")
  frames = example["frames"]
  num_frames = len(frames)
  if num_frames == 0:
    raise ValueError(f"{where}: 'frames' is empty")
  onset, apex, offset = (int(example[k]) for k in ("onset", "apex", "offset"))
  if not 0 <= onset <= apex <= offset < num_frames:
    raise ValueError(
        f"{where}: need 0 <= onset <= apex <= offset < num_frames, got onset={onset}, "
        f"apex={apex}, offset={offset}, num_frames={num_frames}")
  label = example["label"]
  if isinstance(label, str):
    if label not in CLASS_NAMES:
      raise ValueError(f"{where}: 'label' {label!r} is not one of {CLASS_NAMES}")
  elif not 0 <= int(label) < NUM_CLASSES:
    raise ValueError(f"{where}: 'label' {label} outside [0, {NUM_CLASSES})")
  if example["apex_source"] not in APEX_SOURCES:
    raise ValueError(
        f"{where}: 'apex_source' {example['apex_source']!r} is not one of {APEX_SOURCES}")
  if not float(example["fps"]) > 0:
    raise ValueError(f"{where}: 'fps' must be positive, got {example['fps']}")
