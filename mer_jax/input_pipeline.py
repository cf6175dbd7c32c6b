"""Input pipeline: any dataset with the shared schema -> LOSO folds -> device batches.

The path of one clip:

1. `read_clip_index` reads every record's metadata once (frames left encoded)
   so folds and sampling rules are checked before any compute.
2. `loso_folds` splits subjects: one held-out test subject per fold, the rest
   train (optionally minus a few validation subjects carved from them). Subjects
   are keyed `dataset/subject` so composite datasets cannot collide.
3. `create_train_dataset` / `create_eval_dataset` stream tf.data records of
   exactly those subjects, sample N frame indices (`sample_frame_indices`),
   decode only those N frames, resize/crop/flip, and batch. Decoding and
   augmentation run in tf.data's own thread pool, off the training thread.
4. `prefetch_to_devices` puts batches on the accelerators from a background
   thread, laid out for `pmap` (leading device axis) or for `shard_map`/`jit`
   (one global array sharded over the mesh's data axis).

Frames stay uint8 up to the device: normalisation (and optional Eulerian
magnification) happen inside the model, so host->device traffic is 4x smaller.

The training stream is a pure function of (seed, fold, step): resuming at step
s after a kill rebuilds the stream and skips s batches of still-encoded records,
so a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import importlib
import os
import queue
import threading
from typing import Iterator, Optional, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mer_jax import schema

SAMPLING_MODES = ("uniform", "apex")
SHORT_CLIP_RULES = ("repeat", "pad", "error")
HOST_FIELDS = ("clip_id", "subject", "dataset")  # Strings kept on the host for reports.


# The builder packages in data_builders/ (one per dataset).
BUILDER_PACKAGES = ("synthetic_me", "casme2", "samm", "smic", "megc2019_composite", "casme3")


def get_builder(dataset_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder named by `config.dataset` (name, builder_config, data_dir)."""
  name = dataset_config.name
  if name not in BUILDER_PACKAGES:
    raise ValueError(f"config.dataset.name: unknown dataset {name!r}; mer_jax builders are "
                     f"{list(BUILDER_PACKAGES)}")
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
    return builder
  if not dataset_config.get("build_if_missing", False):
    raise ValueError(
        f"dataset {builder.info.full_name} is not built in {builder.data_dir}; run "
        f"`python -m data_builders.build {builder.name}/{builder.builder_config.name}` "
        "or set config.dataset.build_if_missing=True")
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
      fresh.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
      return get_builder(dataset_config)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


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
  data_dir = builder.data_dir
  for file_name in sorted(tf.io.gfile.listdir(data_dir)):
    if file_name.endswith(".json"):
      continue  # Metadata rewritten on every read; the record files carry the content.
    digest.update(f"{file_name}:{tf.io.gfile.stat(f'{data_dir}/{file_name}').length}".encode())
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


