"""Input pipeline: any dataset with the shared schema -> LOSO folds -> device batches.

The path of one clip:

1. `records` opens a split's ArrayRecord files for random access by index
   (`builder.as_data_source`); no TensorFlow is imported to read them. Frames
   stay encoded bytes until a transform decodes the few it samples.
2. `read_clip_index` reads every record's metadata once (frames left encoded)
   so folds and sampling rules are checked before any compute.
3. `loso_folds` splits subjects: one held-out test subject per fold, the rest
   train (optionally minus a few validation subjects carved from them). Subjects
   are keyed `dataset/subject` so composite datasets cannot collide.
4. `fold_sampler` is a fold's own endless, shuffled stream of its training
   clips' record indices (a Grain `MapDataset`; one per fold, so several folds
   can be drawn at once). `create_train_dataset` maps it through Grain
   transforms -- read the record, sample N frame indices
   (`sample_frame_indices`), decode only those N frames (OpenCV),
   resize/crop/flip -- and batches; `create_eval_dataset` does the same for
   every clip of some subjects once, in record order. The transforms run in
   Grain's threads, or in `config.input.num_workers` worker processes.
5. `prefetch_to_devices` puts batches on the accelerators from a background
   thread, laid out for `pmap` (leading device axis) or for `shard_map`/`jit`
   (one global array sharded over the mesh's data axis), and keeps the data
   iterator's state of the last batch it handed out, for the checkpoint.

Frames stay uint8 up to the device: normalisation (and optional Eulerian
magnification) happen inside the model, so host->device traffic is 4x smaller.

The training stream is a pure function of (seed, fold, step): element k of a
fold's stream is clip `sampler[k]` augmented with a generator seeded by
(seed, k), so batch s is the same whether the stream starts at 0 or at s (a
slice, nothing is replayed). A checkpoint also stores the Grain iterator's
state (`TrainIterator.get_state`), so a resume continues exactly where the
consumed batches ended.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import importlib
import os
import queue
import re
import threading
from typing import Any, Iterator, Optional, Sequence

from absl import flags
from absl import logging
import cv2
from etils import epath
import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from mer_jax import sampling
from mer_jax import schema

SAMPLING_MODES = ("uniform", "apex")
SHORT_CLIP_RULES = ("repeat", "pad", "error")
HOST_FIELDS = ("clip_id", "subject", "dataset")  # Strings kept on the host for reports.


# The builder packages in data_builders/ (one per dataset).
BUILDER_PACKAGES = ("synthetic_me", "casme2", "samm", "smic", "megc2019_composite", "casme3")
# Long-video builders (mer_jax.spotting.schema, one recording per record): the spotting trainer's.
LONG_VIDEO_PACKAGES = ("casme_sq", "samm_long", "synthetic_me_long")


def get_builder(dataset_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder named by `config.dataset` (name, builder_config, data_dir)."""
  name = dataset_config.name
  if name not in BUILDER_PACKAGES + LONG_VIDEO_PACKAGES:
    raise ValueError(f"config.dataset.name: unknown dataset {name!r}; mer_jax builders are "
                     f"{list(BUILDER_PACKAGES)} (clips) and {list(LONG_VIDEO_PACKAGES)} "
                     "(long videos, for mer_jax.spotting.train)")
  importlib.import_module(f"data_builders.{name}")  # Registers the builder with TFDS.
  full_name = f"{name}/{dataset_config.builder_config}" if dataset_config.get(
      "builder_config") else name
  try:
    return tfds.builder(full_name, data_dir=dataset_config.get("data_dir") or None)
  except (ValueError, tfds.core.registered.DatasetNotFoundError) as e:
    raise ValueError(f"config.dataset: cannot create builder {full_name!r}: {e}") from e


