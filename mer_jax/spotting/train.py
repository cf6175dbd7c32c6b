r"""LOSO spotting training and evaluation on long videos, with spot-then-recognise.

  python -m mer_jax.spotting.train --config=configs/spotting.py --workdir=DIR

Per fold (one held-out subject; with `config.train.final` also a fold "all"
trained on every subject, the model `mer-jax analyze` loads):

1. the spotter (`model.FrameSpotter`) learns per-frame targets (background /
   inside a micro- / inside a macro-expression) on random windows of the
   training videos' motion maps (the other subjects' videos plus those of
   `config.dataset.extra_train_presets`, which are never scored),
   class-weighted (1 / sqrt(frequency)); the recogniser
   (`model.IntervalRecogniser`) learns the class from the true intervals'
   jittered onset->apex maps, in the same step and optimiser; with
   `config.train.ensemble` = n, n such pairs are trained per fold, member m
   exactly as a one-member run with seed `train.seed + m`;
2. the held-out videos are scored in windows (`model.windowed_logits`; the
   members' probabilities averaged), intervals found (`peaks.find_intervals`),
   each interval's apex estimated from the flow (`features.estimate_apexes`)
   and its class recognised from its onset->apex maps (the members' class
   probabilities averaged).

Codecs (`codecs`): with `config.dataset.train_codecs` the training videos
(the fold's and the extra presets') also enter in copies passed through each
lossy codec, so the spotter sees compression artefacts as non-motion; with
`config.eval_codecs` each fold also scores its held-out videos' codec copies,
and results.json adds a "codecs" section per codec. The LOSO figures
("spotting", "spot_then_recognise") stay those of the lossless originals.

Workdir conventions are the recognition trainer's (`mer_jax.workdir`): the
run identity (config fields that change results + the dataset fingerprint)
refuses a changed config before any compute; Orbax checkpoints per fold
(`mer_jax.checkpoints`) every `checkpoint_every` steps, and a killed run
resumes from the last one; batches depend only on (seed, fold, step), so a
resumed fold ends with the same parameters; a fold's predictions file marks
it done and carries the identity digest; results.json pools the LOSO folds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mer_jax import checkpoints
from mer_jax import schema as clip_schema
from mer_jax import workdir as workdir_lib
from mer_jax.spotting import codecs
from mer_jax.spotting import data as data_lib
from mer_jax.spotting import features as features_lib
from mer_jax.spotting import metrics
from mer_jax.spotting import model as model_lib
from mer_jax.spotting import peaks as peaks_lib

FOLD_FORMAT = "mer_jax.spotting_fold/1"
FINAL_FOLD = "all"


def feature_settings(config) -> data_lib.FeatureSettings:
  return data_lib.FeatureSettings(
      size=int(config.features.size), pool=int(config.features.pool),
      recognition_pool=int(config.features.recognition_pool),
      micro_mean_s=float(config.features.micro_mean_s))


def peak_params(config) -> peaks_lib.PeakParams:
  """The config's peak parameters. A config written before a `PeakParams` field existed
  lacks it and gets the behaviour from before the field (`peaks.BEFORE_FIELD`), not today's
  default, so an old run's intervals are found (re-scored, analysed) as they were."""
  given = {k: float(v) for k, v in config.peaks.items()}
  before = {k: v for k, v in peaks_lib.BEFORE_FIELD.items() if k not in given}
  return peaks_lib.PeakParams(**before, **given)


def train_codecs(config) -> tuple[str, ...]:
  """`config.dataset.train_codecs`: the codecs whose copies of training videos join training."""
  return codecs.parse(config.dataset.get("train_codecs", ""), "config.dataset.train_codecs")


def eval_codecs(config) -> tuple[str, ...]:
  """`config.eval_codecs`: the codecs whose copies of held-out videos are also scored."""
  return codecs.parse(config.get("eval_codecs", ""), "config.eval_codecs")


def is_synthetic(config) -> bool:
  """Whether `config.dataset` names a `synthetic_long` preset (rendered, no TFDS)."""
  return config.dataset.name == "synthetic_me_long" and bool(config.dataset.get("preset"))


def feature_cache_dir(config) -> Optional[str]:
  """Where features are cached: `config.dataset.data_dir` for a synthetic preset (its only
  storage), `config.dataset.features_dir` for a TFDS builder (data_dir holds its records)."""
  if is_synthetic(config):
    return config.dataset.data_dir or None
  return config.dataset.get("features_dir") or None