def _metadata_dataset(builder: tfds.core.DatasetBuilder, split: str) -> tf.data.Dataset:
  return builder.as_dataset(
      split=split, shuffle_files=False,
      decoders={"frames": tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(interleave_cycle_length=1, enable_ordering_guard=False))


def read_clip_index(builder: tfds.core.DatasetBuilder, split: str = "train") -> ClipIndex:
  """Reads labels, subjects and frame counts of every clip without decoding frames.

  Raises:
    ValueError: the split (config.dataset.split) is unknown or selects no example.
  """
  try:
    ds = _metadata_dataset(builder, split)
  except (ValueError, KeyError) as e:
    raise ValueError(f"config.dataset.split={split!r} of {builder.info.full_name} has no "
                     f"examples or is not a valid split (splits: {list(builder.info.splits)}): "
                     f"{e}") from e
  ds = ds.map(
      lambda ex: {
          "clip_id": ex["clip_id"], "subject": ex["subject"], "dataset": ex["dataset"],
          "label": ex["label"], "num_frames": tf.shape(ex["frames"])[0],
          "onset": ex["onset"], "apex": ex["apex"], "offset": ex["offset"]})
  rows = collections.defaultdict(list)
  for ex in ds.as_numpy_iterator():
    for key, value in ex.items():
      rows[key].append(value.decode() if isinstance(value, bytes) else value)
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
  if input_config.num_frames < 2:
    raise ValueError(f"config.input.num_frames must be >= 2, got {input_config.num_frames}")
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


def sample_frame_indices(num_stored: tf.Tensor, onset: tf.Tensor, apex: tf.Tensor,
                         offset: tf.Tensor, *, num_frames: int, sampling: str, short_clip: str,
                         jitter: int = 0, seed: Optional[tf.Tensor] = None
                         ) -> tuple[tf.Tensor, tf.Tensor]:
  """Chooses `num_frames` frame indices of one clip.

  * "uniform": evenly spaced over onset..offset (inclusive).
  * "apex": a contiguous window of `num_frames` centred on the apex, shifted
    inside the clip when it would cross an end.
  Training jitter moves onset/offset (uniform) or the window centre (apex) by up
  to +-`jitter` frames, drawn with the stateless `seed` (deterministic resume).

  A span shorter than `num_frames`: "repeat" stretches it (frames repeat, all
  valid); "pad" takes each frame once and pads the end with copies of the last
  frame marked invalid (mask False), which the models ignore. ("error" is rejected earlier by
  `check_sampling`; here it behaves as "repeat".)

  Returns:
    `(indices (num_frames,) int32, mask (num_frames,) bool)`.
  """
  last = num_stored - 1
  shift = tf.zeros([2], tf.int32)
  if jitter > 0:
    shift = tf.random.stateless_uniform([2], seed, -jitter, jitter + 1, dtype=tf.int32)
  if sampling == "uniform":
    start = tf.clip_by_value(onset + shift[0], 0, last)
    end = tf.clip_by_value(offset + shift[1], start, last)
  else:  # "apex": window at native frame rate.
    centre = tf.clip_by_value(apex + shift[0], 0, last)
    start = tf.clip_by_value(centre - num_frames // 2, 0, tf.maximum(num_stored - num_frames, 0))
    end = tf.minimum(start + num_frames - 1, last)
  span = end - start + 1
  positions = tf.range(num_frames)
  if short_clip == "pad":
    stretched = start + tf.cast(tf.round(tf.linspace(0.0, tf.cast(span - 1, tf.float32),
                                                     num_frames)), tf.int32)
    padded = tf.minimum(start + positions, end)
    indices = tf.where(span >= num_frames, stretched, padded)
    mask = tf.logical_or(span >= num_frames, positions < span)
  else:
    indices = start + tf.cast(tf.round(tf.linspace(0.0, tf.cast(span - 1, tf.float32),
                                                   num_frames)), tf.int32)
    mask = tf.ones([num_frames], tf.bool)
  return indices, mask


def _subject_filter(subjects: Sequence[str]):
  table = tf.constant(list(subjects))

  def keep(ex):
    key = tf.strings.join([ex["dataset"], ex["subject"]], separator="/")
    return tf.reduce_any(tf.equal(key, table))
  return keep


def _preprocess(ex: dict, input_config: ml_collections.ConfigDict, *, train: bool,
                seed: Optional[tf.Tensor]) -> dict:
  """Samples, decodes and augments one clip. Output frames uint8 (N, S, S, 3)."""
  cfg = input_config
  seeds = (tf.random.experimental.stateless_split(seed, 3) if seed is not None
           else [None, None, None])
  encoded = ex["frames"]
  indices, mask = sample_frame_indices(
      tf.shape(encoded)[0], ex["onset"], ex["apex"], ex["offset"],
      num_frames=cfg.num_frames, sampling=cfg.sampling, short_clip=cfg.short_clip,
      jitter=cfg.temporal_jitter if train else 0, seed=seeds[0])
  frames = tf.map_fn(
      lambda s: tf.io.decode_image(s, channels=3, expand_animations=False),
      tf.gather(encoded, indices), fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  size = cfg.image_size
  resize = cfg.get("resize_size", None) or size
  height, width = tf.shape(frames)[1], tf.shape(frames)[2]
  scale = resize / tf.cast(tf.minimum(height, width), tf.float32)
  new_hw = tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float32) * scale), tf.int32)
  new_hw = tf.maximum(new_hw, size)
  frames = tf.image.resize(frames, new_hw, method="area")
  if train and cfg.get("random_crop", False):
    frames = tf.image.stateless_random_crop(frames, [cfg.num_frames, size, size, 3], seeds[1])
  else:
    top = (new_hw[0] - size) // 2
    left = (new_hw[1] - size) // 2
    frames = frames[:, top:top + size, left:left + size, :]
  if train and cfg.get("flip", False):
    # One decision per clip: every frame of a clip is flipped or none is.
    flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
    frames = tf.cond(flip, lambda: tf.reverse(frames, axis=[2]), lambda: frames)
  # Padded frames repeat the last valid frame (the indices do): a black frame
  # would be a step edge that temporal filters (magnification) would amplify.
  frames = tf.cast(tf.clip_by_value(tf.round(frames), 0, 255), tf.uint8)
  frames = tf.ensure_shape(frames, [cfg.num_frames, size, size, 3])
  return {"frames": frames, "mask": mask, "label": tf.cast(ex["label"], tf.int32),
          **{k: ex[k] for k in HOST_FIELDS}}