def prepare_builder(builder: tfds.core.DatasetBuilder,
                    dataset_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Builds the records if they are missing and `config.dataset.build_if_missing` is set.

  Concurrent builds of one dataset (two runs started on a fresh data_dir) take
  turns on a lock file beside the dataset's version folder: the second waits,
  then finds the finished build and reuses it.

  Returns:
    A builder that sees the built records (a fresh one when this call built or
    waited for them).
  """
  if builder.is_prepared():
    check_record_format(builder)
    return builder
  if not dataset_config.get("build_if_missing", False):
    older = older_versions(builder)
    raise ValueError(
        f"dataset {builder.info.full_name} is not built in {builder.data_dir}"
        + (f" (only records of older builder version(s) {', '.join(older)} are there, which "
           f"this version cannot read: {_OLD_VERSION_NOTE})" if older else "")
        + f"; run `{build_command(builder)}` or set config.dataset.build_if_missing=True")
  if older_versions(builder):
    logging.warning("dataset %s: building version %s beside older version(s) %s in %s (delete "
                    "those folders to free their space)", builder.info.full_name,
                    builder.version, older_versions(builder), os.path.dirname(builder.data_dir))
  parent = os.path.dirname(builder.data_dir)
  os.makedirs(parent, exist_ok=True)
  lock_path = os.path.join(parent, f".{builder.version}.build.lock")
  with open(lock_path, "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Waits while another process builds this dataset.
    try:
      fresh = get_builder(dataset_config)
      if fresh.is_prepared():
        logging.info("dataset %s was built by another process while this one waited; reusing "
                     "it", fresh.info.full_name)
        return fresh
      manual_dir = dataset_config.get("manual_dir") or None
      _keep_tensorflow_off_accelerators()
      fresh.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
      return get_builder(dataset_config)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _keep_tensorflow_off_accelerators() -> None:
  """Building records imports TensorFlow (TFDS writers); it must not take the GPU from JAX.

  Only here: reading records needs no TensorFlow, so the trainer never imports it otherwise.
  """
  try:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
  except ImportError:
    return
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # Already initialised in this process: nothing left to hide.
    pass


_OLD_VERSION_NOTE = ("records before the TensorFlow-free format (issue 12) are TFRecord files "
                     "with a TF-encoded `Video`")


def build_command(builder: tfds.core.DatasetBuilder) -> str:
  """The command line that builds `builder`'s dataset into its data_dir."""
  name = builder.name + (f"/{builder.builder_config.name}" if builder.builder_config else "")
  data_dir = builder.data_dir  # <data_dir>/<name>[/<config>]/<version>
  for _ in range(len(name.split("/")) + 1):
    data_dir = os.path.dirname(data_dir)
  command = f"python -m data_builders.build {name} --data_dir={data_dir}"
  if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
    command += " --manual_dir=<where the licensed download lies>"
  return command


def older_versions(builder: tfds.core.DatasetBuilder) -> list[str]:
  """Version folders beside `builder.data_dir` written by an older builder version."""
  parent = os.path.dirname(builder.data_dir)
  if not os.path.isdir(parent):
    return []
  found = []
  for name in os.listdir(parent):
    if (re.fullmatch(r"\d+\.\d+\.\d+", name) and tfds.core.Version(name) < builder.version
        and os.path.isfile(os.path.join(parent, name, "dataset_info.json"))):
      found.append(name)
  return sorted(found, key=tfds.core.Version)


def check_record_format(builder: tfds.core.DatasetBuilder) -> None:
  """Fails, naming the directory and the rebuild command, unless the records are ArrayRecord."""
  file_format = builder.info.file_format
  if file_format is None or file_format.value != schema.RECORD_FORMAT:
    raise ValueError(
        f"dataset {builder.info.full_name} in {builder.data_dir} is stored as "
        f"{getattr(file_format, 'value', file_format)!r}, not {schema.RECORD_FORMAT!r}: mer_jax "
        "reads records by index without TensorFlow. Delete that directory and run "
        f"`{build_command(builder)}`")


def dataset_identity(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, str]:
  """Name, version, split and a fingerprint of the built records (for the run identity).

  The fingerprint hashes every record file's name and size and the split's
  example counts, read from the files on disk: a rebuild with other content
  (another builder version, a changed manual download) changes it.
  """
  import hashlib  # pylint: disable=import-outside-toplevel
  digest = hashlib.sha256()
  for name, info in sorted(builder.info.splits.items()):
    digest.update(f"{name}:{info.num_examples}:{info.num_bytes}".encode())
  for path in sorted(epath.Path(builder.data_dir).iterdir()):
    if path.name.endswith(".json"):
      continue  # Metadata rewritten on every read; the record files carry the content.
    digest.update(f"{path.name}:{path.stat().length}".encode())
  return {"name": builder.info.full_name.rsplit("/", 1)[0], "version": str(builder.info.version),
          "split": split, "fingerprint": digest.hexdigest()[:16]}


@dataclasses.dataclass(frozen=True)
class ClipIndex:
  """Metadata of every clip in a split, in record order (arrays of length num_clips)."""
  clip_id: np.ndarray
  subject_key: np.ndarray   # "dataset/subject", unique across datasets
  dataset: np.ndarray
  label: np.ndarray
  num_frames: np.ndarray
  onset: np.ndarray
  apex: np.ndarray
  offset: np.ndarray

  def __len__(self) -> int:
    return len(self.clip_id)

  @property
  def subjects(self) -> list[str]:
    return sorted(set(self.subject_key.tolist()))

  def rows_of(self, subjects: Sequence[str]) -> np.ndarray:
    """Positions (int64, record order) of the clips of `subjects` (`dataset/subject` keys)."""
    return np.flatnonzero(np.isin(self.subject_key, list(subjects)))


class _KeepEncoded(tfds.decode.SkipDecoding):
  """Leaves a `Sequence(Image)` as its encoded bytes when read with NumPy (no TF)."""

  def decode_batch_example_np(self, serialized_example):
    return serialized_example


class RecordSource:
  """A split's records by index: `source[i]` is record i, frames still encoded bytes.

  A thin wrapper of `builder.as_data_source` (ArrayRecord, no TensorFlow) that
  names the record file at fault when a read fails (missing, truncated or
  corrupt), and pickles to Grain's worker processes.
  """

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str):
    check_record_format(builder)
    self.name = builder.info.full_name
    self.split = split
    self.data_dir = builder.data_dir
    self.rebuild = build_command(builder)
    try:
      # A sliced split ("train[:80%]") reads the files of its whole split.
      info = builder.info.splits[split.split("[", 1)[0]]
      self.files = [os.fspath(f) for f in info.filepaths]
      self._lengths = list(info.shard_lengths) if "[" not in split else None
      if builder.info.splits[split].num_examples == 0:
        raise ValueError("the split is empty")
    except (KeyError, ValueError) as e:
      raise ValueError(f"config.dataset.split={split!r} of {self.name} has no examples or is "
                       f"not a valid split (splits: {list(builder.info.splits)}): {e}") from e
    missing = [f for f in self.files if not os.path.isfile(f)]
    if missing:
      raise FileNotFoundError(f"record file {missing[0]} of dataset {self.name} is missing; "
                              f"delete {self.data_dir} and run `{self.rebuild}`")
    try:
      self._source = builder.as_data_source(split, decoders={"frames": _KeepEncoded()})
      self._len = len(self._source)
    except ImportError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (array_record raises bare errors)
      raise self._read_error(None, e) from e

  def __len__(self) -> int:
    return self._len

  def _file_of(self, i: Optional[int]) -> str:
    if i is None or self._lengths is None:
      return ", ".join(self.files)
    ends = np.cumsum(self._lengths)
    return self.files[min(int(np.searchsorted(ends, i, side="right")), len(self.files) - 1)]

  def _read_error(self, i: Optional[int], error: BaseException) -> OSError:
    return OSError(f"cannot read record {'' if i is None else i} of dataset {self.name} from "
                   f"record file {self._file_of(i)} (truncated or corrupt? "
                   f"{type(error).__name__}: {str(error)[:200]}); delete {self.data_dir} and run "
                   f"`{self.rebuild}`")

  def __getitem__(self, i: int) -> dict[str, Any]:
    try:
      return self._source[int(i)]
    except ImportError:
      raise  # A missing package (e.g. dm-tree) is not a damaged record: say which, as is.
    except Exception as e:  # pylint: disable=broad-except
      raise self._read_error(int(i), e) from e


