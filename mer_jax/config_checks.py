"""Every config value checked before compute; each mistake names its field.

Two passes:

* `validate_config(config)`: before any data is touched. Every enumerated
  field (step mode, model selection, optimiser, class weighting, input
  sampling and short-clip rule, part names and their arguments, input mode,
  pixel statistics, the magnification band), every numeric range and
  finiteness, device divisibility, and the model traced once on the
  configured input shape with `jax.eval_shape` (no compute) so that shapes
  that cannot work (an image too small for the encoder, a band above Nyquist)
  fail here.
* `validate_against_data(config, index)`: right after the clip index is read
  (fold names, onset/apex/offset, clips too short for `short_clip="error"`).
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
import os
import re
from typing import Any, Iterable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from mer_jax import schema
from mer_jax.motion_input import NORMALIZATIONS, REPRESENTATIONS
from mer_jax import steps as steps_lib
from mer_jax import train_state
from mer_jax import workdir as workdir_lib
from mer_jax.models import create_model

SAMPLING_MODES = ("uniform", "apex")
SHORT_CLIP_RULES = ("repeat", "pad", "error")
MODEL_SELECTION = ("last", "validation")
OPTIMIZERS = ("adamw", "sgd")
CLASS_WEIGHTING = ("none", "balanced")
TRANSFER_POLICIES = ("full", "I", "II", "III")
# Every mer_jax clip builder writes one split; a split expression may slice it ("train[:50%]").
KNOWN_SPLITS = ("train",)


def _one_of(name: str, value: Any, allowed: Iterable[str]) -> None:
  allowed = tuple(allowed)
  if value not in allowed:
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"config.{name} must be one of {allowed}, got {value!r}{hint}")


def _number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, integer: bool = False,
            allow_none: bool = False) -> None:
  """Checks a finite number in a range; the message names `config.<name>` and the range."""
  if value is None and allow_none:
    return
  kind = numbers.Integral if integer else numbers.Real
  if isinstance(value, bool) or not isinstance(value, kind):
    raise ValueError(f"config.{name} must be {'an integer' if integer else 'a number'}, got "
                     f"{value!r}")
  if not math.isfinite(value):
    raise ValueError(f"config.{name} must be finite, got {value}")
  lo = "(" if low_open else "["
  hi = ")" if high_open else "]"
  text = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
  if low is not None and (value < low or (low_open and value == low)):
    raise ValueError(f"config.{name} must be in {text}, got {value}")
  if high is not None and (value > high or (high_open and value == high)):
    raise ValueError(f"config.{name} must be in {text}, got {value}")


def validate_config(config: ml_collections.ConfigDict, workdir: str | None = None) -> None:
  """Raises ValueError naming the field at fault; run before any data or compute."""
  if workdir is not None:
    workdir_lib.Workdir(workdir)  # A workdir that is a file fails here.
  _one_of("step_mode", config.step_mode, steps_lib.STEP_MODES)
  _one_of("model_selection", config.model_selection, MODEL_SELECTION)
  _number("num_validation_subjects", config.num_validation_subjects, low=0, integer=True)
  if config.model_selection == "validation" and config.num_validation_subjects < 1:
    raise ValueError("config.model_selection='validation' needs config.num_validation_subjects "
                     ">= 1 (validation subjects are carved from the training subjects)")
  _one_of("optimizer", config.optimizer, OPTIMIZERS)
  _one_of("class_weighting", config.class_weighting, CLASS_WEIGHTING)
  _one_of("resume_mismatch", config.get("resume_mismatch", "refuse"),
          workdir_lib.RESUME_MISMATCH_RULES)

  # Folds and seeds trained together (mer_jax.fold_parallel; layout checked with the folds).
  parallel_folds = config.get("parallel_folds", 1)
  _number("parallel_folds", parallel_folds, low=-1, integer=True)
  if parallel_folds == 0:
    raise ValueError("config.parallel_folds must be 1 (one fold at a time), k > 1 (k folds "
                     "at once) or -1 (every fold at once), got 0")
  _number("num_seeds", config.get("num_seeds", 1), low=1, integer=True)
  _number("fold_devices", config.get("fold_devices", 0), low=0, integer=True)
  if not isinstance(config.get("device_loop", False), bool):
    raise ValueError(f"config.device_loop must be True or False, got {config.device_loop!r}")

  # Schedule and optimiser.
  for field in ("batch_size", "eval_batch_size", "num_train_steps", "log_every_steps",
                "checkpoint_every_steps"):
    _number(field, config[field], low=1, integer=True)
  _number("seed", config.seed, low=0, integer=True)
  _number("learning_rate", config.learning_rate, low=0, low_open=True)
  _number("warmup_steps", config.warmup_steps, low=0, integer=True)
  _number("weight_decay", config.weight_decay, low=0)
  _number("grad_clip_norm", config.grad_clip_norm, low=0, allow_none=True)
  _number("label_smoothing", config.label_smoothing, low=0, high=1, high_open=True)

  # Data.
  split = config.dataset.split
  names = [re.sub(r"\[.*\]$", "", part.strip()) for part in str(split).split("+")]
  unknown = [n for n in names if n not in KNOWN_SPLITS]
  if unknown:
    _one_of("dataset.split", unknown[0], KNOWN_SPLITS)

  # Input.
  cfg = config.input
  _one_of("input.sampling", cfg.sampling, SAMPLING_MODES)
  _one_of("input.short_clip", cfg.short_clip, SHORT_CLIP_RULES)
  # One frame is a clip only for RGB input (e.g. the onset frame alone, the no-label-leak
  # check); the difference modes need a second frame (their first difference is zero).
  _number("input.num_frames", cfg.num_frames,
          low=1 if config.model.get("input_mode", "rgb") == "rgb" else 2, integer=True)
  _number("input.image_size", cfg.image_size, low=1, integer=True)
  _number("input.resize_size", cfg.get("resize_size", None), low=1, integer=True,
          allow_none=True)
  _number("input.temporal_jitter", cfg.temporal_jitter, low=0, integer=True)
  _number("input.resident_max_mib", cfg.get("resident_max_mib", 1024.0), low=0, low_open=True)
  _number("input.num_workers", cfg.get("num_workers", 0), low=0, integer=True)
  _number("input.num_threads", cfg.get("num_threads", None), low=1, integer=True, allow_none=True)
  representation = cfg.get("representation", "frames")
  _one_of("input.representation", representation, REPRESENTATIONS)
  flow_model = config.model.get("input_mode", "rgb") == "flow"
  if (representation == "flow") != flow_model:
    raise ValueError(
        f"config.input.representation={representation!r} with config.model.input_mode="
        f"{config.model.get('input_mode')!r}: a flow model needs flow input and a frame model "
        "frames; set both to 'flow' (e.g. --config=configs/default.py:input=flow) or neither")
  if representation == "flow":
    flow = config.flow
    _number("flow.size", flow.size, low=16, integer=True)
    _number("flow.batch_size", flow.batch_size, low=1, integer=True)
    _one_of("flow.normalize", flow.normalize, NORMALIZATIONS)
    from mer_jax.flow import strain as strain_lib  # pylint: disable=import-outside-toplevel
    from mer_jax.flow import tvl1  # pylint: disable=import-outside-toplevel
    _one_of("flow.strain", flow.strain, strain_lib.STRAIN_VARIANTS)
    try:
      params = tvl1.TVL1Params(**dict(flow.tvl1 or {}))
      tvl1.check_frame_size(flow.size, flow.size, params.num_scales, params.scale_step,
                            name="config.flow.size")
    except (TypeError, ValueError) as e:
      raise ValueError(f"config.flow.tvl1 / config.flow.size: {e}") from e
    if config.model.get("magnify"):
      raise ValueError("config.model.magnify runs inside a frame model; with flow input it "
                       "would see flow maps. Set config.model.magnify=None")

  # Devices.
  devices = jax.local_device_count() * jax.process_count()
  for field in ("batch_size", "eval_batch_size"):
    per_process = config[field] // jax.process_count()
    if config[field] % devices or per_process % jax.local_device_count():
      raise ValueError(f"config.{field}={config[field]} must be divisible by the number of "
                       f"devices ({devices}: {jax.process_count()} process(es) x "
                       f"{jax.local_device_count()} local)")

  # Transfer learning.
  transfer = config.transfer
  if transfer.policy is not None:
    _one_of("transfer.policy", transfer.policy, TRANSFER_POLICIES)
    if transfer.policy in ("II", "III") and not transfer.specific_layer:
      raise ValueError(f"config.transfer.policy={transfer.policy!r} needs "
                       "config.transfer.specific_layer (a layer such as 'layer3', or 'auto')")
  if transfer.pretrained_checkpoint and not os.path.isdir(transfer.pretrained_checkpoint):
    raise ValueError(f"config.transfer.pretrained_checkpoint: no checkpoint directory at "
                     f"{transfer.pretrained_checkpoint!r} (convert weights with "
                     "`python -m mer_jax.models.weights convert IN OUT`)")
  if transfer.policy and not transfer.pretrained_checkpoint:
    logging.warning("config.transfer.policy=%s without config.transfer.pretrained_checkpoint: "
                    "the frozen layers keep their random initialisation", transfer.policy)

  # The model: names and arguments, then one shape-only trace on the configured input.
  check_model(config)


def check_model(config: ml_collections.ConfigDict) -> None:
  """Builds the model and traces `init` on the configured input shape (no compute).

  `specific_layer="auto"` is resolved per fold later; the trace uses the
  untruncated model then.
  """
  resolved = config
  if config.transfer.policy in ("II", "III") and config.transfer.specific_layer == "auto":
    resolved = train_state.model_config_without_policy(config)
  try:
    model = create_model(train_state.model_config(resolved), num_classes=schema.NUM_CLASSES)
  except ValueError as e:
    raise ValueError(f"config.model: {e}") from e
  shape, dtype = train_state.model_input(config)
  frames = jax.ShapeDtypeStruct((1,) + shape, dtype)
  mask = jax.ShapeDtypeStruct((1, shape[0]), jnp.bool_)
  try:
    jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), frames, mask)
  except (ValueError, TypeError) as e:
    what = ("config.input.num_frames x image_size x image_size x RGB"
            if dtype == jnp.uint8 else "one flow map of config.input.image_size, C channels")
    raise ValueError(
        f"config.model / config.input: the model cannot take clips of "
        f"{' x '.join(map(str, shape))} ({what}): {e}") from e


def validate_against_data(config: ml_collections.ConfigDict, index) -> None:
  """The data-dependent checks, right after `input_pipeline.read_clip_index`."""
  from mer_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  input_pipeline.check_sampling(index, config.input)
  input_pipeline.loso_folds(index, folds=config.folds,
                            num_validation_subjects=config.num_validation_subjects,
                            seed=config.seed)
