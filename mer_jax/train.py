"""Leave-one-subject-out training and evaluation: `train_and_evaluate(config, workdir)`.

For each LOSO fold (held-out subject), a fresh model trains on the other
subjects for a fixed number of steps, data-parallel over every device, then
predicts the held-out subject's clips. Predictions of all folds are pooled and
scored once (UF1, UAR, accuracy; see `mer_jax.evaluation`). Nothing is ever
selected on the test subject: the schedule is fixed, or (model_selection =
"validation") the checkpoint is chosen on validation subjects carved from the
fold's training subjects.

The per-device training step is written once with named-axis collectives over
the axis "data" and runs under `jax.pmap` (config.step_mode = "pmap") or under
`jax.shard_map` over a device `Mesh` (config.step_mode = "shard_map").

Workdir layout (process 0 writes everything):
  config.json                      the resolved config
  folds/<fold>/checkpoints/        Orbax checkpoints of the fold's train state
  folds/<fold>/predictions.json    the fold's test predictions; marks it done
  results.json, results.md         pooled scores, per class, per dataset
  confusion_matrix.png, megc_predictions.txt
  events.out.tfevents.*            TensorBoard scalars (clu metric writers)

Killing the process at any moment and rerunning the same command resumes:
finished folds are read back, the running fold restarts from its latest
checkpoint, and the input stream is a pure function of (seed, fold, step), so
the results equal an uninterrupted run's.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Callable, Optional

from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from mer_jax import evaluation
from mer_jax import input_pipeline
from mer_jax import layer_selection
from mer_jax import schema
from mer_jax.models import create_model

AXIS = "data"
STEP_MODES = ("pmap", "shard_map")


class TrainState(train_state.TrainState):
  batch_stats: Any = None


class NonFiniteLossError(FloatingPointError):
  """Raised when the training loss becomes NaN or Inf."""


# --------------------------------------------------------------------------------------------
# Config checks: every mistake is reported before any compute.
# --------------------------------------------------------------------------------------------

def validate_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises ValueError naming the field at fault; run before any data or compute."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"workdir {workdir!r} exists and is a file, not a directory")
  if config.step_mode not in STEP_MODES:
    raise ValueError(f"config.step_mode must be one of {STEP_MODES}, got {config.step_mode!r}")
  if config.model_selection not in ("last", "validation"):
    raise ValueError("config.model_selection must be 'last' (fixed schedule) or 'validation' "
                     f"(validation subjects from the training subjects), got "
                     f"{config.model_selection!r}")
  if config.model_selection == "validation" and config.num_validation_subjects < 1:
    raise ValueError("config.model_selection='validation' needs config.num_validation_subjects "
                     ">= 1 (validation subjects are carved from the training subjects)")
  if config.optimizer not in ("adamw", "sgd"):
    raise ValueError(f"config.optimizer must be 'adamw' or 'sgd', got {config.optimizer!r}")
  if config.class_weighting not in ("none", "balanced"):
    raise ValueError(f"config.class_weighting must be 'none' or 'balanced', got "
                     f"{config.class_weighting!r}")
  for field in ("batch_size", "eval_batch_size", "num_train_steps"):
    if config[field] < 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")
  devices = jax.local_device_count() * jax.process_count()
  for field in ("batch_size", "eval_batch_size"):
    per_process = config[field] // jax.process_count()
    if config[field] % devices or per_process % jax.local_device_count():
      raise ValueError(f"config.{field}={config[field]} must be divisible by the number of "
                       f"devices ({devices}: {jax.process_count()} process(es) x "
                       f"{jax.local_device_count()} local)")
  if config.transfer.pretrained_checkpoint and not os.path.isdir(
      config.transfer.pretrained_checkpoint):
    raise ValueError(f"config.transfer.pretrained_checkpoint: no checkpoint directory at "
                     f"{config.transfer.pretrained_checkpoint!r} (convert weights with "
                     "`python -m mer_jax.models.weights convert IN OUT`)")
  if config.transfer.policy and not config.transfer.pretrained_checkpoint:
    logging.warning("config.transfer.policy=%s without config.transfer.pretrained_checkpoint: "
                    "the frozen layers keep their random initialisation", config.transfer.policy)
  # Builds the model once so unknown part names or arguments fail here.
  create_model(model_config(config), num_classes=schema.NUM_CLASSES)


# --------------------------------------------------------------------------------------------
# Model state and optimiser.
# --------------------------------------------------------------------------------------------

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


def create_optimizer(config: ml_collections.ConfigDict, params: Any) -> optax.GradientTransformation:
  """The optax chain from the config, with the transfer-learning freezing mask if any."""
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


def initial_state(config: ml_collections.ConfigDict, model: flax.linen.Module,
                  rng: jax.Array) -> TrainState:
  """Initialises parameters (and optionally a pretrained encoder) on the host."""
  cfg = config.input
  frames = jnp.zeros((1, cfg.num_frames, cfg.image_size, cfg.image_size, 3), jnp.uint8)
  mask = jnp.ones((1, cfg.num_frames), bool)
  variables = jax.jit(functools.partial(model.init, train=False))(rng, frames, mask)
  if config.transfer.pretrained_checkpoint:
    from mer_jax.models import weights  # pylint: disable=import-outside-toplevel
    variables = weights.merge_encoder_variables(
        variables, weights.load_encoder_checkpoint(config.transfer.pretrained_checkpoint))
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  return TrainState.create(apply_fn=model.apply, params=params,
                           tx=create_optimizer(config, params), batch_stats=batch_stats)


# --------------------------------------------------------------------------------------------
# The per-device steps (named-axis collectives over AXIS) and their pmap/shard_map wrappers.
# --------------------------------------------------------------------------------------------

def _clip_loss(logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray,
               label_smoothing: float) -> jnp.ndarray:
  """Cross-entropy per clip `(B,)`; per-frame logits `(B, N, C)` average over valid frames."""
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  if logits.ndim == 3:
    per_frame = optax.softmax_cross_entropy(logits, targets[:, None, :])
    weights = mask.astype(jnp.float32)
    return jnp.sum(per_frame * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
  return optax.softmax_cross_entropy(logits, targets)


def clip_probabilities(logits: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Class probabilities per clip `(B, C)`; per-frame models average valid frames' softmax."""
  probs = jax.nn.softmax(logits, axis=-1)
  if probs.ndim == 3:
    weights = mask.astype(jnp.float32)[..., None]
    probs = jnp.sum(probs * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
  return probs


def train_step(state: TrainState, batch: dict, rng: jax.Array, class_weights: jnp.ndarray, *,
               label_smoothing: float) -> tuple[TrainState, dict]:
  """One data-parallel SGD step on this device's shard of the batch.

  Args:
    state: the replicated train state.
    batch: this device's `frames` (b, N, H, W, 3) uint8, `mask` (b, N) bool,
      `label` (b,) int32.
    rng: dropout key, the same on every device (folded with the device index).
    class_weights: (num_classes,) float32 loss weight per class.

  Gradients, BatchNorm statistics and metrics are averaged over the "data" axis
  with `lax.pmean`, so every device ends with the same state.
  """
  rng = jax.random.fold_in(rng, jax.lax.axis_index(AXIS))
  weights = class_weights[batch["label"]]

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, batch["frames"], batch["mask"],
        train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
    per_clip = _clip_loss(logits, batch["label"], batch["mask"], label_smoothing)
    loss = jnp.sum(per_clip * weights) / jnp.maximum(jnp.sum(weights), 1e-6)
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, AXIS)
  batch_stats = jax.lax.pmean(updates.get("batch_stats", state.batch_stats), AXIS)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  predictions = jnp.argmax(clip_probabilities(logits, batch["mask"]), axis=-1)
  metrics = {
      "loss": jax.lax.pmean(loss, AXIS),
      "accuracy": jax.lax.pmean(jnp.mean(predictions == batch["label"]), AXIS),
      "grad_norm": optax.tree.norm(grads),
      # The loss is computed before the update; the updated parameters are
      # checked too so that a diverged state is never checkpointed.
      "param_norm": optax.tree.norm(new_state.params),
  }
  return new_state, metrics