def records(builder: tfds.core.DatasetBuilder, split: str = "train") -> RecordSource:
  """Random access to `split`'s records, frames left encoded (see `RecordSource`)."""
  return RecordSource(builder, split)


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def read_clip_index(builder: tfds.core.DatasetBuilder, split: str = "train") -> ClipIndex:
  """Reads labels, subjects and frame counts of every clip without decoding frames.

  Raises:
    ValueError: the split (config.dataset.split) is unknown or selects no example.
    OSError: a record file is truncated or corrupt (naming it).
  """
  if "intervals" in builder.info.features and "clip_id" not in builder.info.features:
    raise ValueError(f"{builder.info.full_name} is a long-video (spotting) dataset, one recording "
                     "per record, not clips: train on it with python -m mer_jax.spotting.train "
                     "(configs/spotting.py), or recognise clips of casme2, samm, smic, ...")
  source = records(builder, split)
  rows = collections.defaultdict(list)
  for i in range(len(source)):
    ex = source[i]
    for key in ("clip_id", "subject", "dataset"):
      rows[key].append(_text(ex[key]))
    for key in ("label", "onset", "apex", "offset"):
      rows[key].append(int(ex[key]))
    rows["num_frames"].append(len(ex["frames"]))
  if not rows:
    raise ValueError(f"split {split!r} of {builder.info.full_name} has no examples")
  keys = [f"{d}/{s}" for d, s in zip(rows["dataset"], rows["subject"])]
  return ClipIndex(
      clip_id=np.array(rows["clip_id"]), subject_key=np.array(keys),
      dataset=np.array(rows["dataset"]), label=np.array(rows["label"], np.int32),
      num_frames=np.array(rows["num_frames"], np.int32), onset=np.array(rows["onset"], np.int32),
      apex=np.array(rows["apex"], np.int32), offset=np.array(rows["offset"], np.int32))


@dataclasses.dataclass(frozen=True)
class Fold:
  """One LOSO fold. Subject keys are `dataset/subject`; the three sets are disjoint."""
  test_subject: str
  train_subjects: tuple[str, ...]
  validation_subjects: tuple[str, ...] = ()

  @property
  def name(self) -> str:
    return self.test_subject.replace("/", "__")


def loso_folds(index: ClipIndex, *, folds: Optional[Sequence[str]] = None,
               num_validation_subjects: int = 0, seed: int = 0) -> list[Fold]:
  """Leave-one-subject-out folds over the subjects of `index`.

  Args:
    index: the clip index of the split.
    folds: test subjects to run (keys `dataset/subject`, or bare subject ids
      when unambiguous); None runs every subject.
    num_validation_subjects: subjects carved from each fold's *training*
      subjects for validation (never the test subject), chosen by `seed`.
    seed: seed of the validation-subject choice.

  Raises:
    ValueError: an unknown fold subject, or too few subjects.
  """
  subjects = index.subjects
  if len(subjects) < 2 + num_validation_subjects:
    raise ValueError(f"LOSO needs at least {2 + num_validation_subjects} subjects "
                     f"(with {num_validation_subjects} validation subjects), the split has "
                     f"{len(subjects)}: {subjects}")
  if folds:
    chosen = []
    for name in folds:
      matches = [s for s in subjects if s == name or s.split("/", 1)[1] == str(name)]
      if len(matches) != 1:
        raise ValueError(f"config.folds: subject {name!r} is "
                         f"{'ambiguous' if matches else 'not in the dataset'}; subjects are "
                         f"{subjects}")
      chosen.append(matches[0])
  else:
    chosen = subjects
  result = []
  for test_subject in chosen:
    rest = [s for s in subjects if s != test_subject]
    rng = np.random.default_rng([seed, subjects.index(test_subject)])
    validation = tuple(sorted(rng.choice(rest, num_validation_subjects, replace=False).tolist())
                       ) if num_validation_subjects else ()
    train = tuple(s for s in rest if s not in validation)
    result.append(Fold(test_subject, train, validation))
  return result


