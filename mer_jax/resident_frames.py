"""Device-resident low-resolution clips: a dataset's frames decoded once and kept on the device.

The frame pipeline (`mer_jax.input_pipeline`) decodes, resizes and crops the N
sampled frames of every clip of every batch on the host. For low-resolution
inputs (the demo's 32 x 32 clips: a few MB for a whole dataset) this module
does that work once per run and lets the fold-parallel trainer
(`mer_jax.fold_parallel`) gather batches on the device:

1. `build_store` reads each clip's record once and keeps the frames any
   training draw or evaluation can sample (`input_pipeline.reachable_frames`:
   onset..offset widened by the temporal jitter, or the apex window),
   resized as the pipeline resizes them (`input_pipeline.resize_frames`:
   short side `resize_size`, area filter, uint8), in one array padded to the
   largest resized frame. Its size is checked against
   `config.input.resident_max_mib` while it is built: a dataset that does not
   fit is refused with its size, before any training.
2. `FrameSchedule` makes a fold's training draws -- clip rows, frame indices,
   mask, crop offset, flip -- with the frame pipeline's own Grain stream and
   draw functions (`input_pipeline.fold_sampler`, `draw_frame_indices`,
   `draw_crop_and_flip`) under the same seeds, without decoding anything:
   step s is the batch the serial trainer's step s sees.
3. `FrameBatcher` (inside the jitted step) gathers those frames from the
   store, crops and mirrors them: the batch is bit-identical to the host
   pipeline's uint8 batch (tests/test_resident_frames.py).

Evaluation draws use no jitter, a centred crop and no flip (`EvalClip`'s rule).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Sequence

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mer_jax import input_pipeline

MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class FrameStore:
  """Every clip's reachable frames, resized, in one array (clip-index order).

  Attributes:
    frames: uint8 `(total_frames, H, W, 3)`; a clip's frames lo..hi are rows
      `first[c] .. first[c] + hi - lo`, resized to `shape[c]` and padded at the
      bottom and right to the largest `(H, W)` (padding is never cropped).
    first: int32 `(num_clips,)` row of each clip's frame `lo[c]`.
    lo: int32 `(num_clips,)` the clip's first stored frame number.
    num_stored: int32 `(num_clips,)` frames in the clip's record.
    source_shape: int32 `(num_clips, 2)` `(height, width)` of each clip's recorded frames.
    shape: int32 `(num_clips, 2)` resized `(height, width)` of each clip.
    image_size: S, the side of the square crop fed to the model.
  """
  frames: np.ndarray
  first: np.ndarray
  lo: np.ndarray
  num_stored: np.ndarray
  source_shape: np.ndarray
  shape: np.ndarray
  image_size: int

  @property
  def nbytes(self) -> int:
    return int(self.frames.nbytes)


def build_store(builder, split: str, index: input_pipeline.ClipIndex,
                input_config: ml_collections.ConfigDict) -> FrameStore:
  """Reads and resizes every clip's reachable frames (see the module docstring).

  Raises:
    ValueError: a frame cannot be decoded (naming the clip), or the store
      would exceed `input_config.resident_max_mib` (naming its size so far).
  """
  source = input_pipeline.records(builder, split)
  size = input_config.image_size
  resize = input_config.get("resize_size", None)
  limit = input_config.get("resident_max_mib", 1024.0)

  def read(row: int) -> tuple[np.ndarray, int, int, tuple[int, int]]:
    """A clip's reachable frames, resized: (frames, lo, frames stored, recorded frame shape)."""
    encoded = source[row]["frames"]
    lo_c, hi_c = input_pipeline.reachable_frames(
        len(encoded), int(index.onset[row]), int(index.apex[row]), int(index.offset[row]),
        num_frames=input_config.num_frames, sampling=input_config.sampling,
        jitter=input_config.temporal_jitter)
    frames = input_pipeline.decode_frames(encoded, range(lo_c, hi_c + 1),
                                          where=f"clip {index.clip_id[row]}")
    return (input_pipeline.resize_frames(frames, size=size, resize=resize), lo_c, len(encoded),
            frames.shape[1:3])

  clips, first, lo, num_stored, source_shapes, shapes = [], [], [], [], [], []
  total_bytes, total_frames = 0, 0
  # OpenCV decodes and resizes outside the GIL: threads use every core. `map` keeps the order.
  with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
    for row, (frames, lo_c, stored, source_shape) in enumerate(pool.map(read, range(len(index)))):
      total_bytes += frames.nbytes
      if total_bytes > float(limit) * MIB:
        pool.shutdown(wait=False, cancel_futures=True)
        raise ValueError(
            f"the device-resident frames of {builder.info.full_name} exceed "
            f"config.input.resident_max_mib={limit}: {total_bytes / MIB:.0f} MiB after "
            f"{row + 1} of {len(index)} clips ({frames.shape[1]} x {frames.shape[2]} pixels "
            "per frame); lower config.input.image_size / resize_size, raise the limit if the "
            "device has the memory, or train one fold at a time from host batches "
            "(parallel_folds=1, num_seeds=1, device_loop=False)")
      clips.append(frames)
      first.append(total_frames)
      lo.append(lo_c)
      num_stored.append(stored)
      source_shapes.append(source_shape)
      shapes.append(frames.shape[1:3])
      total_frames += len(frames)
  height = max(h for h, _ in shapes)
  width = max(w for _, w in shapes)
  store = np.zeros((total_frames, height, width, 3), np.uint8)
  for start, frames in zip(first, clips):
    store[start:start + len(frames), :frames.shape[1], :frames.shape[2]] = frames
  return FrameStore(frames=store, first=np.asarray(first, np.int32),
                    lo=np.asarray(lo, np.int32), num_stored=np.asarray(num_stored, np.int32),
                    source_shape=np.asarray(source_shapes, np.int32).reshape(-1, 2),
                    shape=np.asarray(shapes, np.int32).reshape(-1, 2), image_size=size)


