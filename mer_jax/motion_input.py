"""Optical-flow input: a dataset's cached onset->apex flow features as in-memory batches.

`config.input.representation = "flow"` feeds a model (`config.model.input_mode
= "flow"`) the field's standard input instead of frames: onset->apex optical
flow (u, v) and optical strain, optionally followed by apex->offset (CausalNet),
computed once per dataset version and flow setting by `mer_jax.flow.cache`
(TV-L1 on the device) and reused.

The path of one clip:

1. `load_flow_features` reads (or computes, if `config.flow.build_if_missing`)
   the cache and resamples each clip's `(S, S, C)` features to
   `config.input.image_size` (area averaging), in the clip index's order.
   Onset and apex are the record's own fields: ground truth for synthetic_me,
   the annotation for real datasets, and for clips without an apex annotation
   the builder's stated rule (e.g. the midpoint of onset..offset, recorded in
   `apex_source`; `FlowFeatures.apex_sources` counts them for the report).
2. `train_batches` draws a fold's training clips in epochs of a permutation
   that is a pure function of (seed, epoch), so step s of a fold is the same
   batch whether the run started at 0 or resumed at s. Augmentation: a
   horizontal flip mirrors the maps and negates u.
3. `normalize` scales each sample's channels to [0, 1] (min-max, the field's
   way) or maps a fixed displacement range (`"fixed"`, scale-preserving).
4. Batches are `frames` float32 `(B, 1, S, S, C)` (a one-frame "clip"), `mask`
   `(B, 1)` True and `label` `(B,)`: the trainer's steps run unchanged.

NumPy and the flow package only; OpenCV resamples the maps.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Iterator, Optional, Sequence

import numpy as np

from mer_jax import sampling

REPRESENTATIONS = ("frames", "flow")
NORMALIZATIONS = ("minmax", "fixed")
HOST_FIELDS = ("clip_id", "subject", "dataset")


@dataclasses.dataclass(frozen=True)
class FlowFeatures:
  """Flow features of every clip of a split, in clip-index order.

  Attributes:
    features: float32 `(num_clips, S, S, C)`, C = 3 (u, v, strain of
      onset->apex) or 6 (then apex->offset's); u, v in pixels of the frames
      the flow was computed on, unnormalised.
    cache_path: the flow cache folder the features came from.
    apex_sources: `{apex_source: number of clips}` (how each apex was obtained).
    computed: True when this call computed the cache (False: reused).
  """
  features: np.ndarray
  cache_path: str
  apex_sources: dict
  computed: bool

  @property
  def num_channels(self) -> int:
    return int(self.features.shape[-1])


def num_channels(config) -> int:
  """C of the flow features a config asks for: 3, or 6 with apex->offset flow."""
  return 6 if config.flow.apex_offset else 3


def cache_dir(config) -> str:
  """`config.flow.cache_dir`, or `<TFDS data_dir>/../mer_jax_flow` beside the records."""
  if config.flow.get("cache_dir"):
    return config.flow.cache_dir
  data_dir = config.dataset.get("data_dir") or os.path.join(os.path.expanduser("~"),
                                                              "tensorflow_datasets")
  return os.path.join(os.path.dirname(os.path.abspath(data_dir)), "mer_jax_flow")


def _resample(maps: np.ndarray, size: int) -> np.ndarray:
  """`(N, S, S, C)` -> `(N, size, size, C)` by area averaging (identity if S == size)."""
  if maps.shape[1] == size and maps.shape[2] == size:
    return maps.astype(np.float32)
  import cv2  # pylint: disable=import-outside-toplevel
  out = np.empty((maps.shape[0], size, size, maps.shape[-1]), np.float32)
  for i, m in enumerate(maps):
    for c in range(maps.shape[-1]):  # One channel at a time: OpenCV's area resize takes <= 4.
      out[i, ..., c] = cv2.resize(np.ascontiguousarray(m[..., c], np.float32), (size, size),
                                  interpolation=cv2.INTER_AREA)
  return out


def load_flow_features(config, index) -> FlowFeatures:
  """The flow features of `index`'s clips (computed and cached if allowed).

  Raises:
    ValueError: the cache is missing and `config.flow.build_if_missing` is
      False (naming the command that builds it), or it lacks a clip of the index.
  """
  from mer_jax.flow import cache as flow_cache  # pylint: disable=import-outside-toplevel
  from mer_jax.flow import tvl1  # pylint: disable=import-outside-toplevel
  dataset = (f"{config.dataset.name}/{config.dataset.builder_config}"
             if config.dataset.get("builder_config") else config.dataset.name)
  params = tvl1.TVL1Params(**dict(config.flow.tvl1 or {}))
  out_dir = cache_dir(config)
  try:
    cache = flow_cache.compute_or_load(
        dataset, out_dir, data_dir=config.dataset.get("data_dir") or None,
        split=config.dataset.split, size=config.flow.size, params=params,
        strain_variant=config.flow.strain, batch_size=config.flow.batch_size,
        compute_if_missing=config.flow.build_if_missing)
  except flow_cache.MissingCacheError as e:
    raise ValueError(
        f"config.input.representation='flow': {e}. Build it with `python -m mer_jax.flow "
        f"dataset {dataset} --out {out_dir} --size {config.flow.size}"
        + (f" --data_dir {config.dataset.data_dir}" if config.dataset.get("data_dir") else "")
        + "`, or set config.flow.build_if_missing=True") from e
  maps = cache.onset_apex
  if config.flow.apex_offset:
    maps = np.concatenate([maps, cache.apex_offset], axis=-1)
  row_of = {str(c): i for i, c in enumerate(cache.clip_id.tolist())}
  missing = [c for c in index.clip_id.tolist() if c not in row_of]
  if missing:
    raise ValueError(f"flow cache {cache.path} lacks {len(missing)} clip(s) of the index "
                     f"(e.g. {missing[:3]}); delete the folder to recompute it")
  rows = np.array([row_of[c] for c in index.clip_id.tolist()])
  sources = collections.Counter(str(s) for s in np.asarray(cache.apex_source)[rows].tolist())
  return FlowFeatures(features=_resample(maps[rows], config.input.image_size),
                      cache_path=cache.path, apex_sources=dict(sorted(sources.items())),
                      computed=cache.computed)


def normalize(maps, mode: str = "minmax", *, max_flow: float = 2.0, xp=np):
  """Per-sample scaling of `(B, S, S, C)` maps to [0, 1].

  "minmax": each sample's channel minus its minimum over its maximum range
  (the field's convention; a constant channel becomes 0). "fixed": u, v in
  [-max_flow, max_flow] pixels and strain in [0, max_flow] mapped linearly to
  [0, 1] and clipped (keeps magnitudes comparable between clips).

  `xp` is the array namespace: NumPy on the host, `jax.numpy` on the device
  (`mer_jax.fold_parallel`); one formula for both, so both paths agree.
  """
  maps = maps.astype(xp.float32)
  if mode == "minmax":
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    # A reciprocal then a product, written out: XLA rewrites a division by a broadcast value
    # that way, so the host (NumPy) and the device compute the same bits.
    inverse = (1.0 / xp.maximum(span, 1e-12)).astype(xp.float32)
    return xp.where(span > 0, (maps - low) * inverse, 0.0).astype(xp.float32)
  if mode != "fixed":
    raise ValueError(f"config.flow.normalize must be one of {NORMALIZATIONS}, got {mode!r}")
  strain = xp.arange(maps.shape[-1]) % 3 == 2  # Strain is non-negative; u, v are signed.
  scaled = xp.where(strain, maps / max_flow, (maps + max_flow) / (2 * max_flow))
  return xp.clip(scaled, 0.0, 1.0).astype(xp.float32)


def flip_maps(maps, flips, *, xp=np):
  """Mirrors left-right the `(B, S, S, C)` maps whose `flips` `(B,)` is True; u (channels 0, 3)
  changes sign. `xp`: NumPy or `jax.numpy`."""
  sign = xp.where(xp.arange(maps.shape[-1]) % 3 == 0, -1.0, 1.0).astype(maps.dtype)
  mirrored = maps[:, :, ::-1, :] * sign
  return xp.where(flips[:, None, None, None], mirrored, maps)


def _batch(features: FlowFeatures, index, rows: np.ndarray, flips: Optional[np.ndarray],
           normalization: str) -> dict:
  maps = features.features[rows]
  if flips is not None:
    maps = flip_maps(maps, flips)
  return {
      "frames": normalize(maps, normalization)[:, None],
      "mask": np.ones((len(rows), 1), bool),
      "label": index.label[rows].astype(np.int32),
      "clip_id": np.array([str(index.clip_id[r]) for r in rows]),
      "subject": np.array([str(index.subject_key[r]).split("/", 1)[1] for r in rows]),
      "dataset": np.array([str(index.dataset[r]) for r in rows]),
  }


class TrainSchedule:
  """Which clips (and flips) a fold's training steps draw: a pure function of (seed, step).

  Step s (0-based) holds elements `s * batch_size .. (s + 1) * batch_size - 1`
  of the fold's stream (`sampling.FoldSampler`: epochs of permutations drawn
  from (seed, epoch), the frame pipeline's rule too); the flips of step s are
  drawn from (seed, 1, s). So step s is the same batch whether a run started
  at 0 or resumed at s, and the serial trainer (host batches) and the
  fold-parallel one (`mer_jax.fold_parallel`, batches gathered on the device)
  draw the same.
  """

  def __init__(self, index, subjects: Sequence[str], *, batch_size: int, seed: int,
               flip: bool = True):
    self.rows = index.rows_of(subjects)
    if not len(self.rows):
      raise ValueError(f"no clips for training subjects {list(subjects)[:5]}")
    self.batch_size = batch_size
    self.seed = seed
    self.flip = flip
    self._stream = sampling.FoldSampler(self.rows, seed)

  def step(self, step: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """`(rows (batch_size,) int64 into the clip index, flips (batch_size,) bool or None)`."""
    first = step * self.batch_size
    chosen = np.array([self._stream[k] for k in range(first, first + self.batch_size)],
                      np.int64)
    flips = ((np.random.default_rng([self.seed, 1, step]).random(self.batch_size) < 0.5)
             if self.flip else None)
    return chosen, flips

  def steps(self, first: int, count: int) -> dict[str, np.ndarray]:
    """Steps `first .. first + count - 1` as device-loop draws (`fold_parallel.FlowInputs`):
    `rows` `(count, batch_size)` int32 and `flips` bool (all False without flipping)."""
    rows = np.empty((count, self.batch_size), np.int32)
    flips = np.zeros((count, self.batch_size), bool)
    for t in range(count):
      r, f = self.step(first + t)
      rows[t] = r
      if f is not None:
        flips[t] = f
    return {"rows": rows, "flips": flips}


def train_batches(features: FlowFeatures, index, subjects: Sequence[str], *, batch_size: int,
                  seed: int, start_step: int = 0, flip: bool = True,
                  normalization: str = "minmax") -> Iterator[dict]:
  """Endless training batches of `subjects`' clips from step `start_step` on (`TrainSchedule`)."""
  schedule = TrainSchedule(index, subjects, batch_size=batch_size, seed=seed, flip=flip)
  step = start_step
  while True:
    chosen, flips = schedule.step(step)
    yield _batch(features, index, chosen, flips, normalization)
    step += 1


def eval_batches(features: FlowFeatures, index, subjects: Sequence[str], *,
                 batch_size: int, normalization: str = "minmax") -> Iterator[dict]:
  """Every clip of `subjects` once, in index order; the last batch may be short."""
  rows = index.rows_of(subjects)
  for start in range(0, len(rows), batch_size):
    yield _batch(features, index, rows[start:start + batch_size], None, normalization)