def check_sampling(index: ClipIndex, input_config: ml_collections.ConfigDict) -> None:
  """Fails before any compute if a clip cannot give `num_frames` under the configured rules."""
  if input_config.sampling not in SAMPLING_MODES:
    raise ValueError(f"config.input.sampling must be one of {SAMPLING_MODES}, "
                     f"got {input_config.sampling!r}")
  if input_config.short_clip not in SHORT_CLIP_RULES:
    raise ValueError(f"config.input.short_clip must be one of {SHORT_CLIP_RULES}, "
                     f"got {input_config.short_clip!r}")
  # One frame is allowed (RGB input, e.g. the onset frame alone); the difference modes'
  # need for a second frame is checked by config_checks and the model.
  if input_config.num_frames < 1:
    raise ValueError(f"config.input.num_frames must be >= 1, got {input_config.num_frames}")
  bad = ~((0 <= index.onset) & (index.onset <= index.apex) & (index.apex <= index.offset)
          & (index.offset < index.num_frames))
  if bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f"clip {index.clip_id[i]}: onset/apex/offset {index.onset[i]}/"
                     f"{index.apex[i]}/{index.offset[i]} invalid for {index.num_frames[i]} frames")
  if input_config.short_clip == "error":
    available = (index.offset - index.onset + 1 if input_config.sampling == "uniform"
                 else index.num_frames)
    short = available < input_config.num_frames
    if short.any():
      names = index.clip_id[short][:5].tolist()
      raise ValueError(
          f"config.input.num_frames={input_config.num_frames} exceeds the frames available in "
          f"{int(short.sum())} clip(s) (e.g. {names}, shortest {int(available.min())}) and "
          "config.input.short_clip='error'; use 'repeat' or 'pad'")


def sample_frame_indices(num_stored: int, onset: int, apex: int, offset: int, *,
                         num_frames: int, sampling: str, short_clip: str, jitter: int = 0,
                         rng: Optional[np.random.Generator] = None
                         ) -> tuple[np.ndarray, np.ndarray]:
  """Chooses `num_frames` frame indices of one clip.

  * "uniform": evenly spaced over onset..offset (inclusive).
  * "apex": a contiguous window of `num_frames` centred on the apex, shifted
    inside the clip when it would cross an end.
  Training jitter moves onset/offset (uniform) or the window centre (apex) by up
  to +-`jitter` frames, drawn from `rng` (seeded per element: deterministic resume).

  A span shorter than `num_frames`: "repeat" stretches it (frames repeat, all
  valid); "pad" takes each frame once and pads the end with copies of the last
  frame marked invalid (mask False), which the models ignore. ("error" is rejected earlier by
  `check_sampling`; here it behaves as "repeat".)

  Returns:
    `(indices (num_frames,) int32, mask (num_frames,) bool)`.
  """
  shift = (0, 0)
  if jitter > 0:
    if rng is None:
      raise ValueError("sample_frame_indices: jitter > 0 needs an rng")
    shift = tuple(int(x) for x in rng.integers(-jitter, jitter + 1, size=2))
  start, end = frame_span(num_stored, onset, apex, offset, num_frames=num_frames,
                          sampling=sampling, shift=shift)
  span = end - start + 1
  positions = np.arange(num_frames)
  # np.round, like tf.round before it, rounds halves to even.
  stretched = start + np.round(np.linspace(0.0, span - 1, num_frames, dtype=np.float32)
                               ).astype(np.int32)
  if short_clip == "pad" and span < num_frames:
    return (np.minimum(start + positions, end).astype(np.int32), positions < span)
  return stretched.astype(np.int32), np.ones(num_frames, bool)