def source_name(config) -> str:
  """The run's videos in words, for messages: "preset 'cas_like'" or "dataset 'casme_sq'"."""
  return (f"preset {config.dataset.preset!r}" if is_synthetic(config)
          else f"dataset {config.dataset.name!r}")


def dataset_videos(config, codec: str = "") -> tuple[list[data_lib.Video], dict]:
  """The run's videos with their features (through `codec` when given) and dataset identity.

  A synthetic preset is rendered (`data_lib.load_synthetic`); `casme_sq`,
  `samm_long` (or `synthetic_me_long` without a preset) are read from their TFDS
  records, built from `config.dataset.manual_dir` if missing (`data_lib.load_records`).

  Raises:
    ValueError: `config.dataset.name` is no long-video dataset.
  """
  settings = dataclasses.replace(feature_settings(config), codec=codec)
  if is_synthetic(config):
    return data_lib.load_synthetic(str(config.dataset.preset), feature_cache_dir(config),
                                   settings)
  from mer_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  if config.dataset.name not in input_pipeline.LONG_VIDEO_PACKAGES:
    raise ValueError(f"config.dataset.name={config.dataset.name!r}: the spotting trainer reads "
                     f"long-video datasets {list(input_pipeline.LONG_VIDEO_PACKAGES)} (clip "
                     "datasets are for python -m mer_jax.main)")
  return data_lib.load_records(config.dataset, feature_cache_dir(config), settings)


def codec_copies(config, names: Sequence[str]) -> tuple[list[data_lib.Video], dict[str, dict]]:
  """The run's videos through each codec of `names` (ids "<id>@<codec>").

  Returns (videos, {codec: dataset identity}).
  """
  videos, identities = [], {}
  for codec in names:
    found, identities[codec] = dataset_videos(config, codec)
    videos += found
  return videos, identities


def extra_training_videos(config, codec_names: Sequence[str] = ()
                          ) -> tuple[list[data_lib.Video], list[dict]]:
  """The videos of `config.dataset.extra_train_presets`, renamed "<preset>:<video id>".

  They join every fold's training set and are never scored; with `codec_names`
  their copies through those codecs too. Returns (videos, their dataset
  identities, which go into the run identity).

  Raises:
    ValueError: a name that is no preset, the run's own preset, or one named twice.
  """
  from mer_jax import synthetic_long  # pylint: disable=import-outside-toplevel
  names = [n.strip() for n in str(config.dataset.get("extra_train_presets", "")).split(",")
           if n.strip()]
  for name in names:
    if name not in synthetic_long.PRESETS:
      raise ValueError(f"config.dataset.extra_train_presets: {name!r} is not a "
                       f"synthetic_me_long preset (one of {sorted(synthetic_long.PRESETS)})")
  if str(config.dataset.get("preset") or "") in names or len(set(names)) != len(names):
    raise ValueError(f"config.dataset.extra_train_presets={config.dataset.extra_train_presets!r}"
                     f": names the run's own preset {config.dataset.preset!r} or one preset "
                     "twice; its videos would be both trained on and scored, or counted twice")
  videos, identities = [], []
  for name in names:
    found, identity = data_lib.load_synthetic(name, feature_cache_dir(config),
                                              feature_settings(config))
    copy_identities = {}
    for codec in codec_names:
      copies, copy_identities[codec] = data_lib.load_synthetic(
          name, feature_cache_dir(config),
          dataclasses.replace(feature_settings(config), codec=codec))
      found = found + copies
    videos += [dataclasses.replace(v, video_id=f"{name}:{v.video_id}",
                                   subject=f"{name}:{v.subject}") for v in found]
    identities.append({**identity, "codecs": copy_identities} if copy_identities else identity)
  return videos, identities


def make_models(config) -> tuple[model_lib.FrameSpotter, model_lib.IntervalRecogniser]:
  return (model_lib.FrameSpotter(features=int(config.model.features),
                                 dilations=tuple(int(d) for d in config.model.dilations)),
          model_lib.IntervalRecogniser(num_classes=clip_schema.NUM_CLASSES,
                                       features=int(config.model.recogniser_features)))


def ensemble_size(config) -> int:
  """Spotter/recogniser pairs trained per fold (`config.train.ensemble`; runs made before the
  field trained one)."""
  size = config.train.get("ensemble", 1)
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    raise ValueError(f"config.train.ensemble must be an integer >= 1, got {size!r}")
  return size


