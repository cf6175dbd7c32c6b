"""The long-video record schema (spotting datasets).

Clip datasets (`mer_jax.schema`) hold one expression per record, cut between
onset and offset. Spotting datasets hold one **whole recording** per record
with every annotated interval in it, so they have their own schema, written
by `synthetic_me_long`, `casme_sq` (CAS(ME)^2) and `samm_long`:

| field                | type / shape                              | meaning                                          |
|----------------------|-------------------------------------------|--------------------------------------------------|
| `frames`             | Sequence(Image) -> uint8 `(T, H, W, 3)`   | every frame of the recording, PNG or JPEG each   |
| `video_id`           | string                                    | unique in the dataset (`s15/15_0101disgustingteeth`) |
| `subject`            | string                                    | subject id as the dataset writes it (`s15`, `006`) |
| `dataset`            | string                                    | `synthetic_me_long`, `casme_sq`, `samm_long`     |
| `fps`                | float32                                   | frames per second of the recording               |
| `num_frames`         | int32                                     | T (read the index without decoding frames)      |
| `first_frame_number` | int32                                     | the dataset's frame number of index 0            |
| `intervals`          | Sequence of dicts, one per expression     | fields below, arrays of length num_intervals     |

Fields of `intervals` (0-based indices into `frames`, inclusive):

| field          | type    | meaning                                                          |
|----------------|---------|------------------------------------------------------------------|
| `onset`        | int32   | first frame of the expression                                    |
| `apex`         | int32   | apex frame, onset <= apex <= offset                              |
| `offset`       | int32   | last frame of the expression                                     |
| `type`         | string  | `micro` or `macro` (`metrics.EXPRESSION_TYPES`)                  |
| `label`        | int32   | index into `mer_jax.schema.CLASS_NAMES`, or -1 (no 3-class label, e.g. `others`) |
| `emotion`      | string  | the dataset's native emotion (`happiness`, `others`)             |
| `action_units` | string  | FACS codes joined with `+`                                       |
| `apex_source`  | string  | one of `mer_jax.schema.APEX_SOURCES`                             |

Spotting counts every interval whatever its label; recognition uses those with
`label >= 0`. Frames go in a `Sequence(Image)` rather than `tfds.features.Video`
so that TFDS can write and read them without building a TensorFlow graph per
video (each frame is stored as encoded bytes and decoded on read).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from mer_jax import schema as clip_schema
from mer_jax.spotting import metrics

VIDEO_FIELDS: tuple[str, ...] = ("frames", "video_id", "subject", "dataset", "fps", "num_frames",
                                 "first_frame_number", "intervals")
INTERVAL_FIELDS: tuple[str, ...] = ("onset", "apex", "offset", "type", "label", "emotion",
                                    "action_units", "apex_source")
NO_LABEL = -1


def features(*, height: Optional[int] = None, width: Optional[int] = None,
             encoding_format: str = "png",
             extra_features: Optional[Mapping[str, object]] = None):
  """The `tfds.features.FeaturesDict` of the long-video schema.

  Args:
    height, width: frame size in pixels, or None when videos differ.
    encoding_format: per-frame encoding, "png" (lossless) or "jpeg".
    extra_features: dataset-specific features by name (e.g. the synthetic
      tier's `nuisances`).
  """
  import tensorflow_datasets as tfds  # Imported lazily: the constants need no TF.

  if encoding_format not in ("png", "jpeg"):
    raise ValueError(f"encoding_format must be 'png' or 'jpeg', got {encoding_format!r}")
  feats = {
      "frames": tfds.features.Sequence(
          tfds.features.Image(shape=(height, width, 3), encoding_format=encoding_format)),
      "video_id": tfds.features.Text(),
      "subject": tfds.features.Text(),
      "dataset": tfds.features.Text(),
      "fps": tfds.features.Scalar(dtype=np.float32),
      "num_frames": tfds.features.Scalar(dtype=np.int32),
      "first_frame_number": tfds.features.Scalar(dtype=np.int32),
      "intervals": tfds.features.Sequence({
          "onset": tfds.features.Scalar(dtype=np.int32),
          "apex": tfds.features.Scalar(dtype=np.int32),
          "offset": tfds.features.Scalar(dtype=np.int32),
          "type": tfds.features.Text(),
          "label": tfds.features.Scalar(dtype=np.int32),
          "emotion": tfds.features.Text(),
          "action_units": tfds.features.Text(),
          "apex_source": tfds.features.Text(),
      }),
  }
  for name, feature in (extra_features or {}).items():
    if name in feats:
      raise ValueError(f"extra feature {name!r} clashes with a long-video schema field")
    feats[name] = feature
  return tfds.features.FeaturesDict(feats)


def validate_video(example: Mapping[str, Any], *, where: str = "video") -> None:
  """Checks one long-video example before it is written.

  `example["intervals"]` is a list of dicts with `INTERVAL_FIELDS`;
  `example["frames"]` any sized sequence of frames (arrays or encoded bytes).

  Raises:
    ValueError: naming `where`, the interval and the field at fault.
  """
  missing = [f for f in VIDEO_FIELDS if f not in example]
  if missing:
    raise ValueError(f"{where}: missing long-video fields {missing}")
  num_frames = len(example["frames"])
  if num_frames == 0:
    raise ValueError(f"{where}: 'frames' is empty")
  if int(example["num_frames"]) != num_frames:
    raise ValueError(f"{where}: num_frames={example['num_frames']} but {num_frames} frames")
  if not float(example["fps"]) > 0:
    raise ValueError(f"{where}: 'fps' must be positive, got {example['fps']}")
  for k, interval in enumerate(example["intervals"]):
    here = f"{where} interval {k}"
    absent = [f for f in INTERVAL_FIELDS if f not in interval]
    if absent:
      raise ValueError(f"{here}: missing fields {absent}")
    onset, apex, offset = (int(interval[f]) for f in ("onset", "apex", "offset"))
    if not 0 <= onset <= apex <= offset < num_frames:
      raise ValueError(f"{here}: need 0 <= onset <= apex <= offset < num_frames, got onset="
                       f"{onset}, apex={apex}, offset={offset}, num_frames={num_frames}")
    if interval["type"] not in metrics.EXPRESSION_TYPES:
      raise ValueError(f"{here}: type {interval['type']!r} is not one of "
                       f"{metrics.EXPRESSION_TYPES}")
    if not NO_LABEL <= int(interval["label"]) < clip_schema.NUM_CLASSES:
      raise ValueError(f"{here}: label {interval['label']} outside [-1, "
                       f"{clip_schema.NUM_CLASSES})")
    if interval["apex_source"] not in clip_schema.APEX_SOURCES:
      raise ValueError(f"{here}: apex_source {interval['apex_source']!r} is not one of "
                       f"{clip_schema.APEX_SOURCES}")


def text(value) -> str:
  """A read-back string field (bytes from the record reader) as `str`."""
  return value.decode() if isinstance(value, bytes) else str(value)


def record_intervals(record: Mapping[str, Any]) -> list[metrics.Interval]:
  """The true intervals of a read-back record (`tfds.as_numpy`) as metric `Interval`s.

  `label` becomes the class name, or the native emotion when the interval
  has no 3-class label (-1), so spot-then-recognise can still count it.
  """
  intervals = record["intervals"]
  result = []
  for k in range(len(intervals["onset"])):
    label = int(intervals["label"][k])
    result.append(metrics.Interval(
        onset=int(intervals["onset"][k]), offset=int(intervals["offset"][k]),
        type=text(intervals["type"][k]), apex=int(intervals["apex"][k]),
        label=(clip_schema.CLASS_NAMES[label] if label >= 0
               else text(intervals["emotion"][k]))))
  return result


def truths_by_video(records: Sequence[Mapping[str, Any]]) -> dict[str, list[metrics.Interval]]:
  """video_id -> true intervals, for `metrics.evaluate_spotting`."""
  return {text(r["video_id"]): record_intervals(r) for r in records}