def frame_span(num_stored: int, onset: int, apex: int, offset: int, *, num_frames: int,
               sampling: str, shift: tuple[int, int] = (0, 0)) -> tuple[int, int]:
  """The first and last frame (inclusive) a clip's `num_frames` indices are taken from.

  `shift` is the temporal jitter drawn for the clip: onset/offset shifts ("uniform") or the
  window centre's shift (its first element, "apex"). See `sample_frame_indices`.
  """
  last = int(num_stored) - 1
  if sampling == "uniform":
    start = int(np.clip(onset + shift[0], 0, last))
    end = int(np.clip(offset + shift[1], start, last))
  else:  # "apex": window at native frame rate.
    centre = int(np.clip(apex + shift[0], 0, last))
    start = int(np.clip(centre - num_frames // 2, 0, max(num_stored - num_frames, 0)))
    end = min(start + num_frames - 1, last)
  return start, end


def reachable_frames(num_stored: int, onset: int, apex: int, offset: int, *, num_frames: int,
                     sampling: str, jitter: int) -> tuple[int, int]:
  """`(lo, hi)`: every frame any training draw (jitter up to +-`jitter`) or evaluation of the
  clip can sample lies in lo..hi (inclusive)."""
  spans = [frame_span(num_stored, onset, apex, offset, num_frames=num_frames, sampling=sampling,
                      shift=(a, b))
           for a in range(-jitter, jitter + 1) for b in range(-jitter, jitter + 1)]
  return min(s for s, _ in spans), max(e for _, e in spans)


def decode_frames(encoded: Sequence[bytes], indices: Sequence[int], *,
                  where: str = "clip") -> np.ndarray:
  """Decodes the frames `indices` of a clip's encoded PNG/JPEG frames -> uint8 `(N, H, W, 3)` RGB.

  Each distinct frame is decoded once (repeated indices are copies).

  Raises:
    ValueError: naming `where` and the frame that OpenCV cannot decode.
  """
  decoded = {}
  for t in dict.fromkeys(int(i) for i in indices):
    image = cv2.imdecode(np.frombuffer(encoded[t], np.uint8), cv2.IMREAD_COLOR)
    if image is None:
      raise ValueError(f"{where}: frame {t} is not a decodable PNG/JPEG")
    decoded[t] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
  return np.stack([decoded[int(i)] for i in indices])


def resize_frames(frames: np.ndarray, *, size: int, resize: Optional[int] = None) -> np.ndarray:
  """Resizes `(N, H, W, C)` frames (area filter) so the short side is `resize` (default `size`).

  Both sides stay >= `size` (`resize_shape`). Returns `(N, new_h, new_w, C)` of the
  input dtype (uint8 rounded and clipped). Rounding after or before a crop gives the same
  pixels, so resizing once and cropping later equals `resize_and_crop`.
  """
  return _to_dtype(_resized_float(frames, size=size, resize=resize), frames.dtype)


def crop_offset_or_centre(shape: tuple[int, int], size: int,
                          crop_offset: Optional[tuple[int, int]] = None) -> tuple[int, int]:
  """`(top, left)` of an S x S crop of a `(new_h, new_w)` frame: `crop_offset` clipped to the
  frame, or centred when None."""
  new_h, new_w = shape
  if crop_offset is None:
    return (new_h - size) // 2, (new_w - size) // 2
  return min(crop_offset[0], new_h - size), min(crop_offset[1], new_w - size)


def resize_and_crop(frames: np.ndarray, *, size: int, resize: Optional[int] = None,
                    crop_offset: Optional[tuple[int, int]] = None) -> np.ndarray:
  """Resizes `(N, H, W, C)` frames (area filter) so the short side is `resize`, then crops S x S.

  Args:
    frames: uint8 or float frames.
    size: S, the side of the square crop.
    resize: short side before cropping (default `size`); both sides stay >= S.
    crop_offset: `(top, left)` of the crop (default: centred); clipped to the image.

  Returns:
    `(N, S, S, C)` of the input dtype (uint8 rounded and clipped).
  """
  out = _resized_float(frames, size=size, resize=resize)
  top, left = crop_offset_or_centre(out.shape[1:3], size, crop_offset)
  return _to_dtype(out[:, top:top + size, left:left + size], frames.dtype)


def _resized_float(frames: np.ndarray, *, size: int, resize: Optional[int]) -> np.ndarray:
  height, width = frames.shape[1:3]
  new_h, new_w = resize_shape(height, width, size=size, resize=resize)
  if (new_h, new_w) == (height, width):
    return np.asarray(frames, np.float32)
  resized = [cv2.resize(np.asarray(f, np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA)
             for f in frames]
  return np.stack([r.reshape(new_h, new_w, -1) for r in resized])


def _to_dtype(frames: np.ndarray, dtype) -> np.ndarray:
  if dtype == np.uint8:
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)
  return frames.astype(dtype)


def _clip_features(ex: dict, frames: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
  return {"frames": frames, "mask": mask, "label": np.int32(ex["label"]),
          **{k: np.bytes_(ex[k]) for k in HOST_FIELDS}}


_CLIP_FIELDS = ("frames", "label", "onset", "apex", "offset") + HOST_FIELDS


class ReadRecord(grain.transforms.Map):
  """Record index -> the fields a clip batch needs, frames still encoded (in Grain's workers).

  With `cache=True` each process keeps the records it has read (encoded, as
  the old tf.data pipeline's `cache()` did): from the second epoch on a clip
  costs its decoding only, not a read and a parse.
  """

  def __init__(self, source: RecordSource, cache: bool = False):
    self.source = source
    self.cache = cache
    self._records: dict[int, dict[str, Any]] = {}

  def __getstate__(self):  # Workers start with an empty cache.
    return {**self.__dict__, "_records": {}}

  def map(self, element: int) -> dict[str, Any]:
    record = self._records.get(element)
    if record is None:
      full = self.source[element]
      record = {k: full[k] for k in _CLIP_FIELDS}
      if self.cache:
        self._records[element] = record
    return record


def draw_frame_indices(ex: dict, num_stored: int, cfg: ml_collections.ConfigDict, jitter: int,
                       rng: Optional[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
  """A clip's sampled frame indices and mask (`sample_frame_indices` on its record fields).

  `ex` needs `onset`, `apex` and `offset`; `num_stored` is the clip's stored frame count.
  Consumes the temporal-jitter draws of `rng` (the first draws of a training clip).
  """
  return sample_frame_indices(
      int(num_stored), int(ex["onset"]), int(ex["apex"]), int(ex["offset"]),
      num_frames=cfg.num_frames, sampling=cfg.sampling, short_clip=cfg.short_clip,
      jitter=jitter, rng=rng)


def resize_shape(height: int, width: int, *, size: int, resize: Optional[int] = None
                 ) -> tuple[int, int]:
  """`(new_h, new_w)` of a frame after `resize_and_crop`'s resize (short side `resize`, >= S)."""
  resize = resize or size
  scale = resize / min(height, width)
  return (max(int(np.round(height * scale)), size), max(int(np.round(width * scale)), size))


def draw_crop_and_flip(frame_shape: tuple[int, int], cfg: ml_collections.ConfigDict,
                       rng: np.random.Generator) -> tuple[Optional[tuple[int, int]], bool]:
  """A training clip's crop offset `(top, left)` (None: centred) and flip decision.

  `frame_shape` is the clip's stored `(height, width)`. Consumes the draws of `rng` that
  follow the temporal jitter's, in `TrainClip`'s order: crop (top, left), then flip.
  """
  size = cfg.image_size
  crop_offset = None
  if cfg.get("random_crop", False):
    new_h, new_w = resize_shape(*frame_shape, size=size, resize=cfg.get("resize_size", None))
    crop_offset = (int(rng.integers(0, new_h - size + 1)), int(rng.integers(0, new_w - size + 1)))
  # One decision per clip: every frame of a clip is flipped or none is.
  flip = bool(cfg.get("flip", False) and rng.random() < 0.5)
  return crop_offset, flip


class TrainClip(grain.transforms.RandomMap):
  """Samples, decodes and augments one training clip. Frames uint8 `(N, S, S, 3)`.

  Every draw (temporal jitter, crop, flip) comes from the element's `rng`,
  which Grain seeds from the dataset seed and the element's position
  (`draw_frame_indices`, then `draw_crop_and_flip`: the device-resident frame
  store of `mer_jax.resident_frames` makes the same draws without decoding).
  """

  def __init__(self, input_config: ml_collections.ConfigDict):
    self.cfg = input_config

  def random_map(self, element: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    cfg = self.cfg
    indices, mask = draw_frame_indices(element, len(element["frames"]), cfg,
                                       cfg.temporal_jitter, rng)
    frames = decode_frames(element["frames"], indices,
                           where=f"clip {_text(element['clip_id'])}")
    crop_offset, flip = draw_crop_and_flip(frames.shape[1:3], cfg, rng)
    frames = resize_and_crop(frames, size=cfg.image_size, resize=cfg.get("resize_size", None),
                             crop_offset=crop_offset)
    if flip:
      frames = np.ascontiguousarray(frames[:, :, ::-1])
    # Padded frames repeat the last valid frame (the indices do): a black frame
    # would be a step edge that temporal filters (magnification) would amplify.
    return _clip_features(element, frames, mask)


class EvalClip(grain.transforms.Map):
  """Samples and decodes one clip for evaluation: no jitter, centre crop, no flip."""

  def __init__(self, input_config: ml_collections.ConfigDict):
    self.cfg = input_config

  def map(self, element: dict) -> dict[str, np.ndarray]:
    cfg = self.cfg
    indices, mask = draw_frame_indices(element, len(element["frames"]), cfg, 0, None)
    frames = decode_frames(element["frames"], indices, where=f"clip {_text(element['clip_id'])}")
    return _clip_features(element, resize_and_crop(frames, size=cfg.image_size,
                                                   resize=cfg.get("resize_size", None)), mask)


def fold_sampler(index: ClipIndex, subjects: Sequence[str], *, seed: int,
                 shard_options: Optional[grain.sharding.ShardOptions] = None
                 ) -> grain.MapDataset:
  """A fold's endless training stream of record indices: its own clips only, shuffled.

  Each epoch is a fresh permutation of the fold's clips (`sampling.FoldSampler`), a
  pure function of `seed`. With `shard_options` (several hosts) each process
  draws from its own share of the clips.

  Args:
    index: the split's clip index.
    subjects: the fold's training subjects (`dataset/subject` keys).
    seed: the fold's data seed.
    shard_options: this process's shard (default: all clips).

  Returns:
    An infinite `grain.MapDataset` of ints (record positions in the split).
  """
  rows = index.rows_of(subjects)
  if not len(rows):
    raise ValueError(f"no clips of subjects {list(subjects)[:5]} in the clip index")
  if shard_options is not None and shard_options.shard_count > 1:
    rows = rows[shard_options.shard_index::shard_options.shard_count]
    if not len(rows):
      raise ValueError(f"process shard {shard_options.shard_index} of "
                       f"{shard_options.shard_count} holds no training clip")
  return grain.MapDataset.source(sampling.FoldSampler(rows, seed))


def _read_options(input_config: ml_collections.ConfigDict) -> grain.ReadOptions:
  """Grain's threads (per process) and batches read ahead: `config.input.num_threads`
  (default: the cores, at most 8) and `config.input.prefetch_batches` (default 2 per thread)."""
  threads = int(input_config.get("num_threads", None) or min(8, os.cpu_count() or 1))
  ahead = int(input_config.get("prefetch_batches", None) or 2 * threads)
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=ahead)


def _in_workers(ds: grain.IterDataset, input_config: ml_collections.ConfigDict
                ) -> grain.IterDataset:
  workers = int(input_config.get("num_workers", 0) or 0)
  if workers < 0:
    raise ValueError(f"config.input.num_workers must be >= 0, got {workers}")
  if workers == 0:
    return ds  # Grain's threads in this process.
  if not flags.FLAGS.is_parsed():
    # Grain's worker start-up reads its absl flags; a program without absl.app
    # (pytest, a notebook, an argparse script) has not parsed them: use their defaults.
    flags.FLAGS.mark_as_parsed()
  return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))


def train_batches(source: RecordSource, sampler: grain.MapDataset,
                  input_config: ml_collections.ConfigDict, *, batch_size: int, seed: int
                  ) -> grain.MapDataset:
  """A fold's endless batches as a random-access `MapDataset` (batch s is `ds[s]`).

  `sampler` is the fold's `fold_sampler`; `seed` seeds the augmentation of
  each element from its stream position. `config.input.cache_records`
  (default True) keeps the fold's encoded records in memory after the first
  epoch (`ReadRecord`). Batches hold `frames` uint8
  `(B, N, S, S, 3)`, `mask` bool `(B, N)`, `label` int32 `(B,)` and the host
  fields `clip_id`, `subject`, `dataset` (bytes `(B,)`).
  """
  cache = bool(input_config.get("cache_records", True))
  return (sampler.map(ReadRecord(source, cache=cache))
          .random_map(TrainClip(input_config), seed=seed)
          .batch(batch_size, drop_remainder=True))


class TrainIterator:
  """The training batches of one fold from a start step, with a checkpointable state.

  `get_state()` is JSON: the step the stream was opened at and Grain's iterator
  state. `set_state` (from a checkpoint) reopens the stream at that step and
  restores Grain's position: the next batch is the one after the last batch
  consumed before the save, nothing is replayed.
  """

  def __init__(self, batches: grain.MapDataset, input_config: ml_collections.ConfigDict,
               start_step: int = 0):
    self._batches = batches
    self._config = input_config
    self._open(start_step)

  def _open(self, start_step: int) -> None:
    self._start_step = int(start_step)
    ds = self._batches[self._start_step:].to_iter_dataset(_read_options(self._config))
    self._iterator = iter(_in_workers(ds, self._config))

  def __iter__(self) -> "TrainIterator":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._iterator)

  def get_state(self) -> dict[str, Any]:
    return {"start_step": self._start_step, "grain": self._iterator.get_state()}

  def set_state(self, state: dict[str, Any]) -> None:
    if not isinstance(state, dict) or set(state) != {"start_step", "grain"}:
      raise ValueError(f"not a mer_jax data iterator state: {str(state)[:200]}")
    self._open(state["start_step"])
    self._iterator.set_state(state["grain"])


def create_train_dataset(builder: tfds.core.DatasetBuilder, split: str,
                         subjects: Sequence[str], input_config: ml_collections.ConfigDict, *,
                         batch_size: int, seed: int, start_step: int = 0,
                         process_index: int = 0, process_count: int = 1,
                         index: Optional[ClipIndex] = None,
                         data_state: Optional[dict] = None) -> TrainIterator:
  """Endless shuffled, augmented training batches of this process's share of `subjects`.

  Args:
    batch_size: examples per batch on this process.
    seed: fixes the shuffle order and every augmentation draw.
    start_step: the first batch is batch `start_step` of the stream (resume
      without a saved data state; nothing before it is read).
    process_index, process_count: this process's share of the clips.
    index: the split's clip index (read here if not given).
    data_state: a `TrainIterator.get_state()` from a checkpoint; overrides
      `start_step`.

  Returns:
    A `TrainIterator` of numpy batches (see `train_batches`).
  """
  source = records(builder, split)
  index = index if index is not None else read_clip_index(builder, split)
  shard = grain.sharding.ShardOptions(shard_index=process_index, shard_count=process_count)
  sampler = fold_sampler(index, subjects, seed=seed, shard_options=shard)
  iterator = TrainIterator(train_batches(source, sampler, input_config, batch_size=batch_size,
                                         seed=seed), input_config, start_step)
  if data_state is not None:
    iterator.set_state(data_state)
  return iterator


def create_eval_dataset(builder: tfds.core.DatasetBuilder, split: str, subjects: Sequence[str],
                        input_config: ml_collections.ConfigDict, *, batch_size: int,
                        index: Optional[ClipIndex] = None) -> grain.IterDataset:
  """Every clip of `subjects` once, in record order; the last batch may be short.

  Returns:
    A `grain.IterDataset` of numpy batches (fields as `train_batches`).
  """
  source = records(builder, split)
  index = index if index is not None else read_clip_index(builder, split)
  rows = index.rows_of(subjects).tolist()
  if not rows:
    raise ValueError(f"no clips for subjects {list(subjects)} in split {split!r}")
  ds = (grain.MapDataset.source(rows).map(ReadRecord(source)).map(EvalClip(input_config))
        .batch(batch_size, drop_remainder=False))
  return ds.to_iter_dataset(_read_options(input_config))


def pad_batch(batch: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Pads a short numpy batch to `batch_size` with zero examples; adds `valid` `(B,)` bool."""
  n = len(batch["label"])
  if n > batch_size:
    raise ValueError(f"batch of {n} exceeds batch_size {batch_size}")
  out = {}
  for key, value in batch.items():
    pad = np.zeros((batch_size - n,) + value.shape[1:], value.dtype)
    out[key] = np.concatenate([value, pad]) if n < batch_size else value
  out["valid"] = np.arange(batch_size) < n
  return out


def device_arrays(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The numeric fields that go to the accelerators."""
  return {k: v for k, v in batch.items() if k not in HOST_FIELDS}


def shard_for_devices(batch: dict[str, np.ndarray], *, mode: str,
                      mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Puts one process-local batch on the local devices.

  mode "pmap": arrays `(local_devices, B / local_devices, ...)`; mode
  "shard_map": one global array `(global B, ...)` sharded over `mesh`'s "data"
  axis (assembled across processes with `make_array_from_process_local_data`).
  """
  if mode == "pmap":
    devices = jax.local_device_count()
    local_mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ("data",))
    local = jax.sharding.NamedSharding(local_mesh, jax.sharding.PartitionSpec("data"))
    return {k: jax.device_put(v.reshape((devices, -1) + v.shape[1:]), local)
            for k, v in batch.items()}
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


class DevicePrefetcher:
  """Batches on the devices, `size` ahead, moved by a background thread.

  (flax.jax_utils.prefetch_to_device is synchronous and pmap-only; this one
  serves both step modes and overlaps the transfer with the running step.)
  `data_state` is the host iterator's state right after the last batch this
  prefetcher handed out (None if the iterator has no `get_state`): what a
  checkpoint must store, since the thread reads ahead of the training loop.
  """

  _DONE = object()

  def __init__(self, batches: Iterator[dict[str, np.ndarray]], *, mode: str,
               mesh: jax.sharding.Mesh, size: int = 2):
    self._buffer: queue.Queue = queue.Queue(maxsize=size)
    self.data_state: Optional[dict] = None
    self._finished = False

    def producer():
      try:
        iterator = iter(batches)
        get_state = getattr(iterator, "get_state", None)
        for batch in iterator:
          state = get_state() if get_state is not None else None
          self._buffer.put((shard_for_devices(device_arrays(batch), mode=mode, mesh=mesh),
                            state))
        self._buffer.put(self._DONE)
      except BaseException as e:  # Re-raised in the consumer so errors are not lost.
        self._buffer.put(e)

    threading.Thread(target=producer, daemon=True).start()

  def __iter__(self) -> "DevicePrefetcher":
    return self

  def __next__(self) -> dict[str, jax.Array]:
    if self._finished:
      raise StopIteration
    item = self._buffer.get()
    if item is self._DONE:
      self._finished = True
      raise StopIteration
    if isinstance(item, BaseException):
      self._finished = True
      raise item
    batch, self.data_state = item
    return batch


def prefetch_to_devices(batches: Iterator[dict[str, np.ndarray]], *, mode: str,
                        mesh: jax.sharding.Mesh, size: int = 2) -> DevicePrefetcher:
  """Moves batches to the devices from a background thread, `size` batches ahead."""
  return DevicePrefetcher(batches, mode=mode, mesh=mesh, size=size)


def class_weights(index: ClipIndex, subjects: Sequence[str], num_classes: int) -> np.ndarray:
  """Inverse-frequency class weights over the given training subjects, mean 1 over samples."""
  labels = index.label[index.rows_of(subjects)]
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  if (counts == 0).any():
    missing = [schema.CLASS_NAMES[c] for c in np.flatnonzero(counts == 0)]
    raise ValueError(f"training subjects have no example of class(es) {missing}; "
                     "class_weighting='balanced' is undefined")
  weights = counts.sum() / (num_classes * counts)
  return weights.astype(np.float32)


def loss_class_weights(config: ml_collections.ConfigDict, index: ClipIndex,
                       subjects: Sequence[str]) -> np.ndarray:
  """A fold's `(num_classes,)` float32 loss weights: `class_weights` over its training
  `subjects` when `config.class_weighting == "balanced"`, else ones."""
  if config.class_weighting == "balanced":
    return class_weights(index, subjects, schema.NUM_CLASSES)
  return np.ones(schema.NUM_CLASSES, np.float32)