def member_config(config, member: int):
  """The config ensemble member `member` trains with: `train.seed + member`, the rest equal.

  So member m of a fold is the fold of a one-member run with seed `train.seed + m`: the same
  initial parameters and batches (`initial_state`, `sample_batch` read the seed from here).
  """
  if member == 0:
    return config
  copy = config.copy_and_resolve_references()
  copy.train.seed = int(config.train.seed) + member
  return copy


def initial_state(config, fold_index: int) -> dict:
  """Host state of a fold before training, the structure its checkpoints hold.

  One member: {"params", "opt_state", "step"} (the format of runs before
  `config.train.ensemble`); several: {"members": {"0": that dict, "1": ...}}.
  """
  return _packed([_member_initial_state(member_config(config, m), fold_index)
                  for m in range(ensemble_size(config))])


def member_states(state: dict) -> list[dict]:
  """The per-member states of `initial_state`'s structure, in member order."""
  if "members" not in state:
    return [state]
  return [state["members"][str(m)] for m in range(len(state["members"]))]


def _packed(states: Sequence[dict]) -> dict:
  """Per-member states in `initial_state`'s structure (the inverse of `member_states`)."""
  return states[0] if len(states) == 1 else {"members": {str(m): st for m, st in
                                                         enumerate(states)}}