def eval_step(state: TrainState, batch: dict) -> jnp.ndarray:
  """Class probabilities `(B_device, C)` for this device's shard."""
  logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                          batch["frames"], batch["mask"], train=False)
  return clip_probabilities(logits, batch["mask"])


@flax.struct.dataclass
class Steps:
  train: Callable = flax.struct.field(pytree_node=False)
  eval: Callable = flax.struct.field(pytree_node=False)


def compile_steps(mode: str, mesh: jax.sharding.Mesh, *, label_smoothing: float) -> Steps:
  """Wraps the per-device steps for `mode` ("pmap" or "shard_map").

  The wrapped functions are created once per run, so every fold reuses the
  same compiled executables (the shapes do not change between folds).
  """
  train = functools.partial(train_step, label_smoothing=label_smoothing)
  if mode == "pmap":
    return Steps(train=jax.pmap(train, axis_name=AXIS, in_axes=(0, 0, None, None),
                                donate_argnums=(0,)),
                 eval=jax.pmap(eval_step, axis_name=AXIS))
  P = jax.sharding.PartitionSpec
  return Steps(
      train=jax.jit(per_device(train, mesh, in_specs=(P(), P(AXIS), P(), P()),
                               out_specs=(P(), P())), donate_argnums=(0,)),
      eval=jax.jit(per_device(eval_step, mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS))))