def _draw(store: FrameStore, index: input_pipeline.ClipIndex, row: int,
          cfg: ml_collections.ConfigDict, rng) -> dict[str, np.ndarray]:
  """One clip's draws: training ones with `rng`, evaluation ones (no jitter/crop/flip) without."""
  meta = {"onset": index.onset[row], "apex": index.apex[row], "offset": index.offset[row]}
  stored = store.num_stored[row]
  shape = (int(store.shape[row, 0]), int(store.shape[row, 1]))
  if rng is None:
    indices, mask = input_pipeline.draw_frame_indices(meta, stored, cfg, 0, None)
    crop_offset, flip = None, False
  else:
    indices, mask = input_pipeline.draw_frame_indices(meta, stored, cfg, cfg.temporal_jitter,
                                                      rng)
    # The host pipeline draws the crop from the decoded frame's size: the record's.
    source_shape = (int(store.source_shape[row, 0]), int(store.source_shape[row, 1]))
    crop_offset, flip = input_pipeline.draw_crop_and_flip(source_shape, cfg, rng)
  top, left = input_pipeline.crop_offset_or_centre(shape, store.image_size, crop_offset)
  return {"rows": np.int32(row),
          "frame_rows": (store.first[row] + indices - store.lo[row]).astype(np.int32),
          "mask": mask, "crop": np.array([top, left], np.int32), "flip": np.bool_(flip)}


class _TrainDraw(grain.transforms.RandomMap):
  """Record position -> that clip's training draws (`TrainClip`'s draws, nothing decoded)."""

  def __init__(self, store: FrameStore, index: input_pipeline.ClipIndex,
               input_config: ml_collections.ConfigDict):
    self.store, self.index, self.cfg = store, index, input_config

  def random_map(self, element: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return _draw(self.store, self.index, int(element), self.cfg, rng)


class FrameSchedule:
  """A fold's training draws, step by step: the serial frame pipeline's stream.

  Step s (0-based) is `input_pipeline.train_batches`' batch s for the same
  (subjects, seed): the same Grain sampler and per-element generators (seeded
  by the dataset seed and the element's position), the same draw functions.
  """

  def __init__(self, store: FrameStore, index: input_pipeline.ClipIndex,
               subjects: Sequence[str], input_config: ml_collections.ConfigDict, *,
               batch_size: int, seed: int):
    sampler = input_pipeline.fold_sampler(index, subjects, seed=seed)
    self._batches = (sampler.random_map(_TrainDraw(store, index, input_config), seed=seed)
                     .batch(batch_size, drop_remainder=True))

  def steps(self, first: int, count: int) -> dict[str, np.ndarray]:
    """Steps `first .. first + count - 1`: each draw field with leading `(count, batch_size)`."""
    per_step = [self._batches[first + t] for t in range(count)]
    return {k: np.stack([b[k] for b in per_step]) for k in per_step[0]}


@dataclasses.dataclass(frozen=True)
class FrameBatcher:
  """Draws -> a model batch, on the device: `frames` uint8 `(b, N, S, S, 3)`, `mask`, `label`.

  Hashable (a static argument of the jitted programs).
  """
  image_size: int

  def __call__(self, arrays: dict, draws: dict) -> dict:
    """`arrays`: the store's `frames` and the clips' `labels`; `draws`: `FrameInputs` draws."""
    size = self.image_size
    clips = arrays["frames"][draws["frame_rows"]]  # (b, N, H, W, 3)

    def crop(clip, top_left):
      return jax.lax.dynamic_slice(clip, (0, top_left[0], top_left[1], 0),
                                   (clip.shape[0], size, size, clip.shape[-1]))

    clips = jax.vmap(crop)(clips, draws["crop"])
    clips = jnp.where(draws["flip"][:, None, None, None, None], clips[:, :, :, ::-1], clips)
    return {"frames": clips, "mask": draws["mask"], "label": arrays["labels"][draws["rows"]]}


class FrameInputs:
  """Low-resolution clips as device-resident inputs of `mer_jax.fold_parallel`."""

  def __init__(self, store: FrameStore, index: input_pipeline.ClipIndex,
               config: ml_collections.ConfigDict):
    self.store, self.index, self.config = store, index, config
    self.arrays = {"frames": store.frames, "labels": index.label.astype(np.int32)}
    self.batcher = FrameBatcher(store.image_size)

  def schedule(self, subjects: Sequence[str], *, batch_size: int, fold_seed: int
               ) -> FrameSchedule:
    """A member's training draws; `fold_seed` as the serial trainer seeds the fold's stream."""
    return FrameSchedule(self.store, self.index, subjects, self.config.input,
                         batch_size=batch_size, seed=fold_seed)

  def eval_draws(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Evaluation draws of clip rows `(n,)`: no jitter, centred crop, no flip."""
    per_row = [_draw(self.store, self.index, int(r), self.config.input, None) for r in rows]
    return {k: np.stack([d[k] for d in per_row]) for k in per_row[0]}
