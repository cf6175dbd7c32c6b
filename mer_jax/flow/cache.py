"""Onset->apex and apex->offset flow features of a whole dataset, computed once and cached.

Layout (one folder per dataset version and flow setting):

    OUT/<dataset>/<config>/<version>/<key>/flow.npz
    OUT/<dataset>/<config>/<version>/<key>/manifest.json

`key` is a hash of everything that changes the numbers: the TV-L1
parameters, the strain variant, the split, the frame size and this module's
format version. A new dataset version or any other parameter gives another
folder; an existing folder is reused without recomputation. flow.npz holds

* `clip_id` `(N,)` str, in record order;
* `onset_apex`, `apex_offset`: `(N, S, S, 3)` float32 channels (u, v, strain),
  u, v in pixels of the S x S frames, unnormalised (see
  `mer_jax.flow.normalize`);
* `onset`, `apex`, `offset` `(N,)` int32 frame indices used, `apex_source`
  `(N,)` str (how the dataset obtained the apex).

Frames are decoded, resized (area) so the short side is S and centre-cropped
to S x S, like `mer_jax.input_pipeline`'s evaluation frames. The apex is the
record's `apex` field (ground truth for synthetic_me, annotated for real
datasets: see each clip's `apex_source`). TensorFlow and TFDS are imported
inside the functions that read the dataset, not by this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from mer_jax.flow import strain as strain_lib
from mer_jax.flow import tvl1

FORMAT_VERSION = 1
APEX_RULE = ("record field 'apex' (per-clip provenance in apex_source); pairs are "
             "frames[onset] -> frames[apex] and frames[apex] -> frames[offset]")
CHANNELS = ("u", "v", "strain")


class MissingCacheError(ValueError):
  """The flow cache for a dataset version and flow setting has not been computed."""


@dataclasses.dataclass(frozen=True)
class FlowCache:
  """A loaded cache: arrays of flow.npz, the manifest, and whether this call computed it."""
  path: str
  manifest: dict
  clip_id: np.ndarray
  onset_apex: np.ndarray
  apex_offset: np.ndarray
  onset: np.ndarray
  apex: np.ndarray
  offset: np.ndarray
  apex_source: np.ndarray
  computed: bool

  def __len__(self) -> int:
    return len(self.clip_id)

  def features(self, clip_id: str, pair: str = "onset_apex") -> np.ndarray:
    """`(S, S, 3)` (u, v, strain) of one clip; pair "onset_apex" or "apex_offset"."""
    if pair not in ("onset_apex", "apex_offset"):
      raise ValueError(f"pair must be 'onset_apex' or 'apex_offset', got {pair!r}")
    matches = np.flatnonzero(self.clip_id == clip_id)
    if len(matches) != 1:
      raise ValueError(f"clip_id {clip_id!r} is {'not' if not len(matches) else 'not uniquely'} "
                       f"in the flow cache {self.path}")
    return getattr(self, pair)[matches[0]]


def parse_dataset(dataset: str) -> tuple[str, Optional[str]]:
  """"synthetic_me/default" -> ("synthetic_me", "default"); "casme2" -> ("casme2", None)."""
  parts = dataset.strip("/").split("/")
  if not parts[0] or len(parts) > 2:
    raise ValueError(f"dataset must be 'name' or 'name/config', got {dataset!r}")
  return parts[0], (parts[1] if len(parts) == 2 and parts[1] else None)


def cache_key(params: tvl1.TVL1Params, *, size: int, split: str, strain_variant: str) -> dict:
  """Everything the cached numbers depend on, besides the dataset version."""
  return {"format_version": FORMAT_VERSION, "tvl1": params.as_dict(), "size": int(size),
          "split": split, "strain_variant": strain_variant,
          "frames": "decode RGB, resize short side to size (area), centre crop, [0, 1]"}


def cache_path(out_dir: str, name: str, config: Optional[str], version: str, key: dict) -> str:
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  return os.path.join(out_dir, name, config or "default", str(version), digest)


def load(path: str, *, computed: bool = False) -> FlowCache:
  """Loads the cache folder `path` (holding flow.npz and manifest.json)."""
  manifest_file = os.path.join(path, "manifest.json")
  npz_file = os.path.join(path, "flow.npz")
  for file in (manifest_file, npz_file):
    if not os.path.isfile(file):
      raise FileNotFoundError(f"flow cache {path!r} has no {os.path.basename(file)}")
  with open(manifest_file) as f:
    manifest = json.load(f)
  with np.load(npz_file) as data:
    arrays = {k: data[k] for k in data.files}
  expected = (manifest["num_clips"], manifest["size"], manifest["size"], len(CHANNELS))
  for name in ("onset_apex", "apex_offset"):
    if arrays[name].shape != expected:
      raise ValueError(f"flow cache {path!r}: {name} has shape {arrays[name].shape}, the "
                       f"manifest says {expected}; delete the folder to recompute")
  return FlowCache(path=path, manifest=manifest, computed=computed, **arrays)


def _frames_batches(builder, split: str, size: int, batch_size: int):
  """Batches of {"frames": uint8 (B, 3, S, S, 3) onset/apex/offset, metadata} in record order.

  Read by index from the ArrayRecord files (no TensorFlow); only the three
  frames are decoded, resized and centre-cropped like the evaluation frames.
  """
  from mer_jax import input_pipeline  # pylint: disable=import-outside-toplevel

  source = input_pipeline.records(builder, split)
  rows = []
  for i in range(len(source)):
    ex = source[i]
    indices = [int(ex["onset"]), int(ex["apex"]), int(ex["offset"])]
    frames = input_pipeline.decode_frames(ex["frames"], indices, where=f"clip {ex['clip_id']!r}")
    rows.append({"frames": input_pipeline.resize_and_crop(frames, size=size),
                 "clip_id": ex["clip_id"], "onset": int(ex["onset"]), "apex": int(ex["apex"]),
                 "offset": int(ex["offset"]), "apex_source": ex["apex_source"]})
    if len(rows) == batch_size or i == len(source) - 1:
      yield {k: np.stack([r[k] for r in rows]) if k == "frames" else np.array([r[k] for r in rows])
             for k in rows[0]}
      rows = []


def make_feature_fn(params: tvl1.TVL1Params, strain_variant: str,
                    chunk_size: Optional[int] = None):
  """Jitted `(B, 3, S, S, 3)` float frames -> two `(B, S, S, 3)` (u, v, strain) arrays."""
  kwargs = params.as_dict()

  @jax.jit
  def features(frames):
    frame0 = jnp.concatenate([frames[:, 0], frames[:, 1]])  # onset, apex
    frame1 = jnp.concatenate([frames[:, 1], frames[:, 2]])  # apex, offset
    flow = tvl1.tvl1_flow(frame0, frame1, chunk_size=chunk_size, **kwargs)
    both = strain_lib.flow_features(flow, strain_variant)
    return jnp.split(both, 2)

  return features


def compute_or_load(dataset: str, out_dir: str, *, data_dir: Optional[str] = None,
                    split: str = "train", size: int = 112,
                    params: Optional[tvl1.TVL1Params] = None, strain_variant: str = "softnet",
                    batch_size: int = 16, chunk_size: Optional[int] = None,
                    progress: bool = True, compute_if_missing: bool = True) -> FlowCache:
  """Returns the (u, v, strain) features of every clip, computing and caching them if needed.

  Args:
    dataset: a built mer_jax TFDS dataset, "name" or "name/config"
      (e.g. "synthetic_me/default").
    out_dir: cache root (see the module docstring for the layout).
    data_dir: TFDS data_dir (None: TFDS's default).
    split: dataset split.
    size: side S of the square frames the flow is computed on.
    params: TV-L1 parameters (default OpenCV's defaults).
    strain_variant: see `mer_jax.flow.strain.STRAIN_VARIANTS`.
    batch_size: clips per device batch (2 x batch_size pairs per call).
    chunk_size: pairs solved at a time inside a batch (memory bound).
    progress: print a progress line to stderr.
    compute_if_missing: False raises `MissingCacheError` instead of computing.

  Raises:
    ValueError: unknown or unbuilt dataset, bad split, bad parameters.
  """
  import ml_collections  # pylint: disable=import-outside-toplevel
  from mer_jax import input_pipeline  # pylint: disable=import-outside-toplevel

  params = params or tvl1.TVL1Params()
  if strain_variant not in strain_lib.STRAIN_VARIANTS:
    raise ValueError(f"strain_variant must be one of {strain_lib.STRAIN_VARIANTS}, "
                     f"got {strain_variant!r}")
  for name, value in (("size", size), ("batch_size", batch_size)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  tvl1.check_frame_size(size, size, params.num_scales, params.scale_step, name="size")
  name, config = parse_dataset(dataset)
  builder = input_pipeline.get_builder(ml_collections.ConfigDict(
      {"name": name, "builder_config": config, "data_dir": data_dir}))
  if not builder.is_prepared():
    raise ValueError(f"dataset {builder.info.full_name} is not built in {builder.data_dir}; run "
                     f"`python -m data_builders.build {name}"
                     + (f"/{config}" if config else "") + "` first")
  if split not in builder.info.splits:
    raise ValueError(f"split {split!r} is not a split of {builder.info.full_name} "
                     f"(splits: {list(builder.info.splits)})")
  version = str(builder.info.version)
  key = cache_key(params, size=size, split=split, strain_variant=strain_variant)
  path = cache_path(out_dir, name, builder.builder_config.name if builder.builder_config
                    else config, version, key)
  if os.path.isfile(os.path.join(path, "manifest.json")):
    return load(path, computed=False)
  if not compute_if_missing:
    raise MissingCacheError(f"no flow cache of {builder.info.full_name} for these flow settings "
                            f"at {path}")

  num_clips = builder.info.splits[split].num_examples
  features = make_feature_fn(params, strain_variant, chunk_size)
  rows = {k: [] for k in ("clip_id", "onset", "apex", "offset", "apex_source")}
  onset_apex, apex_offset = [], []
  start = time.perf_counter()
  for batch in _frames_batches(builder, split, size, batch_size):
    count = len(batch["clip_id"])
    frames = batch["frames"].astype(np.float32) / 255.0
    if count < batch_size:  # One compiled shape: pad the last batch with black clips.
      frames = np.concatenate([frames, np.zeros((batch_size - count,) + frames.shape[1:],
                                                np.float32)])
    first, second = features(frames)
    onset_apex.append(np.asarray(first)[:count])
    apex_offset.append(np.asarray(second)[:count])
    for key_name in rows:
      values = batch[key_name]
      rows[key_name].extend(v.decode() if isinstance(v, bytes) else v for v in values)
    if progress:
      done = len(rows["clip_id"])
      elapsed = time.perf_counter() - start
      print(f"\rflow {builder.info.full_name} {split}: {done}/{num_clips} clips, "
            f"{2 * done / elapsed:.1f} pairs/s", end="", file=sys.stderr, flush=True)
  if progress:
    print(file=sys.stderr)
  if not rows["clip_id"]:
    raise ValueError(f"split {split!r} of {builder.info.full_name} has no examples")
  arrays = {
      "clip_id": np.array(rows["clip_id"]),
      "onset_apex": np.concatenate(onset_apex).astype(np.float32),
      "apex_offset": np.concatenate(apex_offset).astype(np.float32),
      "onset": np.array(rows["onset"], np.int32), "apex": np.array(rows["apex"], np.int32),
      "offset": np.array(rows["offset"], np.int32),
      "apex_source": np.array(rows["apex_source"]),
  }
  manifest = {
      "dataset": name, "config": config, "full_name": builder.info.full_name,
      "version": version, "data_dir": builder.data_dir, "key": key,
      "num_clips": len(arrays["clip_id"]), "size": size, "channels": list(CHANNELS),
      "arrays": {k: list(v.shape) for k, v in arrays.items()},
      "apex_rule": APEX_RULE, "clip_ids": arrays["clip_id"].tolist(),
      "seconds": time.perf_counter() - start, "device": str(jax.devices()[0]),
      "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }
  _write_atomically(path, arrays, manifest)
  return load(path, computed=True)


def _write_atomically(path: str, arrays: dict, manifest: dict) -> None:
  """Writes flow.npz and then manifest.json (the "complete" marker) via temporary names."""
  os.makedirs(path, exist_ok=True)
  handle, tmp_npz = tempfile.mkstemp(suffix=".npz", dir=path)
  os.close(handle)
  try:
    np.savez(tmp_npz, **arrays)
    os.replace(tmp_npz, os.path.join(path, "flow.npz"))
  finally:
    if os.path.exists(tmp_npz):
      os.remove(tmp_npz)
  tmp_manifest = os.path.join(path, "manifest.json.tmp")
  with open(tmp_manifest, "w") as f:
    json.dump(manifest, f, indent=2)
  os.replace(tmp_manifest, os.path.join(path, "manifest.json"))