def per_device(fn: Callable, mesh: jax.sharding.Mesh, *, in_specs, out_specs) -> Callable:
  """`jax.shard_map` of a per-device function written for pmap semantics.

  `check_vma=False`: with varying-manual-axes checking on, `jax.grad` inside
  shard_map of a loss with respect to *replicated* parameters already sums the
  gradient over devices (the transpose of the implicit broadcast), and the
  step's own `lax.pmean` would then return 8x the mean on 8 devices. Without
  the check every device sees local values, exactly as under pmap, so one step
  function serves both modes. The outputs declared replicated are replicated
  because the step all-reduces them itself.
  """
  return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def place_state(state: TrainState, mode: str, mesh: jax.sharding.Mesh) -> TrainState:
  """Replicates a host state on the devices: per local device (pmap) or over the mesh."""
  if mode == "pmap":
    return flax.jax_utils.replicate(state)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(
      lambda x: jax.make_array_from_callback(np.shape(x), replicated,
                                             lambda idx, x=x: np.asarray(x)[idx]), state)


def host_state(state: TrainState, mode: str) -> TrainState:
  """A host (numpy) copy of a replicated device state."""
  def first(x):
    # An explicit copy: on CPU np.asarray may alias the device buffer, which the
    # next (donating) train step overwrites while an async checkpoint save reads it.
    shard = np.array(x.addressable_data(0), copy=True)
    # `shard[0, ...]` keeps a 0-d array for scalars such as `step` (`shard[0]` would give a
    # NumPy scalar, which Orbax refuses as a restore target).
    return shard[0, ...] if mode == "pmap" else shard
  return jax.tree.map(first, state)


def local_outputs(x: jax.Array, mode: str) -> np.ndarray:
  """This process's rows of a per-example device output, in input order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  rows = [np.asarray(s.data) for s in shards]
  return np.concatenate([r.reshape((-1,) + r.shape[2:]) if mode == "pmap" else r for r in rows])


def parameter_fingerprint(params: Any) -> str:
  """A short digest of every parameter's bytes (for lockstep and determinism checks)."""
  import hashlib  # pylint: disable=import-outside-toplevel
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    digest.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
  return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Evaluation of one fold.
# --------------------------------------------------------------------------------------------

def predict(steps: Steps, state: TrainState, builder, split: str, subjects, config, *, mode: str,
            mesh) -> list[dict]:
  """Predictions for every clip of `subjects`: dicts with label, prediction, probabilities."""
  local_batch = config.eval_batch_size // jax.process_count()
  ds = input_pipeline.create_eval_dataset(builder, split, subjects, config.input,
                                          batch_size=local_batch)
  records = []
  for batch in ds.as_numpy_iterator():
    batch = input_pipeline.pad_batch(batch, local_batch)
    valid = batch.pop("valid")
    device_batch = input_pipeline.shard_for_devices(
        input_pipeline.device_arrays(batch), mode=mode, mesh=mesh)
    probs = local_outputs(steps.eval(state, device_batch), mode)
    for i in np.flatnonzero(valid):
      records.append({
          "clip_id": batch["clip_id"][i].decode(), "subject": batch["subject"][i].decode(),
          "dataset": batch["dataset"][i].decode(), "label": int(batch["label"][i]),
          "prediction": int(np.argmax(probs[i])),
          "probabilities": [round(float(p), 6) for p in probs[i]]})
  if not records:
    raise ValueError(f"no clips for subjects {list(subjects)} in split {split!r}")
  return records


# --------------------------------------------------------------------------------------------
# One LOSO fold.
# --------------------------------------------------------------------------------------------