def _member_initial_state(config, fold_index: int) -> dict:
  spotter, recogniser = make_models(config)
  settings = feature_settings(config)
  params = model_lib.init_params(
      spotter, recogniser, jax.random.PRNGKey(int(config.train.seed) * 1000 + fold_index),
      map_size=settings.size // settings.pool,
      recognition_size=settings.size // settings.recognition_pool)
  tx = optax.adamw(float(config.train.learning_rate),
                   weight_decay=float(config.train.weight_decay))
  return jax.device_get({"params": params, "opt_state": tx.init(params),
                         "step": np.zeros((), np.int32)})


def _model_key(config) -> tuple:
  """What the compiled functions depend on (one compile per model, shared by folds)."""
  return (int(config.model.features), tuple(int(d) for d in config.model.dilations),
          int(config.model.recogniser_features), float(config.train.learning_rate),
          float(config.train.weight_decay))


@functools.lru_cache(maxsize=8)
def _compiled(key: tuple):
  """Jitted (train step, spotter apply, recogniser probabilities) of a model key."""
  features, dilations, recogniser_features, learning_rate, weight_decay = key
  spotter = model_lib.FrameSpotter(features=features, dilations=dilations)
  recogniser = model_lib.IntervalRecogniser(num_classes=clip_schema.NUM_CLASSES,
                                            features=recogniser_features)
  tx = optax.adamw(learning_rate, weight_decay=weight_decay)

  def loss_fn(params, weights, maps, labels, rec_maps, rec_labels):
    logits = spotter.apply({"params": params["spotter"]}, maps)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    w = weights[labels]
    spot_loss = (ce * w).sum() / w.sum()
    rec_logits = recogniser.apply({"params": params["recogniser"]}, rec_maps)
    rec_loss = optax.softmax_cross_entropy_with_integer_labels(rec_logits, rec_labels).mean()
    return spot_loss + rec_loss, (spot_loss, rec_loss)

  @jax.jit
  def step(state, weights, maps, labels, rec_maps, rec_labels):
    grads, (spot_loss, rec_loss) = jax.grad(loss_fn, has_aux=True)(
        state["params"], weights, maps, labels, rec_maps, rec_labels)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return ({"params": params, "opt_state": opt_state, "step": state["step"] + 1},
            spot_loss, rec_loss)

  spot = jax.jit(lambda params, maps: spotter.apply({"params": params}, maps))
  recognise = jax.jit(lambda params, maps: jax.nn.softmax(
      recogniser.apply({"params": params}, maps)))
  return step, spot, recognise


def augment(maps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """One random view of motion maps `(..., P, P, 3)` (a window or a recognition sample).

  The synthetic training set has few subjects, so the spotter would learn their
  faces: a mirror image (u negated), a shift of up to one block in x and y
  (zeros enter), and a gain of 0.7-1.4 on the motion make other faces and
  amplitudes out of the same events.
  """
  out = maps * np.float32(rng.uniform(0.7, 1.4))
  if rng.uniform() < 0.5:
    out = out[..., ::-1, :] * np.asarray([-1, 1, 1], np.float32)
  for axis in (-3, -2):
    shift = int(rng.integers(-1, 2))
    if shift:
      out = np.roll(out, shift, axis=axis)
      edge = [slice(None)] * out.ndim
      edge[axis] = slice(0, 1) if shift > 0 else slice(-1, None)
      out[tuple(edge)] = 0.0
  return np.ascontiguousarray(out, np.float32)


def sample_batch(videos: Sequence[data_lib.Video], config, fold_index: int, step: int):
  """The training batch of `step`: a pure function of (seed, fold, step)."""
  rng = np.random.default_rng([int(config.train.seed), fold_index, step])
  window, batch = int(config.train.window), int(config.train.batch_size)
  # config.train.augment=False (an ablation) passes the maps through unchanged.
  view = augment if config.train.get("augment", True) else (lambda maps, rng: maps)
  maps, labels = [], []
  for _ in range(batch):
    v = videos[int(rng.integers(len(videos)))]
    # Windows may reach a quarter window past either end, where the maps are zero and
    # the target is background: scoring pads a video's ends the same way.
    margin = window // 4
    s = int(rng.integers(-margin, max(-margin, len(v.maps) - window + margin) + 1))
    lo, hi = max(s, 0), min(s + window, len(v.maps))
    pad = [(lo - s, s + window - hi)]
    maps.append(view(np.pad(v.maps[lo:hi], pad + [(0, 0)] * 3), rng))
    labels.append(np.pad(v.labels[lo:hi], pad))
  rec_maps = np.concatenate([v.rec_maps for v in videos])
  rec_labels = np.concatenate([v.rec_labels for v in videos])
  pick = rng.integers(len(rec_maps), size=int(config.train.recognition_batch_size))
  return (np.stack(maps), np.stack(labels).astype(np.int32),
          np.stack([view(m, rng) for m in rec_maps[pick]]), rec_labels[pick].astype(np.int32))


def class_weights(videos: Sequence[data_lib.Video]) -> np.ndarray:
  """1 / sqrt(frequency) of background, micro, macro frames, normalised to mean 1."""
  counts = np.bincount(np.concatenate([v.labels for v in videos]),
                       minlength=model_lib.NUM_FRAME_CLASSES).astype(np.float64)
  w = 1.0 / np.sqrt(np.maximum(counts, 1.0) / counts.sum())
  return w / w.mean()


def train_fold(config, wd: workdir_lib.Workdir, fold: str, fold_index: int,
               videos: Sequence[data_lib.Video]) -> dict:
  """Trains (or resumes) one fold; returns its final host state."""
  num_steps = int(config.train.num_steps)
  every = int(config.train.checkpoint_every)
  manager = checkpoints.create_manager(wd.checkpoints_dir(fold), validation_selection=False)
  state = initial_state(config, fold_index)
  restored, start = checkpoints.restore_latest(manager, state)
  if restored is not None:
    state = restored
    logging.info("fold %s: resumed at step %d", fold, start)
  states = member_states(state)
  member_configs = [member_config(config, m) for m in range(len(states))]
  step_fn = _compiled(_model_key(config))[0]
  weights = jnp.asarray(class_weights(videos), jnp.float32)
  began = time.time()
  for step in range(start, num_steps):
    losses = []
    # Members step in turn, each on its own seed's batch: member m ends where a one-member
    # run with seed train.seed + m ends.
    for m, member in enumerate(member_configs):
      states[m], spot_loss, rec_loss = step_fn(
          states[m], weights, *sample_batch(videos, member, fold_index, step))
      losses.append((spot_loss, rec_loss))
    done = step + 1
    if done % int(config.log_every_steps) == 0 or done == num_steps:
      spot_loss, rec_loss = np.mean(np.asarray(losses, np.float64), axis=0)
      logging.info("fold %s step %d/%d: spotting loss %.4f, recognition loss %.4f (mean of %d "
                   "member(s); %.1f s)", fold, done, num_steps, spot_loss, rec_loss,
                   len(states), time.time() - began)
    if done % every == 0 or done == num_steps:
      checkpoints.save(manager, done, jax.device_get(_packed(states)))
  checkpoints.wait(manager)
  manager.close()
  return jax.device_get(_packed(states))


class Predictor:
  """A trained fold's spotter and recogniser applied to videos (also used by `mer_jax.analyze`).

  With an ensemble (`config.train.ensemble` > 1) the members' per-frame probabilities are
  averaged, and so are their recognisers' class probabilities.
  """

  def __init__(self, config, state: dict):
    """`state`: the fold's trained host state (`initial_state`'s structure)."""
    self.config = config
    self.settings = feature_settings(config)
    self.peak_params = peak_params(config)
    spotter, _ = make_models(config)
    self.context = spotter.receptive_radius
    _, spot, recognise = _compiled(_model_key(config))
    members = member_states(state)
    self._spot_params = [st["params"]["spotter"] for st in members]
    rec_params = [st["params"]["recogniser"] for st in members]
    self._spot = spot
    self._recognise = lambda maps: np.mean([np.asarray(recognise(p, maps), np.float64)
                                            for p in rec_params], axis=0)

  def use_recogniser_of(self, other: "Predictor") -> None:
    """Classifies intervals with `other`'s recogniser (another spotting run's)."""
    if other.settings.recognition_pool != self.settings.recognition_pool or (
        other.settings.size != self.settings.size):
      raise ValueError("the recognition workdir's frame size / recognition_pool "
                       f"({other.settings.size}, {other.settings.recognition_pool}) differ from "
                       f"the spotting workdir's ({self.settings.size}, "
                       f"{self.settings.recognition_pool})")
    self._recognise = other._recognise  # pylint: disable=protected-access

  def frame_probabilities(self, maps: np.ndarray) -> np.ndarray:
    """(T, P, P, 3) maps -> (T, 3) probabilities of background, micro, macro (members' mean)."""
    return np.mean([model_lib.softmax(model_lib.windowed_logits(
        lambda m, p=p: self._spot(p, m), maps, window=int(self.config.eval_window),
        context=self.context)) for p in self._spot_params], axis=0)

  def recognise(self, frames_grey: np.ndarray, intervals: Sequence[metrics.Interval]
                ) -> list[dict]:
    """Apex (from the flow) and class probabilities of each interval."""
    bounds = [(i.onset, i.offset) for i in intervals]
    apexes = features_lib.estimate_apexes(frames_grey, bounds)
    maps = features_lib.pair_features(frames_grey, [b[0] for b in bounds], apexes,
                                      pool=self.settings.recognition_pool)
    result = []
    if len(maps):
      pad = (-len(maps)) % 8  # a few fixed batch shapes
      probs = np.asarray(self._recognise(np.pad(maps, [(0, pad), (0, 0), (0, 0), (0, 0)])))
      probs = probs[:len(maps)]
    for n, interval in enumerate(intervals):
      p = probs[n].astype(np.float64)
      result.append({"apex": int(apexes[n]),
                     "class": clip_schema.CLASS_NAMES[int(np.argmax(p))],
                     "probabilities": {c: float(p[j]) for j, c in
                                       enumerate(clip_schema.CLASS_NAMES)}})
    return result

  def intervals(self, probabilities: np.ndarray, frames_grey: np.ndarray, fps: float,
                params: Optional[peaks_lib.PeakParams] = None) -> list[dict]:
    """Intervals found in `(T, 3)` probabilities (`params`, default the config's), recognised."""
    found = peaks_lib.find_intervals(probabilities, fps, params or self.peak_params)
    recognised = self.recognise(frames_grey, found)
    return [{"onset": i.onset, "apex": r["apex"], "offset": i.offset, "type": i.type,
             "score": i.score, "class": r["class"], "probabilities": r["probabilities"]}
            for i, r in zip(found, recognised)]

  def analyse(self, maps: np.ndarray, frames_grey: np.ndarray, fps: float) -> dict:
    """Spots and recognises one video: {"probabilities": (T, 3), "intervals": [dict]}."""
    probs = self.frame_probabilities(maps)
    return {"probabilities": probs, "intervals": self.intervals(probs, frames_grey, fps)}


# Decimals of the per-frame probabilities stored in a fold's predictions file.
PROBABILITY_DECIMALS = 4


def stored_probabilities(probabilities: np.ndarray) -> np.ndarray:
  """The probabilities as a fold's predictions file stores them (and intervals are found on).

  The LOSO intervals are found on these rounded values, so re-scoring a finished
  run with other peak parameters (`mer_jax.spotting.rescore`) starts from exactly
  the numbers the trainer used, and with the run's own parameters reproduces it.
  """
  return np.round(np.asarray(probabilities, np.float64), PROBABILITY_DECIMALS)


def _fold_record(predictor: Predictor, videos: Sequence[data_lib.Video]) -> dict:
  out = {}
  for v in videos:
    probs = stored_probabilities(predictor.frame_probabilities(v.maps))
    out[v.video_id] = {"intervals": predictor.intervals(probs, v.grey(), v.fps),
                       "probabilities": probs.tolist()}
  return out


def _write_fold(wd, fold: str, digest: str, videos_out: dict) -> None:
  wd.write_json(wd.predictions_json(fold), {"format": FOLD_FORMAT, "fold": fold,
                                            "run_identity": digest, "videos": videos_out},
                indent=None, sort_keys=False)


def _read_fold(wd, fold: str, digest: str, video_ids: Sequence[str]) -> Optional[dict]:
  path = wd.predictions_json(fold)
  if not os.path.exists(path):
    return None
  data = workdir_lib.read_json(path)
  redo = f" Delete {wd.fold_dir(fold)!r} to redo fold {fold}, or use a new --workdir."
  if not isinstance(data, dict) or data.get("format") != FOLD_FORMAT or data.get("fold") != fold:
    raise workdir_lib.WorkdirMismatchError(f"{path}: not the spotting predictions of fold "
                                           f"{fold!r}.{redo}")
  if data.get("run_identity") != digest:
    raise workdir_lib.WorkdirMismatchError(
        f"{path}: made under run identity {data.get('run_identity')!r}, this run is "
        f"{digest!r}.{redo}")
  if sorted(data["videos"]) != sorted(video_ids):
    raise workdir_lib.WorkdirMismatchError(f"{path}: holds videos {sorted(data['videos'])}, "
                                           f"fold {fold} holds out {sorted(video_ids)}.{redo}")
  return data["videos"]


def predictions_as_intervals(videos_out: dict) -> dict[str, list[metrics.Interval]]:
  return {vid: [metrics.Interval(i["onset"], i["offset"], i["type"], label=i["class"],
                                 apex=i["apex"], score=i["score"]) for i in rec["intervals"]]
          for vid, rec in videos_out.items()}


def results_markdown(results: dict) -> str:
  s, strs = results["spotting"], results["spot_then_recognise"]
  lines = [f"# Spotting: {results['dataset']['name']}/{results['dataset']['version']}, "
           f"LOSO over {results['num_folds']} subjects", "",
           "| type | TP | FP | FN | precision | recall | F1 |", "|---|---|---|---|---|---|---|"]
  for name, c in list(s["per_type"].items()) + [("overall", s["overall"])]:
    lines.append(f"| {name} | {c['tp']} | {c['fp']} | {c['fn']} | {c['precision']:.3f} | "
                 f"{c['recall']:.3f} | {c['f1']:.3f} |")
  a = strs["analysis"]
  lines += ["", f"macro F1 (mean over types): {s['macro_f1']:.3f}", "",
            "Spot-then-recognise (spotting across types):",
            f"F1_spot {strs['spotting']['f1']:.3f}, F1_analysis {a['f1']:.3f} (UF1 {a['uf1']:.3f}, "
            f"UAR {a['uar']:.3f} on {strs['num_spotted_pairs']} spotted intervals), "
            f"STRS {strs['strs']:.3f}", ""]
  if results.get("codecs"):
    lines += ["The held-out videos through lossy codecs (mer_jax.spotting.codecs):", "",
              "| codec | videos | TP | FP | FN | F1 | STRS |", "|---|---|---|---|---|---|---|"]
    for codec, r in results["codecs"].items():
      c = r["spotting"]["overall"]
      lines.append(f"| {codec} | {r['num_videos']} | {c['tp']} | {c['fp']} | {c['fn']} | "
                   f"{c['f1']:.3f} | {r['spot_then_recognise']['strs']:.3f} |")
    lines.append("")
  return "\n".join(lines)


def train_and_evaluate(config, workdir: str) -> dict:
  """LOSO training and evaluation (module docstring); returns and writes results.json."""
  trained_codecs, scored_codecs = train_codecs(config), eval_codecs(config)  # checked first
  if not config.train.loso:
    scored_codecs = ()  # only fold "all", which scores nothing
  wd = workdir_lib.Workdir(workdir)
  identity = workdir_lib.config_identity(config)
  on_mismatch = str(config.resume_mismatch)
  wd.claim(identity, on_mismatch=on_mismatch)
  wd.write_config(config)
  began = time.time()
  videos, dataset = dataset_videos(config)
  extra_videos, extra_datasets = extra_training_videos(config, trained_codecs)
  copies, copy_datasets = codec_copies(
      config, [c for c in codecs.CODECS if c in trained_codecs or c in scored_codecs])
  run_dataset = dict(dataset)
  if extra_datasets:
    run_dataset["extra_train"] = extra_datasets
  if copy_datasets:
    run_dataset["codecs"] = copy_datasets
  identity = workdir_lib.RunIdentity(config=identity.config, dataset=run_dataset,
                                     package_version=identity.package_version)
  wd.claim(identity, on_mismatch=on_mismatch)
  digest = identity.digest
  timing = {"features_s": round(time.time() - began, 1)}
  subjects = sorted({v.subject for v in videos})
  if len(subjects) < 2:
    raise ValueError(f"LOSO needs at least 2 subjects, {source_name(config)} has "
                     f"{len(subjects)}")
  folds = [(s, i) for i, s in enumerate(subjects)] if config.train.loso else []
  if config.train.final:
    folds.append((FINAL_FOLD, len(subjects)))
  outputs = {}
  for fold, index in folds:
    held_out = [v for v in videos if v.subject == fold] + [
        v for v in copies if v.subject == fold and codecs.codec_of(v.video_id) in scored_codecs]
    train_videos = [v for v in videos if v.subject != fold] + extra_videos + [
        v for v in copies if v.subject != fold and codecs.codec_of(v.video_id) in trained_codecs]
    done = _read_fold(wd, fold, digest, [v.video_id for v in held_out])
    if done is not None:
      logging.info("fold %s: done earlier, predictions read from %s", fold,
                   wd.predictions_json(fold))
      outputs.update(done)
      continue
    fold_began = time.time()
    state = train_fold(config, wd, fold, index, train_videos)
    record = _fold_record(Predictor(config, state), held_out)
    _write_fold(wd, fold, digest, record)
    outputs.update(record)
    timing[f"fold_{fold}_s"] = round(time.time() - fold_began, 1)
    logging.info("fold %s: %d held-out videos, %.1f s", fold, len(held_out),
                 time.time() - fold_began)

  if not config.train.loso:
    timing["total_s"] = round(time.time() - began, 1)
    wd.write_json(wd.timing_json, timing)
    logging.info("trained the final model only (config.train.loso=False): no LOSO results")
    return {}
  scored_copies = [v for v in copies if codecs.codec_of(v.video_id) in scored_codecs]
  results = loso_results(config, dataset, videos + scored_copies, outputs,
                         config.peaks.to_dict(), digest, copy_datasets)
  wd.write_json(wd.results_json, results)
  wd.write_text(wd.results_md, results_markdown(results))
  timing["total_s"] = round(time.time() - began, 1)
  wd.write_json(wd.timing_json, timing)
  spotting = results["spotting"]
  logging.info("spotting F1 %.3f (micro %.3f, macro %.3f), STRS %.3f; %s",
               spotting["overall"]["f1"], spotting["per_type"]["micro"]["f1"],
               spotting["per_type"]["macro"]["f1"], results["spot_then_recognise"]["strs"],
               wd.results_json)
  return results


def _pooled_scores(videos: Sequence[data_lib.Video], outputs: dict) -> tuple:
  truths = {v.video_id: v.truths for v in videos}
  predicted = predictions_as_intervals({v.video_id: outputs[v.video_id] for v in videos})
  spotting = metrics.evaluate_spotting(truths, predicted)
  strs = metrics.evaluate_spot_then_recognise(truths, predicted,
                                              classes=clip_schema.CLASS_NAMES)
  return spotting, strs


def loso_results(config, dataset: dict, videos: Sequence[data_lib.Video], outputs: dict,
                 peaks: dict, digest: str, copy_datasets: Optional[dict] = None) -> dict:
  """The results.json content: pooled scores of the held-out `outputs` against the truths.

  Args:
    config: the run's config (for the pair distance rule).
    dataset: the dataset identity of `data_lib.load_synthetic` (the originals).
    videos: every scored video of the run (truths, fps, subjects): the originals
      and any codec copies ("<id>@<codec>").
    outputs: {video_id: {"intervals": [dict]}} of every held-out video.
    peaks: the peak parameters the intervals were found with (a dict).
    digest: the run identity's digest.
    copy_datasets: {codec: dataset identity} of the copies (`codec_copies`).

  Returns:
    "spotting" and "spot_then_recognise" pool the originals; "codecs" (when
    copies were scored) holds the same two for each codec's copies.
  """
  by_codec: dict[str, list] = {}
  for v in videos:
    by_codec.setdefault(codecs.codec_of(v.video_id), []).append(v)
  originals = by_codec.pop("", [])
  spotting, strs = _pooled_scores(originals, outputs)
  k = {str(fps): features_lib.frame_offset(fps, float(config.features.micro_mean_s))
       for fps in sorted({v.fps for v in videos})}
  extra = {}
  if by_codec:
    extra["codecs"] = {}
    for codec, copies in sorted(by_codec.items()):
      copy_spotting, copy_strs = _pooled_scores(copies, outputs)
      extra["codecs"][codec] = {"dataset": (copy_datasets or {}).get(codec),
                                "num_videos": len(copies),
                                "spotting": copy_spotting.as_dict(),
                                "spot_then_recognise": copy_strs.as_dict()}
  return {"dataset": dataset, "num_folds": len({v.subject for v in originals}),
          "num_videos": len(originals), "pair_distance_k": k, "peaks": dict(peaks),
          "spotting": spotting.as_dict(), "spot_then_recognise": strs.as_dict(), **extra,
          "predictions": {vid: [{key: i[key] for key in ("onset", "apex", "offset", "type",
                                                          "class", "score")}
                                for i in rec["intervals"]]
                          for vid, rec in sorted(outputs.items())},
          "run_identity": digest}


def load_predictor(workdir: str, fold: str = FINAL_FOLD) -> tuple[Predictor, Any]:
  """The Predictor of a finished fold of a spotting workdir (default: the "all" fold)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  wd = workdir_lib.Workdir(workdir)
  if not os.path.isfile(wd.config_json):
    raise FileNotFoundError(f"{workdir!r} is not a spotting workdir (no config.json); train one "
                            "with python -m mer_jax.spotting.train --config=configs/spotting.py "
                            "--workdir=DIR")
  config = ml_collections.ConfigDict(workdir_lib.read_json(wd.config_json))
  if "peaks" not in config or "features" not in config:
    raise ValueError(f"{wd.config_json} is not a spotting config (no 'peaks'/'features'); "
                     "--spotting_workdir must be a workdir of mer_jax.spotting.train")
  ckpt = wd.checkpoints_dir(fold)
  if not os.path.isdir(ckpt):
    raise FileNotFoundError(f"{workdir!r} has no trained fold {fold!r} ({ckpt}); train with "
                            "configs/spotting.py (final=true, the default)")
  manager = checkpoints.create_manager(ckpt, validation_selection=False)
  # The fold index only seeds the initial values; the restore needs the structure.
  state, step = checkpoints.restore_latest(manager, initial_state(config, 0))
  manager.close()
  if state is None or step < int(config.train.num_steps):
    raise checkpoints.CheckpointError(f"fold {fold!r} of {workdir!r} has not finished training "
                                      f"(step {step} of {config.train.num_steps}); rerun the "
                                      "training command to resume it")
  return Predictor(config, state), config


def main(argv: Optional[Sequence[str]] = None) -> int:
  from absl import app  # pylint: disable=import-outside-toplevel,unused-import
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("workdir", None, "Directory for checkpoints and results.")
  config_flags.DEFINE_config_file("config", None, "Spotting config (configs/spotting.py).",
                                  lock_config=True)
  flags.mark_flags_as_required(["config", "workdir"])
  flags.FLAGS(list(argv if argv is not None else sys.argv))
  logging.set_verbosity(logging.INFO)
  logging.use_absl_handler()
  results = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  print(summary_text(results, flags.FLAGS.workdir))
  return 0


def summary_text(results: dict, workdir: str) -> str:
  """What the command prints: the pooled scores, or (`train.loso=False`, no LOSO results)
  where the model `mer-jax analyze` loads was written."""
  if not results:
    wd = workdir_lib.Workdir(workdir)
    return (f"trained the final model only (config.train.loso=False), no LOSO scores: "
            f"{wd.checkpoints_dir(FINAL_FOLD)}; use it with mer-jax analyze VIDEO --out DIR "
            f"--spotting_workdir={workdir}")
  summary = {"overall": results["spotting"]["overall"],
             "macro_f1": results["spotting"]["macro_f1"],
             "strs": results["spot_then_recognise"]["strs"]}
  for codec, scores in codec_summary(results).items():
    summary[f"{codec} copies"] = scores
  return json.dumps(summary, indent=1)


def codec_summary(results: dict) -> dict[str, dict]:
  """{codec: {"f1", "strs"}} of results.json's codec copies ({} without any)."""
  return {codec: {"f1": r["spotting"]["overall"]["f1"], "strs": r["spot_then_recognise"]["strs"]}
          for codec, r in results.get("codecs", {}).items()}


if __name__ == "__main__":
  sys.exit(main())
