"""`specific_layer = "auto"`: choose the seed paper's l_s with Grad-CAM, per fold.

The seed paper (Bai 2020, Section 3.1) renders Grad-CAM for every encoder
layer and calls the layer whose heat maps sit closest to the facial features
the specific layer l_s. Here that judgement is a number: for each candidate
layer, the fraction of heat-map energy inside a region mask
(`mer_jax.gradcam.score_layers`), averaged over the valid frames of a few clips
of the fold's **training subjects only** (the held-out subject is never read).
`gradcam.select_specific_layer(scores, "auto")` then picks the best layer.

The region mask, in order of preference:

1. `config.transfer.region_mask_path`: a user `.npy` `(H, W)` {0, 1} mask in
   the model input's frame (after resize and centre crop; any size, resized
   to `image_size` with nearest-neighbour sampling);
2. the record's ground-truth `motion_mask` (synthetic_me), resized and
   centre-cropped exactly as the frames are;
3. otherwise `face_region_prior`: four ellipses (both eye+brow regions, the
   nose wings, the mouth) placed for a centred, roughly aligned face crop.

The model is the fold's model without the policy's truncation (every
candidate layer exists), initialised as the trainer initialises the fold
(`train_state.initial_state` with the fold's key, plus the pretrained checkpoint if
any). The heat maps explain each clip's ground-truth class.

Trainer hook (once per fold, before the fold's model is built):

    config = layer_selection.config_for_fold(config, builder, fold, fold_index, workdir)

It returns `config` unchanged unless policy II/III has `specific_layer ==
"auto"`; otherwise a copy with the chosen layer, recorded in
`workdir/folds/<fold>/layer_selection.json` (re-read on resume, and by
`mer_jax.gradcam_report`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from mer_jax import gradcam
from mer_jax import input_pipeline
from mer_jax import schema
from mer_jax import train_state
from mer_jax import workdir as workdir_lib
from mer_jax.models import create_model
from mer_jax.models import resnet

AUTO = "auto"
GRANULARITIES = ("stage", "block")

# Face-region prior: ellipses (centre x, centre y, radius x, radius y) in
# fractions of the crop's width/height, x to the right, y down. They assume
# the face fills a centred crop from about the hairline to the chin (SMIC /
# CASME II / SAMM cropped releases, MTCNN-style crops): eyes at ~36 % of the
# height, nose wings at ~58 %, mouth at ~77 %. The eye ellipses reach up over
# the brows (AU1/2/4), the nose ellipse covers the wings (AU9), the mouth
# ellipse the lip corners (AU12/15). Together they cover about 21 % of the crop.
FACE_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "left_eye_brow": (0.32, 0.34, 0.15, 0.12),
    "right_eye_brow": (0.68, 0.34, 0.15, 0.12),
    "nose_wings": (0.50, 0.58, 0.13, 0.09),
    "mouth": (0.50, 0.77, 0.20, 0.09),
}


@dataclasses.dataclass(frozen=True)
class LayerSelection:
  """The outcome of one specific-layer selection.

  Attributes:
    layer: the chosen l_s (a stage such as "layer3", or a block "layer3_1").
    scores: `{candidate layer: mean in-mask energy fraction in [0, 1]}`.
    chance: the masks' mean area fraction (a heat map spread uniformly).
    mask_source: "motion_mask", "face_prior" or "file:<path>".
    clip_ids: the clips whose heat maps were scored.
    subjects: their subject keys (`dataset/subject`).
  """
  layer: str
  scores: dict[str, float]
  chance: float
  mask_source: str
  clip_ids: tuple[str, ...]
  subjects: tuple[str, ...]

  def to_json(self) -> dict[str, Any]:
    return {"layer": self.layer, "scores": self.scores, "chance": self.chance,
            "mask_source": self.mask_source, "clip_ids": list(self.clip_ids),
            "subjects": list(self.subjects)}

  @classmethod
  def from_json(cls, data: dict[str, Any]) -> "LayerSelection":
    return cls(layer=data["layer"], scores=dict(data["scores"]), chance=float(data["chance"]),
               mask_source=data["mask_source"], clip_ids=tuple(data["clip_ids"]),
               subjects=tuple(data["subjects"]))


# --------------------------------------------------------------------------------------------
# Masks.
# --------------------------------------------------------------------------------------------

def face_region_prior(height: int, width: Optional[int] = None) -> np.ndarray:
  """The face-region prior (`FACE_REGIONS`) as a `(height, width)` uint8 {0, 1} mask."""
  width = height if width is None else width
  if height < 1 or width < 1:
    raise ValueError(f"face_region_prior: size must be positive, got {height}x{width}")
  y, x = np.mgrid[0:height, 0:width]
  u, v = (x + 0.5) / width, (y + 0.5) / height  # Pixel centres in [0, 1].
  mask = np.zeros((height, width), bool)
  for cx, cy, rx, ry in FACE_REGIONS.values():
    mask |= ((u - cx) / rx)**2 + ((v - cy) / ry)**2 <= 1.0
  return mask.astype(np.uint8)


def load_region_mask(path: str, size: int) -> np.ndarray:
  """Reads a user region mask `.npy` `(H, W)` and resamples it to `(size, size)` uint8 {0, 1}.

  Raises:
    ValueError: naming `path` if the file is missing, not 2-D, not {0, 1}/bool,
      or empty.
  """
  if not os.path.isfile(path):
    raise ValueError(f"config.transfer.region_mask_path: no file at {path!r} (expected a .npy "
                     "(H, W) {0, 1} mask in the model input's frame)")
  mask = np.load(path, allow_pickle=False)
  if mask.ndim != 2:
    raise ValueError(f"region mask {path!r}: expected a 2-D (H, W) array, got shape {mask.shape}")
  values = np.unique(mask)
  if not np.isin(values, (0, 1)).all():
    raise ValueError(f"region mask {path!r}: values must be 0/1 (or bool), found "
                     f"{values[:10].tolist()}")
  if not values.max(initial=0):
    raise ValueError(f"region mask {path!r} is all zero")
  rows = (np.arange(size) + 0.5) * mask.shape[0] / size
  cols = (np.arange(size) + 0.5) * mask.shape[1] / size
  return mask.astype(np.uint8)[rows.astype(int)[:, None], cols.astype(int)[None, :]]


def _match_input_geometry(mask: np.ndarray, input_config: ml_collections.ConfigDict
                          ) -> np.ndarray:
  """Resizes and centre-crops a record-sized mask as the eval pipeline does the frames."""
  size = input_config.image_size
  resize = input_config.get("resize_size", None) or size
  resized = input_pipeline.resize_and_crop(np.asarray(mask, np.float32)[None, ..., None],
                                           size=size, resize=resize)[0, ..., 0]
  return (resized >= 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Clips.
# --------------------------------------------------------------------------------------------

def choose_clips(index: input_pipeline.ClipIndex, subjects: Sequence[str], num_clips: int,
                 seed: int = 0) -> list[str]:
  """Picks up to `num_clips` clip ids of `subjects`, classes and subjects interleaved.

  Deterministic in `seed`. Clips of any other subject are never chosen.
  """
  if num_clips < 1:
    raise ValueError(f"num_clips must be >= 1, got {num_clips}")
  rng = np.random.default_rng(seed)
  wanted = set(subjects)
  by_class = []
  for label in range(schema.NUM_CLASSES):
    rows = [i for i in range(len(index)) if index.label[i] == label
            and index.subject_key[i] in wanted]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    # Subjects round-robin within the class: one clip per subject before a second.
    rank = {}
    ordered = []
    for i in rows:
      s = index.subject_key[i]
      ordered.append((rank.get(s, 0), i))
      rank[s] = rank.get(s, 0) + 1
    by_class.append([i for _, i in sorted(ordered, key=lambda t: t[0])])
  chosen = []
  while len(chosen) < num_clips and any(by_class):
    for rows in by_class:
      if rows and len(chosen) < num_clips:
        chosen.append(rows.pop(0))
  if not chosen:
    raise ValueError(f"no clips for subjects {sorted(wanted)}")
  return [str(index.clip_id[i]) for i in chosen]


def read_clips(builder: tfds.core.DatasetBuilder, config: ml_collections.ConfigDict,
               clip_ids: Sequence[str], subjects: Sequence[str], *,
               batch_size: int = 8) -> dict[str, np.ndarray]:
  """Model inputs and region masks of `clip_ids` (which must belong to `subjects`).

  Frames come from `input_pipeline.create_eval_dataset` (the evaluation
  preprocessing: no jitter, centre crop), restricted to `subjects`.

  Returns:
    `frames` uint8 `(B, N, S, S, 3)`, `mask` bool `(B, N)`, `label` int32
    `(B,)`, `clip_id` str `(B,)`, `subject` str `(B,)` (`dataset/subject`),
    `region` uint8 `(B, S, S)` {0, 1}, `mask_source` str; B = len(clip_ids),
    in the order of `clip_ids`.
  """
  split = config.dataset.split
  wanted = set(clip_ids)
  found: dict[str, dict[str, Any]] = {}
  ds = input_pipeline.create_eval_dataset(builder, split, sorted(set(subjects)), config.input,
                                          batch_size=batch_size)
  for batch in ds:
    for i, clip in enumerate(batch["clip_id"]):
      clip = clip.decode()
      if clip in wanted:
        found[clip] = {"frames": batch["frames"][i], "mask": batch["mask"][i],
                       "label": batch["label"][i],
                       "subject": f"{batch['dataset'][i].decode()}/{batch['subject'][i].decode()}"}
  missing = sorted(wanted - set(found))
  if missing:
    raise ValueError(f"clips {missing[:5]} are not among the clips of subjects "
                     f"{sorted(set(subjects))} in split {split!r}")
  size = config.input.image_size
  region_path = config.transfer.get("region_mask_path", None)
  if region_path:
    source = f"file:{region_path}"
    regions = np.stack([load_region_mask(region_path, size)] * len(clip_ids))
  elif "motion_mask" in builder.info.features:
    source = "motion_mask"
    motion = {}
    # Metadata and masks only: the frames stay encoded.
    records = input_pipeline.records(builder, split)
    for i in range(len(records)):
      ex = records[i]
      clip = ex["clip_id"].decode() if isinstance(ex["clip_id"], bytes) else ex["clip_id"]
      if clip in wanted:
        motion[clip] = _match_input_geometry(ex["motion_mask"], config.input)
    regions = np.stack([motion[c] for c in clip_ids])
  else:
    source = "face_prior"
    regions = np.stack([face_region_prior(size)] * len(clip_ids))
  return {
      "frames": np.stack([found[c]["frames"] for c in clip_ids]),
      "mask": np.stack([found[c]["mask"] for c in clip_ids]),
      "label": np.array([found[c]["label"] for c in clip_ids], np.int32),
      "clip_id": np.array(list(clip_ids)),
      "subject": np.array([found[c]["subject"] for c in clip_ids]),
      "region": regions.astype(np.uint8),
      "mask_source": source,
  }


# --------------------------------------------------------------------------------------------
# Models and candidates.
# --------------------------------------------------------------------------------------------

def candidate_layers(encoder: Any, granularity: str = "stage") -> tuple[str, ...]:
  """Grad-CAM candidate layers of a (possibly truncated) `ResNet` encoder, in forward order.

  Args:
    encoder: a `mer_jax.models.resnet.ResNet` (e.g. `model.encoder`).
    granularity: "stage" (`layer1` .. `layer4`; a stage cut short by
      `truncate_after` is named by its last kept block) or "block" (every
      residual block, `layer1_0` ...).
  """
  if not isinstance(encoder, resnet.ResNet):
    raise ValueError(f"specific-layer selection needs a ResNet encoder (config.model.encoder = "
                     f"'resnet', 'resnet18', ...), got {type(encoder).__name__}")
  if granularity not in GRANULARITIES:
    raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
  built = [name for name in encoder.layer_names() if name.startswith("layer")]
  if granularity == "block":
    return tuple(built)
  sizes = encoder.resolved_stage_sizes
  result = []
  for stage, size in enumerate(sizes):
    kept = [name for name in built if name.startswith(f"layer{stage + 1}_")]
    if kept:
      result.append(f"layer{stage + 1}" if len(kept) == size else kept[-1])
  return tuple(result)


def initial_variables(config: ml_collections.ConfigDict, fold_index: int = 0
                      ) -> tuple[Any, dict[str, Any]]:
  """The fold's untruncated model and its initial variables (seeded init + pretrained).

  Returns:
    `(model, {"params": ..., "batch_stats": ...})`.
  """
  plain = train_state.model_config_without_policy(config)
  model = create_model(train_state.model_config(plain), num_classes=schema.NUM_CLASSES)
  init_rng, _ = train_state.fold_rngs(config, fold_index)
  state = train_state.initial_state(plain, model, init_rng)
  return model, {"params": state.params, "batch_stats": state.batch_stats}


# --------------------------------------------------------------------------------------------
# Selection.
# --------------------------------------------------------------------------------------------

def select_layer(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
                 train_subjects: Sequence[str], *, fold_index: int = 0, num_clips: int = 8,
                 candidates: Optional[Sequence[str]] = None,
                 granularity: str = "stage") -> LayerSelection:
  """Scores candidate layers on training-subject clips and picks l_s.

  Args:
    config: the run's config (its model, input, seed, transfer fields).
    builder: the dataset builder (`input_pipeline.get_builder(config.dataset)`).
    train_subjects: subject keys (`dataset/subject`) the clips may come from:
      the fold's training subjects, never its test subject.
    fold_index: the fold's position in the run (seeds the initialisation and
      the clip choice as the trainer does).
    num_clips: clips to render (interleaved over classes and subjects).
    candidates: layer names; default `candidate_layers(model.encoder, granularity)`.
    granularity: "stage" or "block" for the default candidates.

  Returns:
    The `LayerSelection` (the layer, every score, chance level, the clips).
  """
  if not train_subjects:
    raise ValueError("select_layer: train_subjects is empty")
  model, variables = initial_variables(config, fold_index)
  layers = tuple(candidates) if candidates else candidate_layers(model.encoder, granularity)
  index = input_pipeline.read_clip_index(builder, config.dataset.split)
  unknown = sorted(set(train_subjects) - set(index.subjects))
  if unknown:
    raise ValueError(f"train_subjects {unknown} are not subjects of {builder.info.full_name} "
                     f"(subjects: {index.subjects})")
  clip_ids = choose_clips(index, train_subjects, num_clips,
                          seed=train_state.fold_seed(config, fold_index))
  # Only the chosen clips' subjects are decoded (a subset of train_subjects).
  clip_subjects = sorted({str(index.subject_key[index.clip_id == c][0]) for c in clip_ids})
  clips = read_clips(builder, config, clip_ids, clip_subjects)
  regions = clips["region"][:, None]  # (B, 1, S, S): one mask per clip, every frame.
  scores = gradcam.score_layers(model, variables, (clips["frames"], clips["mask"]), regions,
                                layers, target_class=clips["label"])
  chance = float(clips["region"].mean())
  layer = gradcam.select_specific_layer(scores, AUTO)
  selection = LayerSelection(layer=layer, scores=scores, chance=chance,
                             mask_source=clips["mask_source"],
                             clip_ids=tuple(clips["clip_id"].tolist()),
                             subjects=tuple(clips["subject"].tolist()))
  logging.info("specific layer %s chosen on %d training-subject clips (%s mask, chance %.3f): "
               "%s", layer, len(clip_ids), selection.mask_source, chance,
               ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
  return selection


def resolve_specific_layer(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
                           train_subjects: Sequence[str], **kwargs) -> str:
  """`select_layer(...).layer`: the chosen l_s name (scores are logged)."""
  return select_layer(config, builder, train_subjects, **kwargs).layer


def write_selection(selection: LayerSelection, path: str) -> str:
  """Writes the selection to `path` (a fold's `layer_selection.json`) atomically."""
  workdir_lib.atomic_write_text(path, json.dumps(selection.to_json(), indent=1) + "\n")
  return path


def read_selection(path: str) -> Optional[LayerSelection]:
  """The selection recorded at `path` (a fold's `layer_selection.json`), or None."""
  if not os.path.exists(path):
    return None
  try:
    return LayerSelection.from_json(workdir_lib.read_json(path))
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path}: unreadable layer selection ({e}); delete it to select "
                     "again") from e


def config_for_fold(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
                    fold: input_pipeline.Fold, fold_index: int,
                    workdir: "workdir_lib.Workdir | str") -> ml_collections.ConfigDict:
  """`config` with `specific_layer="auto"` resolved for `fold` (the trainer hook).

  Returns `config` itself unless `config.transfer.policy` is "II" or "III"
  and `config.transfer.specific_layer == "auto"`. Otherwise selects l_s on
  the fold's training subjects (`fold.train_subjects`, validation subjects
  excluded too), records it in `workdir/folds/<fold>/layer_selection.json`
  (process 0), reuses a recorded choice on resume, and returns a copy of
  `config` with the chosen layer.
  """
  if config.transfer.policy not in ("II", "III") or config.transfer.specific_layer != AUTO:
    return config
  if isinstance(workdir, str):
    workdir = workdir_lib.Workdir(workdir)
  path = workdir.layer_selection_json(fold.name)
  selection = read_selection(path)
  if selection is None:
    selection = select_layer(config, builder, fold.train_subjects, fold_index=fold_index)
    if jax.process_index() == 0:
      write_selection(selection, path)
  result = ml_collections.ConfigDict(config.to_dict())
  result.transfer.specific_layer = selection.layer
  return result