def _checkpoint_manager(directory: str, config) -> ocp.CheckpointManager:
  """Keeps two checkpoints: the latest two, or with validation selection the best two."""
  selection = config.model_selection == "validation"
  options = ocp.CheckpointManagerOptions(
      max_to_keep=2,
      best_fn=(lambda m: m["validation_uf1"]) if selection else None,
      best_mode="max",
      keep_checkpoints_without_metrics=not selection,
      create=True, enable_async_checkpointing=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def train_fold(config: ml_collections.ConfigDict, fold: input_pipeline.Fold, fold_index: int,
               builder, index: input_pipeline.ClipIndex, workdir: str, mesh, writer,
               steps: Steps) -> list[dict]:
  """Trains one fold (resuming from its latest checkpoint) and returns test predictions."""
  # specific_layer="auto": Grad-CAM picks l_s on this fold's training subjects (never the
  # test subject); the choice is recorded in the fold directory and reused on resume.
  config = layer_selection.config_for_fold(config, builder, fold, fold_index, workdir)
  mode = config.step_mode
  fold_dir = os.path.join(workdir, "folds", fold.name)
  model = create_model(model_config(config), num_classes=schema.NUM_CLASSES,
                       dtype=jnp.bfloat16 if config.half_precision else jnp.float32)
  fold_seed = config.seed * 1_000_003 + fold_index
  rng = jax.random.key(fold_seed)
  init_rng, dropout_rng = jax.random.split(rng)
  state = initial_state(config, model, init_rng)
  if fold_index == 0 and jax.process_index() == 0:
    parameter_overview.log_parameter_overview(state.params)

  manager = _checkpoint_manager(os.path.join(fold_dir, "checkpoints"), config)
  start_step = manager.latest_step() or 0
  if start_step:
    restored = manager.restore(start_step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(jax.tree.map(np.asarray, state))))
    state = restored["state"]
    logging.info("fold %s: resumed from step %d", fold.name, start_step)

  class_weights = jnp.asarray(
      input_pipeline.class_weights(index, fold.train_subjects, schema.NUM_CLASSES)
      if config.class_weighting == "balanced" else np.ones(schema.NUM_CLASSES, np.float32))
  local_batch = config.batch_size // jax.process_count()
  train_ds = input_pipeline.create_train_dataset(
      builder, config.dataset.split, fold.train_subjects, config.input, batch_size=local_batch,
      seed=fold_seed, start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count())
  batches = input_pipeline.prefetch_to_devices(train_ds.as_numpy_iterator(), mode=mode, mesh=mesh)
  device_state = place_state(state, mode, mesh)

  num_steps = config.num_train_steps
  global_offset = fold_index * num_steps
  progress = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                             every_steps=config.log_every_steps)
  pending: Optional[tuple[int, dict]] = None  # Metrics read one step late: keeps dispatch async.

  def check(step: int, metrics: dict) -> dict:
    values = jax.tree.map(lambda x: float(np.asarray(x.addressable_data(0)).reshape(-1)[0]),
                          metrics)
    if not (math.isfinite(values["loss"]) and math.isfinite(values["param_norm"])):
      manager.wait_until_finished()
      raise NonFiniteLossError(
          f"fold {fold.name}: training loss is {values['loss']} (parameter norm "
          f"{values['param_norm']}) at step {step}; stopping the "
          f"fold. The last good checkpoint (step {manager.latest_step()}) is kept in "
          f"{os.path.join(fold_dir, 'checkpoints')}. Lower config.learning_rate or set "
          "config.grad_clip_norm.")
    return values

  def save(step: int) -> None:
    host = host_state(device_state, mode)
    metrics = None
    if config.model_selection == "validation":
      val = predict(steps, device_state, builder, config.dataset.split, fold.validation_subjects,
                    config, mode=mode, mesh=mesh)
      metrics = {"validation_uf1": evaluation.pooled_report(val)["overall"]["uf1"]}
      writer.write_scalars(global_offset + step, {f"{fold.name}/validation_uf1":
                                                  metrics["validation_uf1"]})
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host)),
                 metrics=metrics)

  for step in range(start_step + 1, num_steps + 1):
    batch = next(batches)
    step_rng = jax.random.fold_in(dropout_rng, step)
    device_state, metrics = steps.train(device_state, batch, step_rng, class_weights)
    if pending is not None:
      check(*pending)
    pending = (step, metrics)
    progress(step)
    if step % config.log_every_steps == 0 or step == num_steps:
      values = check(*pending)
      pending = None
      writer.write_scalars(global_offset + step,
                           {f"train/{k}": v for k, v in values.items()})
    if step % config.checkpoint_every_steps == 0 or step == num_steps:
      if pending is not None:
        check(*pending)
        pending = None
      save(step)
  manager.wait_until_finished()

  final_step = num_steps
  if config.model_selection == "validation":
    final_step = manager.best_step()
    logging.info("fold %s: testing the step-%d checkpoint chosen on validation subjects %s",
                 fold.name, final_step, fold.validation_subjects)
  if final_step != num_steps or start_step == num_steps:
    restored = manager.restore(final_step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(host_state(device_state, mode))))
    device_state = place_state(restored["state"], mode, mesh)
  manager.close()
  # Every process logs this; equal values across processes show lockstep training.
  logging.info("fold %s: process %d finished at step %d, parameter fingerprint %s", fold.name,
               jax.process_index(), num_steps, parameter_fingerprint(host_state(device_state,
                                                                                 mode).params))
  predictions = predict(steps, device_state, builder, config.dataset.split, [fold.test_subject],
                        config, mode=mode, mesh=mesh)
  for record in predictions:
    record["fold"] = fold.name
    record["selected_step"] = final_step
  return predictions


