"""What a fold starts from: its random keys, resolved model config, optimiser and train state.

Every module that has to reproduce a fold's starting point (the trainer,
`layer_selection`, `gradcam_report`, `ablation`, the benchmarks) asks here, so
each rule is written once:

* `fold_seed` / `fold_rngs`: the seed rule `seed * 1_000_003 + fold_index` and
  the split into initialisation and dropout keys.
* `model_config` / `model_config_without_policy`: `config.model` with the
  encoder fields a transfer-learning policy adds, and its inverse (every layer
  present, nothing frozen) for Grad-CAM over all candidate layers.
* `create_learning_rate`, `create_optimizer`, `initial_state`.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import optax

# Encoder kwargs a transfer policy adds (`transfer.encoder_kwargs_for_policy`); the
# inverse of `model_config` removes exactly these.
POLICY_ENCODER_FIELDS = ("truncate_after", "frozen_stats_before", "frozen_batch_stats")


class TrainState(train_state.TrainState):
  """Flax's TrainState plus BatchNorm statistics (`batch_stats`, a pytree or {})."""
  batch_stats: Any = None


def fold_seed(config: ml_collections.ConfigDict, fold_index: int,
              seed: Optional[int] = None) -> int:
  """The integer seed of fold `fold_index` (its position in the run's fold list).

  `seed` replaces `config.seed` (the extra seeds of `config.num_seeds`).
  """
  return (config.seed if seed is None else seed) * 1_000_003 + fold_index


def fold_rngs(config: ml_collections.ConfigDict, fold_index: int,
              seed: Optional[int] = None) -> tuple[jax.Array, jax.Array]:
  """`(init_rng, dropout_rng)` of fold `fold_index` (under run seed `seed`, default config's)."""
  init_rng, dropout_rng = jax.random.split(jax.random.key(fold_seed(config, fold_index, seed)))
  return init_rng, dropout_rng


def model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config.model`, with the encoder fields a transfer-learning policy needs.

  Policies (seed paper Figure 2, `mer_jax.transfer`): I trains the classifier
  layers only, II freezes the encoder before the specific layer l_s, III drops
  the encoder after l_s. Freezing also freezes those layers' BatchNorm
  statistics, which the encoder does through the fields added here.
  """
  if not config.transfer.policy:
    return config.model
  from mer_jax import transfer  # pylint: disable=import-outside-toplevel
  result = ml_collections.ConfigDict(config.model.to_dict())
  result.encoder_kwargs = {**dict(config.model.encoder_kwargs or {}),
                           **transfer.encoder_kwargs_for_policy(config.transfer.policy,
                                                                config.transfer.specific_layer)}
  return result


def model_config_without_policy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The inverse of `model_config`: a copy of `config` with no policy and no truncation.

  Every encoder layer exists and nothing is frozen (Grad-CAM scores all candidates).
  """
  result = ml_collections.ConfigDict(config.to_dict())
  result.transfer.policy = None
  kwargs = dict(result.model.get("encoder_kwargs", None) or {})
  for key in POLICY_ENCODER_FIELDS:
    kwargs.pop(key, None)
  result.model.encoder_kwargs = kwargs
  return result


def create_learning_rate(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up then cosine decay to zero over `num_train_steps`.

  Runs shorter than the warm-up (a one-epoch smoke run) get a shortened warm-up.
  """
  warmup = max(0, min(config.warmup_steps, config.num_train_steps - 1))
  if warmup == 0:
    return optax.cosine_decay_schedule(config.learning_rate, config.num_train_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
      decay_steps=config.num_train_steps, end_value=0.0)


# One optimiser object per (config, parameter structure): a TrainState carries its optimiser as
# static data, so a fresh but equal chain per fold would make jit and pmap trace and compile
# the train step again for every fold of a run.
_OPTIMIZERS: dict[tuple[str, Any], optax.GradientTransformation] = {}


def create_optimizer(config: ml_collections.ConfigDict, params: Any) -> optax.GradientTransformation:
  """The optax chain from the config, with the transfer-learning freezing mask if any.

  Equal configs and parameter structures get the same (cached) object.
  """
  key = (config.to_json_best_effort(sort_keys=True), jax.tree.structure(params))
  if key not in _OPTIMIZERS:
    _OPTIMIZERS[key] = _build_optimizer(config, params)
  return _OPTIMIZERS[key]


def _build_optimizer(config: ml_collections.ConfigDict, params: Any) -> optax.GradientTransformation:
  schedule = create_learning_rate(config)
  if config.optimizer == "adamw":
    tx = optax.adamw(schedule, weight_decay=config.weight_decay)
  else:
    tx = optax.sgd(schedule, momentum=0.9, nesterov=True)
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  if config.transfer.policy:
    from mer_jax import transfer  # pylint: disable=import-outside-toplevel
    tx = transfer.make_optimizer_with_policy(tx, params, config.transfer.policy,
                                             config.transfer.specific_layer)
  return tx


def model_input(config: ml_collections.ConfigDict) -> tuple[tuple[int, ...], Any]:
  """`(shape without batch, dtype)` of one clip as the model receives it.

  Frames: `(num_frames, image_size, image_size, 3)` uint8. Flow
  (`config.input.representation = "flow"`): a one-frame clip
  `(1, image_size, image_size, C)` float32, C = 3 (u, v, strain) or 6 with
  apex->offset flow.
  """
  cfg = config.input
  if cfg.get("representation", "frames") == "flow":
    channels = 6 if config.flow.apex_offset else 3
    return (1, cfg.image_size, cfg.image_size, channels), jnp.float32
  return (cfg.num_frames, cfg.image_size, cfg.image_size, 3), jnp.uint8


@functools.partial(jax.jit, static_argnums=0)
def _init(model: flax.linen.Module, rng: jax.Array, frames: jax.Array, mask: jax.Array) -> Any:
  # One compiled initialiser per model (Flax modules hash by their fields), shared by
  # every fold of a run instead of a fresh trace and compile per fold.
  return model.init(rng, frames, mask, train=False)


# One module instance per equal model: Flax modules compare by their fields, but a bound method
# compares its instance by identity (Python >= 3.8), and a TrainState carries `apply_fn` as
# static data. Without this, a fresh but equal model per fold (or per fold-parallel chunk)
# makes jit trace and compile the train and eval steps again for every fold of a run.
_APPLY_MODELS: dict[flax.linen.Module, flax.linen.Module] = {}


def initial_state(config: ml_collections.ConfigDict, model: flax.linen.Module,
                  rng: jax.Array) -> TrainState:
  """Initialises parameters (and optionally a pretrained encoder) on the host.

  The dummy input is one clip of `model_input(config)` and its mask.
  """
  shape, dtype = model_input(config)
  frames = jnp.zeros((1,) + shape, dtype)
  mask = jnp.ones((1, shape[0]), bool)
  variables = _init(model, rng, frames, mask)
  if config.transfer.pretrained_checkpoint:
    from mer_jax.models import weights  # pylint: disable=import-outside-toplevel
    variables = weights.merge_encoder_variables(
        variables, weights.load_encoder_checkpoint(config.transfer.pretrained_checkpoint))
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  apply_model = _APPLY_MODELS.setdefault(model, model)
  return TrainState.create(apply_fn=apply_model.apply, params=params,
                           tx=create_optimizer(config, params), batch_stats=batch_stats)