def _records(builder: tfds.core.DatasetBuilder, split: str, subjects: Sequence[str]
             ) -> tf.data.Dataset:
  return _metadata_dataset(builder, split).filter(_subject_filter(subjects))


def create_train_dataset(builder: tfds.core.DatasetBuilder, split: str,
                         subjects: Sequence[str], input_config: ml_collections.ConfigDict, *,
                         batch_size: int, seed: int, start_step: int = 0,
                         process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Endless shuffled, augmented training batches of this process's share of `subjects`.

  Args:
    batch_size: examples per batch on this process.
    seed: fixes the shuffle order and every augmentation draw.
    start_step: batches to skip (resume); the records are skipped still encoded.
  """
  ds = _records(builder, split, subjects)
  ds = ds.shard(process_count, process_index).cache()
  ds = ds.repeat().shuffle(input_config.get("shuffle_buffer", 1024), seed=seed,
                           reshuffle_each_iteration=True)
  ds = ds.enumerate().skip(start_step * batch_size)
  ds = ds.map(
      lambda i, ex: _preprocess(ex, input_config, train=True,
                                seed=tf.stack([tf.constant(seed, tf.int64), i])),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def create_eval_dataset(builder: tfds.core.DatasetBuilder, split: str, subjects: Sequence[str],
                        input_config: ml_collections.ConfigDict, *, batch_size: int
                        ) -> tf.data.Dataset:
  """Every clip of `subjects` once, in record order; the last batch may be short."""
  ds = _records(builder, split, subjects)
  ds = ds.map(lambda ex: _preprocess(ex, input_config, train=False, seed=None),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)


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


def prefetch_to_devices(batches: Iterator[dict[str, np.ndarray]], *, mode: str,
                        mesh: jax.sharding.Mesh, size: int = 2
                        ) -> Iterator[dict[str, jax.Array]]:
  """Moves batches to the devices from a background thread, `size` batches ahead.

  (flax.jax_utils.prefetch_to_device is synchronous and pmap-only; this one
  serves both step modes and overlaps the transfer with the running step.)
  """
  buffer: queue.Queue = queue.Queue(maxsize=size)
  done = object()

  def producer():
    try:
      for batch in batches:
        buffer.put(shard_for_devices(device_arrays(batch), mode=mode, mesh=mesh))
      buffer.put(done)
    except BaseException as e:  # Re-raised in the consumer so errors are not lost.
      buffer.put(e)

  threading.Thread(target=producer, daemon=True).start()
  while True:
    item = buffer.get()
    if item is done:
      return
    if isinstance(item, BaseException):
      raise item
    yield item


def class_weights(index: ClipIndex, subjects: Sequence[str], num_classes: int) -> np.ndarray:
  """Inverse-frequency class weights over the given training subjects, mean 1 over samples."""
  labels = index.label[np.isin(index.subject_key, list(subjects))]
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  if (counts == 0).any():
    missing = [schema.CLASS_NAMES[c] for c in np.flatnonzero(counts == 0)]
    raise ValueError(f"training subjects have no example of class(es) {missing}; "
                     "class_weighting='balanced' is undefined")
  weights = counts.sum() / (num_classes * counts)
  return weights.astype(np.float32)