# --------------------------------------------------------------------------------------------
# The main job.
# --------------------------------------------------------------------------------------------

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs LOSO training and evaluation and writes the reports into `workdir`.

  Returns:
    The dict written to `workdir/results.json` (pooled scores, per class, per
    dataset, every prediction).
  """
  validate_config(config, workdir)
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_main:
    evaluation.atomic_write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(
        indent=2, sort_keys=True) + "\n")
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), (AXIS,))

  builder = input_pipeline.get_builder(config.dataset)
  if is_main:
    input_pipeline.prepare_builder(builder, config.dataset)
  if jax.process_count() > 1:
    # Other processes wait until process 0 has built the records.
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices("dataset_prepared")
    builder = input_pipeline.get_builder(config.dataset)
  index = input_pipeline.read_clip_index(builder, config.dataset.split)
  input_pipeline.check_sampling(index, config.input)
  folds = input_pipeline.loso_folds(index, folds=config.folds,
                                    num_validation_subjects=config.num_validation_subjects,
                                    seed=config.seed)
  logging.info("%d LOSO fold(s) over %d subjects, %d clips; %d device(s), step_mode=%s",
               len(folds), len(index.subjects), len(index), jax.device_count(), config.step_mode)

  steps = compile_steps(config.step_mode, mesh, label_smoothing=config.label_smoothing)
  start = time.time()
  predictions = []
  for fold_index, fold in enumerate(folds):
    done_file = os.path.join(workdir, "folds", fold.name, "predictions.json")
    if os.path.exists(done_file):
      with open(done_file) as f:
        predictions += json.load(f)
      logging.info("fold %s: already done, predictions read from %s", fold.name, done_file)
      continue
    fold_predictions = train_fold(config, fold, fold_index, builder, index, workdir, mesh,
                                  writer, steps)
    if is_main:
      evaluation.atomic_write_text(done_file, json.dumps(fold_predictions, indent=1) + "\n")
    predictions += fold_predictions
    fold_report = evaluation.pooled_report(fold_predictions)["overall"]
    logging.info("fold %s: test accuracy %.3f on %d clips", fold.name,
                 fold_report["accuracy"], fold_report["num_samples"])

  protocol = {
      "protocol": "leave-one-subject-out, predictions pooled over folds",
      "model_selection": ("fixed schedule (last step)" if config.model_selection == "last" else
                          f"best validation UF1 on {config.num_validation_subjects} subject(s) "
                          "carved from each fold's training subjects"),
      "num_folds": len(folds),
      "dataset": builder.info.full_name,
  }
  results = {}
  if is_main:
    results = evaluation.write_reports(workdir, predictions, extra=protocol)
    overall = results["overall"]
    logging.info("LOSO pooled: UF1 %.4f  UAR %.4f  accuracy %.4f  (%d clips, %d folds, %.0f s)",
                 overall["uf1"], overall["uar"], overall["accuracy"], overall["num_samples"],
                 len(folds), time.time() - start)
    writer.write_scalars(len(folds) * config.num_train_steps,
                         {"test/uf1": overall["uf1"], "test/uar": overall["uar"],
                          "test/accuracy": overall["accuracy"]})
    evaluation.atomic_write_text(os.path.join(workdir, "timing.json"), json.dumps(
        {"wall_seconds_this_run": time.time() - start}) + "\n")
  writer.flush()
  return results
