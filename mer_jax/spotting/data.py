"""Long videos with their spotting features and true intervals, computed once and cached.

`load_records(config.dataset, cache_dir, ...)` reads the videos of a long-video
TFDS builder (`casme_sq`, `samm_long`, `synthetic_me_long`; records by index,
no TensorFlow) and `load_synthetic(preset, cache_dir, ...)` renders the
`synthetic_me_long` videos of a `mer_jax.synthetic_long` preset (directly, no
TFDS). Either computes
each video's per-frame motion maps (`features.motion_features`), per-frame
targets (`features.frame_labels`) and the recognition maps of its true
intervals (onset -> apex, plus jittered pairs for training), and caches all
of it in

    <cache_dir>/synthetic_me_long/<preset>/<key>/spotting.npz, manifest.json

where `key` hashes everything the numbers depend on (the generator config,
frame size, pair distance rule, pooling, TV-L1 parameters, this format; for a
codec copy also the codec and the OpenCV build). With `FeatureSettings.codec`
set, every video first goes through that lossy codec (`codecs.roundtrip`) and
its id gains "@<codec>" (same subject, same truths). An
existing folder is reused without recomputation; it is written atomically
(a temporary folder renamed into place), so a killed run never leaves half a
cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Optional

from absl import logging
import numpy as np

from mer_jax import schema as clip_schema
from mer_jax.spotting import codecs
from mer_jax.spotting import features as features_lib
from mer_jax.spotting import metrics

FORMAT_VERSION = 1
# Training pairs per true interval: onset and apex each moved by -j, 0, +j frames
# (j = max(1, k // 2)), so the recogniser sees the imprecise onsets and apexes a
# spotter produces.
JITTER = (-1, 0, 1)


@dataclasses.dataclass
class Video:
  """One long video, ready for the spotting trainer.

  Attributes:
    video_id, subject: e.g. "s03/v01", "s03".
    fps: frames per second.
    frames: grey uint8 `(T, S, S)` (for the recognition flow of spotted intervals).
    maps: float32 `(T, P, P, 3)` per-frame motion maps.
    labels: int32 `(T,)` 0 background, 1 micro, 2 macro.
    truths: the true `metrics.Interval`s (label = class name).
    rec_maps: float32 `(N, R, R, 3)` recognition maps of jittered true pairs.
    rec_labels: int32 `(N,)` class indices into `mer_jax.schema.CLASS_NAMES`.
  """
  video_id: str
  subject: str
  fps: float
  frames: np.ndarray
  maps: np.ndarray
  labels: np.ndarray
  truths: list
  rec_maps: np.ndarray
  rec_labels: np.ndarray

  def grey(self) -> np.ndarray:
    return self.frames.astype(np.float32) / 255.0


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
  """What the cached features depend on besides the videos.

  `codec`: "" the rendered (lossless) frames; a `codecs.CODECS` name: the frames as
  that codec returns them.
  """
  size: int = 64
  pool: int = 8
  recognition_pool: int = 4
  micro_mean_s: float = 0.35
  codec: str = ""

  def k(self, fps: float) -> int:
    return features_lib.frame_offset(fps, self.micro_mean_s)


def _cache_key(generator: dict, settings: FeatureSettings) -> dict:
  fields = dataclasses.asdict(settings)
  codec = fields.pop("codec")
  key = {"format_version": FORMAT_VERSION, "generator": generator, "settings": fields,
         "tvl1": features_lib.SPOTTING_TVL1.as_dict(), "jitter": list(JITTER)}
  if codec:  # originals keep the keys (and run fingerprints) they had before codecs existed
    key["codec"] = {"name": codec, **codecs.identity()}
  return key


def _digest(key: dict) -> str:
  return hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:16]


def _cache_folder(cache_dir: Optional[str], name: str, settings: FeatureSettings,
                  digest: str) -> Optional[str]:
  """`<cache_dir>/<name>[@codec]/<digest>`, or None without a cache_dir."""
  if not cache_dir:
    return None
  suffix = codecs.SEPARATOR + settings.codec if settings.codec else ""
  return os.path.join(os.path.expanduser(cache_dir), name + suffix, digest)


def dataset_fingerprint(preset: str, settings: FeatureSettings) -> str:
  """Hash of the generator config and feature settings (the run identity's dataset part)."""
  from mer_jax import synthetic_long  # pylint: disable=import-outside-toplevel
  generator = dataclasses.asdict(_preset(synthetic_long, preset))
  return _digest(_cache_key(generator, settings))


def _preset(synthetic_long, preset: str):
  if preset not in synthetic_long.PRESETS:
    raise ValueError(f"unknown synthetic_me_long preset {preset!r}; known: "
                     f"{sorted(synthetic_long.PRESETS)}")
  return synthetic_long.PRESETS[preset]


def video_from_frames(video_id: str, subject: str, fps: float, frames_grey: np.ndarray,
                      truths: list, settings: FeatureSettings) -> Video:
  """Computes a `Video`'s features from grey float frames `(T, S, S)` and its true intervals."""
  k = settings.k(fps)
  maps = features_lib.motion_features(frames_grey, k, pool=settings.pool)
  labels = features_lib.frame_labels(len(frames_grey), [(t.onset, t.offset, t.type)
                                                        for t in truths])
  j = max(1, k // 2)
  first, second, rec_labels = [], [], []
  last = len(frames_grey) - 1
  for t in truths:
    if t.label not in clip_schema.CLASS_NAMES:
      continue
    for d_on in JITTER:
      for d_apex in JITTER:
        onset = int(np.clip(t.onset + d_on * j, 0, last))
        apex = int(np.clip(t.apex + d_apex * j, 0, last))
        if apex > onset:
          first.append(onset)
          second.append(apex)
          rec_labels.append(clip_schema.CLASS_NAMES.index(t.label))
  rec_maps = features_lib.pair_features(frames_grey, first, second,
                                        pool=settings.recognition_pool)
  frames_u8 = np.clip(np.rint(frames_grey * 255), 0, 255).astype(np.uint8)
  return Video(video_id, subject, float(fps), frames_u8, maps, labels, list(truths), rec_maps,
               np.asarray(rec_labels, np.int32))


def _render_all(preset: str, settings: FeatureSettings) -> list[Video]:
  from mer_jax import synthetic_long  # pylint: disable=import-outside-toplevel
  config = _preset(synthetic_long, preset)
  videos = []
  start = time.time()
  for video_id, example in synthetic_long.generate_dataset(config):
    frames = example["frames"]
    if settings.codec:
      frames = codecs.roundtrip(frames, example["fps"], settings.codec)
      video_id = codecs.copy_id(video_id, settings.codec)
    grey = features_lib.grey_frames(frames, settings.size)
    truths = [metrics.Interval(onset=int(i["onset"]), offset=int(i["offset"]), type=i["type"],
                               apex=int(i["apex"]), label=clip_schema.CLASS_NAMES[i["label"]])
              for i in example["intervals"]]
    videos.append(video_from_frames(video_id, example["subject"], example["fps"], grey, truths,
                                    settings))
    logging.info("spotting features: %s (%d frames) done, %.0f s", video_id, len(grey),
                 time.time() - start)
  return videos


def _to_arrays(videos: list[Video]) -> tuple[dict, dict]:
  arrays, manifest_videos = {}, []
  for n, v in enumerate(videos):
    for field in ("frames", "maps", "labels", "rec_maps", "rec_labels"):
      arrays[f"v{n}_{field}"] = getattr(v, field)
    manifest_videos.append({
        "video_id": v.video_id, "subject": v.subject, "fps": v.fps,
        "truths": [dataclasses.asdict(t) for t in v.truths]})
  return arrays, {"videos": manifest_videos}


def _from_arrays(data, manifest: dict) -> list[Video]:
  videos = []
  for n, m in enumerate(manifest["videos"]):
    truths = [metrics.Interval(**t) for t in m["truths"]]
    videos.append(Video(m["video_id"], m["subject"], float(m["fps"]), data[f"v{n}_frames"],
                        data[f"v{n}_maps"], data[f"v{n}_labels"], truths, data[f"v{n}_rec_maps"],
                        data[f"v{n}_rec_labels"]))
  return videos


def _cached(folder: Optional[str], key: dict, compute) -> list[Video]:
  """The videos cached in `folder` (spotting.npz + manifest.json), or `compute()`d and cached.

  The folder is written atomically (a temporary folder renamed into place), so a killed
  run never leaves half a cache; None: no cache.
  """
  if folder is None:
    return compute()
  npz, manifest_file = os.path.join(folder, "spotting.npz"), os.path.join(folder, "manifest.json")
  if os.path.isfile(npz) and os.path.isfile(manifest_file):
    with open(manifest_file) as f:
      manifest = json.load(f)
    with np.load(npz) as data:
      videos = _from_arrays({k: data[k] for k in data.files}, manifest)
    logging.info("spotting features: loaded %d videos from %s", len(videos), folder)
    return videos
  videos = compute()
  arrays, manifest = _to_arrays(videos)
  manifest["key"] = key
  parent = os.path.dirname(folder)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp.", dir=parent)
  try:
    np.savez(os.path.join(tmp, "spotting.npz"), **arrays)
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
      json.dump(manifest, f, indent=1, default=list)
    try:
      os.replace(tmp, folder)
    except OSError:
      if not os.path.isfile(npz):  # not a concurrent writer that got there first
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  logging.info("spotting features: cached %d videos in %s", len(videos), folder)
  return videos


def load_synthetic(preset: str, cache_dir: Optional[str], settings: FeatureSettings
                   ) -> tuple[list[Video], dict]:
  """The videos of a `synthetic_long.PRESETS` entry with their features (module docstring).

  Returns:
    (videos in generator order, dataset identity {"name", "version", "split",
    "fingerprint"}).
  """
  from mer_jax import synthetic_long  # pylint: disable=import-outside-toplevel
  generator = dataclasses.asdict(_preset(synthetic_long, preset))
  key = _cache_key(generator, settings)
  digest = dataset_fingerprint(preset, settings)
  identity = {"name": synthetic_long.DATASET_NAME, "version": preset, "split": "all",
              "fingerprint": digest}
  if settings.codec:
    identity["codec"] = settings.codec
  folder = _cache_folder(cache_dir, os.path.join(synthetic_long.DATASET_NAME, preset), settings,
                         digest)
  return _cached(folder, key, lambda: _render_all(preset, settings)), identity


# ----------------------------------------------------------------------------
# Long-video TFDS builders (CAS(ME)^2, SAMM long videos): records read without TensorFlow.

# Frames decoded (and passed through a codec) per step, so a long recording is never held
# whole at full size: 512 frames of 128 x 170 RGB are 33 MB.
CHUNK_FRAMES = 512


def _record_video(record: dict, settings: FeatureSettings) -> Video:
  """One long-video record (`mer_jax.spotting.schema`, frames still encoded) -> a `Video`."""
  from mer_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  from mer_jax.spotting import schema as long_schema  # pylint: disable=import-outside-toplevel
  video_id = long_schema.text(record["video_id"])
  encoded, fps = record["frames"], float(record["fps"])
  grey = []
  for start in range(0, len(encoded), CHUNK_FRAMES):
    indices = range(start, min(len(encoded), start + CHUNK_FRAMES))
    frames = input_pipeline.decode_frames(encoded, indices, where=f"video {video_id}")
    if settings.codec:
      frames = codecs.roundtrip(frames, fps, settings.codec)
    grey.append(features_lib.grey_frames(frames, settings.size))
  if settings.codec:
    video_id = codecs.copy_id(video_id, settings.codec)
  truths = long_schema.record_intervals(record)
  return video_from_frames(video_id, long_schema.text(record["subject"]), fps,
                           np.concatenate(grey), truths, settings)


def load_records(dataset_config, cache_dir: Optional[str], settings: FeatureSettings
                 ) -> tuple[list[Video], dict]:
  """The videos of a long-video TFDS builder (`config.dataset`: name, builder_config,
  data_dir, manual_dir, split, build_if_missing) with their features.

  The records are built if missing (as the recognition trainer builds clip
  datasets) and read by index without TensorFlow; each video is decoded in
  chunks of `CHUNK_FRAMES` frames (with a codec, each chunk goes through it
  alone). Features are cached in `<cache_dir>/<name>/<builder config>[@codec]/<key>`,
  where the key hashes the records' identity (`input_pipeline.dataset_identity`)
  and the feature settings.

  Returns:
    (videos in record order, dataset identity: the records' {"name" (e.g.
    "casme_sq/raw_128"), "version", "split", "fingerprint"} plus "features" (the
    cache key's hash) and, for a codec copy, "codec").
  """
  from mer_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  builder = input_pipeline.prepare_builder(input_pipeline.get_builder(dataset_config),
                                           dataset_config)
  split = str(dataset_config.get("split") or "train")
  records_identity = input_pipeline.dataset_identity(builder, split)
  key = _cache_key({"records": records_identity}, settings)
  digest = _digest(key)
  identity = {**records_identity, "features": digest}
  if settings.codec:
    identity["codec"] = settings.codec
  # records_identity["name"] is "<builder>/<config>", e.g. casme_sq/raw_128.
  folder = _cache_folder(cache_dir, records_identity["name"], settings, digest)

  def compute() -> list[Video]:
    source = input_pipeline.records(builder, split)
    videos, start = [], time.time()
    for i in range(len(source)):
      videos.append(_record_video(source[i], settings))
      logging.info("spotting features: %s (%d frames) done, %.0f s", videos[-1].video_id,
                   len(videos[-1].frames), time.time() - start)
    return videos

  return _cached(folder, key, compute), identity
