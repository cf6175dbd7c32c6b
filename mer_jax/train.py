"""Leave-one-subject-out training and evaluation: `train_and_evaluate(config, workdir)`.

For each LOSO fold (held-out subject), a fresh model trains on the other
subjects for a fixed number of steps, data-parallel over every device, then
predicts the held-out subject's clips. Predictions of all folds are pooled and
scored once (UF1, UAR, accuracy; `mer_jax.evaluation`). Nothing is ever
selected on the test subject: the schedule is fixed, or (model_selection =
"validation") the checkpoint is chosen on validation subjects carved from the
fold's training subjects.

This module only orchestrates. What it calls, one concern each:
  config_checks   every config value, before any data is touched
  workdir         the run directory's paths, atomic writes, the run identity
  input_pipeline  records -> clip index -> LOSO folds -> device batches
  train_state     fold seeds, resolved model config, optimiser, initial state
  steps           the per-device train/eval steps under pmap or shard_map
  checkpoints     Orbax save (failing fast) and restore (falling back)
  predict         a fold's test predictions
  evaluation      pooled UF1/UAR and the reports

Killing the process at any moment and rerunning the same command resumes:
finished folds are read back (after checking they belong to this run), the
running fold restarts from its latest checkpoint, and the input stream is a
pure function of (seed, fold, step), so the results equal an uninterrupted
run's. A rerun with another config or dataset refuses (`workdir.Workdir.claim`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Optional

from absl import logging
from clu import parameter_overview
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mer_jax import checkpoints
from mer_jax import config_checks
from mer_jax import evaluation
from mer_jax import fold_parallel
from mer_jax import input_pipeline
from mer_jax import layer_selection
from mer_jax import metric_writers
from mer_jax import motion_input
from mer_jax import predict as predict_lib
from mer_jax import resident_frames
from mer_jax import schema
from mer_jax import steps as steps_lib
from mer_jax import train_state
from mer_jax import workdir as workdir_lib
from mer_jax.models import create_model


# One error for a diverged fold, whichever loop trains it (main reports it without a traceback).
NonFiniteLossError = steps_lib.NonFiniteLossError


def train_fold(config: ml_collections.ConfigDict, fold: input_pipeline.Fold, fold_index: int,
               builder, index: input_pipeline.ClipIndex, workdir: workdir_lib.Workdir, mesh,
               writer, steps: steps_lib.Steps,
               flow_features: Optional[motion_input.FlowFeatures] = None,
               run_progress: Optional[metric_writers.LosoProgress] = None) -> list[dict]:
  """Trains one fold (resuming from its latest good checkpoint); returns its test predictions."""
  # --- Set-up: the fold's config (l_s chosen on its training subjects if "auto"), model, state.
  config = layer_selection.config_for_fold(config, builder, fold, fold_index, workdir)
  mode = config.step_mode
  model = create_model(train_state.model_config(config), num_classes=schema.NUM_CLASSES,
                       dtype=jnp.bfloat16 if config.half_precision else jnp.float32)
  init_rng, dropout_rng = train_state.fold_rngs(config, fold_index)
  state = train_state.initial_state(config, model, init_rng)
  if fold_index == 0 and jax.process_index() == 0:
    parameter_overview.log_parameter_overview(state.params)

  # --- Restore: the newest readable checkpoint, if any.
  manager = checkpoints.create_manager(workdir.checkpoints_dir(fold.name),
                                       validation_selection=config.model_selection == "validation")
  restored, start_step = checkpoints.restore_latest(manager, jax.tree.map(np.asarray, state))
  data_state = None  # The data iterator's position saved with the state (frames input).
  if restored is not None:
    state = restored
    data_state = checkpoints.restore_data_state(manager, start_step)
    logging.info("fold %s: resumed from step %d", fold.name, start_step)

  # --- Loop: the fold's training stream, from `start_step`, one device step at a time.
  class_weights = jnp.asarray(
      input_pipeline.loss_class_weights(config, index, fold.train_subjects))
  local_batch = config.batch_size // jax.process_count()
  if flow_features is not None:
    # Each process draws its own share: the stream is seeded by the process index too.
    host_batches = motion_input.train_batches(
        flow_features, index, fold.train_subjects, batch_size=local_batch,
        seed=train_state.fold_seed(config, fold_index) * 1009 + jax.process_index(),
        start_step=start_step, flip=config.input.flip, normalization=config.flow.normalize)
  else:
    host_batches = input_pipeline.create_train_dataset(
        builder, config.dataset.split, fold.train_subjects, config.input, batch_size=local_batch,
        seed=train_state.fold_seed(config, fold_index), start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count(), index=index,
        data_state=data_state)
  batches = input_pipeline.prefetch_to_devices(host_batches, mode=mode, mesh=mesh)
  device_state = steps_lib.place_state(state, mode, mesh)

  num_steps = config.num_train_steps
  global_offset = fold_index * num_steps
  progress = metric_writers.FoldProgress(
      num_train_steps=num_steps, every_steps=config.log_every_steps, fold=fold.name,
      fold_index=fold_index, run=run_progress, writer=writer, global_offset=global_offset)
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
          f"{workdir.checkpoints_dir(fold.name)}. Lower config.learning_rate or set "
          "config.grad_clip_norm.")
    return values

  def save(step: int) -> None:
    host = steps_lib.host_state(device_state, mode)
    metrics = None
    if config.model_selection == "validation":
      val = predict_lib.predict(steps, device_state, builder, config.dataset.split,
                                fold.validation_subjects, config, mode=mode, mesh=mesh,
                                flow_features=flow_features, index=index)
      metrics = {"validation_uf1": evaluation.pooled_report(val)["overall"]["uf1"]}
      writer.write_scalars(global_offset + step, {f"{fold.name}/validation_uf1":
                                                  metrics["validation_uf1"]})
    checkpoints.save(manager, step, host, metrics, data_state=batches.data_state)

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
  checkpoints.wait(manager)

  # --- Select: the last step, or the step chosen on the validation subjects.
  final_step = num_steps
  if config.model_selection == "validation":
    final_step = manager.best_step()
    logging.info("fold %s: testing the step-%d checkpoint chosen on validation subjects %s",
                 fold.name, final_step, fold.validation_subjects)
  if final_step != num_steps or start_step == num_steps:
    device_state = steps_lib.place_state(
        checkpoints.restore(manager, final_step, steps_lib.host_state(device_state, mode)),
        mode, mesh)
  manager.close()
  # Every process logs this; equal values across processes show lockstep training.
  logging.info("fold %s: process %d finished at step %d, parameter fingerprint %s", fold.name,
               jax.process_index(), num_steps, steps_lib.parameter_fingerprint(
                   steps_lib.host_state(device_state, mode).params))

  # --- Predict: the held-out subject's clips.
  predictions = predict_lib.predict(steps, device_state, builder, config.dataset.split,
                                    [fold.test_subject], config, mode=mode, mesh=mesh,
                                    flow_features=flow_features, index=index)
  for record in predictions:
    record["fold"] = fold.name
    record["selected_step"] = final_step
  return predictions


def _train_folds_serially(config, folds, builder, index, flow_features, run_dir, identity,
                          writer, mesh, steps) -> list[dict]:
  """Every fold one after another (finished ones read back); their test predictions."""
  predictions = []
  run_progress = metric_writers.LosoProgress(num_folds=len(folds),
                                             num_train_steps=config.num_train_steps)
  for fold_index, fold in enumerate(folds):  # Finished earlier: not counted in the run ETA.
    if os.path.exists(run_dir.predictions_json(fold.name)):
      run_progress.mark_done(fold_index)
  for fold_index, fold in enumerate(folds):
    test_clips = index.clip_id[index.subject_key == fold.test_subject].tolist()
    done = run_dir.read_fold_predictions(fold.name, identity.digest, test_clips)
    if done is not None:
      predictions += done
      logging.info("fold %s (%d of %d): already done, predictions read from %s", fold.name,
                   fold_index + 1, len(folds), run_dir.predictions_json(fold.name))
      continue
    fold_start = time.time()
    fold_predictions = train_fold(config, fold, fold_index, builder, index, run_dir, mesh,
                                  writer, steps, flow_features, run_progress=run_progress)
    if jax.process_index() == 0:
      run_dir.write_fold_predictions(fold.name, identity.digest, fold_predictions)
    predictions += fold_predictions
    seconds = time.time() - fold_start
    run_progress.mark_done(fold_index, seconds)
    fold_report = evaluation.pooled_report(fold_predictions)["overall"]
    logging.info("fold %s (%d of %d): test accuracy %.3f on %d clips; %.0f s; run ETA %s",
                 fold.name, fold_index + 1, len(folds), fold_report["accuracy"],
                 fold_report["num_samples"], seconds, metric_writers.format_seconds(
                     run_progress.run_eta(fold_index, 0.0, steps_per_sec=1.0)))
  return predictions


def _train_folds_in_parallel(config, folds, index, inputs, run_dir, identity,
                             writer) -> tuple[list[dict], dict]:
  """Chunks of folds x seeds trained as one program each (`mer_jax.fold_parallel`).

  Returns the first seed's predictions (pooled as a serial run's) and the
  per-seed summary (`fold_parallel.seed_summary`).
  """
  chunks = fold_parallel.plan_chunks(config, folds)
  by_seed: dict[int, list[dict]] = {s: [] for s in fold_parallel.run_seeds(config)}
  # The run's progress counts chunks as LosoProgress counts folds.
  run_progress = metric_writers.LosoProgress(num_folds=len(chunks),
                                             num_train_steps=config.num_train_steps)
  for c, members in enumerate(chunks):
    done = [run_dir.read_fold_predictions(
        m.name, identity.digest, index.clip_id[index.subject_key == m.fold.test_subject].tolist())
            for m in members]
    if all(d is not None for d in done):
      run_progress.mark_done(c)
      logging.info("chunk %d of %d: already done (%d member(s))", c + 1, len(chunks),
                   len(members))
    else:
      began = time.time()

      def progress(step, num_steps, rate, c=c, began=began, members=members):
        elapsed = time.time() - began
        chunk_eta = elapsed / step * (num_steps - step)
        logging.info("chunk %d of %d (%d member(s)): step %d of %d, %.1f member-steps/s; "
                     "chunk ETA %s, run ETA %s", c + 1, len(chunks), len(members), step,
                     num_steps, rate, metric_writers.format_seconds(chunk_eta),
                     metric_writers.format_seconds(run_progress.run_eta(
                         c, chunk_eta, steps_per_sec=step / max(elapsed, 1e-9))))

      done = fold_parallel.train_chunk(config, members, index, inputs,
                                       run_dir.checkpoints_dir(f"chunk{c:03d}"), writer=writer,
                                       progress=progress)
      for m, member_predictions in zip(members, done):
        run_dir.write_fold_predictions(m.name, identity.digest, member_predictions)
      run_progress.mark_done(c, time.time() - began)
    for m, member_predictions in zip(members, done):
      by_seed[m.seed] += member_predictions
  first = fold_parallel.run_seeds(config)[0]
  return by_seed[first], fold_parallel.seed_summary(by_seed)


def _resident_inputs(config, builder, index, flow_features):
  """The device-resident inputs of a device-loop run: flow features or low-resolution clips."""
  if flow_features is not None:
    return fold_parallel.FlowInputs(flow_features, index, config)
  began = time.time()
  store = resident_frames.build_store(builder, config.dataset.split, index, config.input)
  logging.info("device-resident frames: %d frames of %d clips, %s pixels, %.1f MiB, built in "
               "%.1f s", len(store.frames), len(index), "x".join(map(str, store.frames.shape[1:3])),
               store.nbytes / resident_frames.MIB, time.time() - began)
  return resident_frames.FrameInputs(store, index, config)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs LOSO training and evaluation and writes the reports into `workdir`.

  Returns:
    The dict written to `workdir/results.json` (pooled scores, per class, per
    dataset, every prediction); {} on processes other than 0.
  """
  config_checks.validate_config(config, workdir)
  run_dir = workdir_lib.Workdir(workdir)
  is_main = jax.process_index() == 0
  on_mismatch = config.get("resume_mismatch", "refuse")
  if is_main:
    run_dir.claim(workdir_lib.config_identity(config), on_mismatch=on_mismatch)

  # Data: build the records if needed, read the clip index, make the folds.
  builder = input_pipeline.get_builder(config.dataset)
  if is_main:
    builder = input_pipeline.prepare_builder(builder, config.dataset)
  if jax.process_count() > 1:
    # Other processes wait until process 0 has built the records.
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices("dataset_prepared")
    builder = input_pipeline.get_builder(config.dataset)
  identity = dataclasses.replace(
      workdir_lib.config_identity(config),
      dataset=input_pipeline.dataset_identity(builder, config.dataset.split))
  if is_main:
    run_dir.claim(identity, on_mismatch=on_mismatch)
    run_dir.write_config(config)
  index = input_pipeline.read_clip_index(builder, config.dataset.split)
  config_checks.validate_against_data(config, index)
  folds = input_pipeline.loso_folds(index, folds=config.folds,
                                    num_validation_subjects=config.num_validation_subjects,
                                    seed=config.seed)
  if fold_parallel.uses_device_loop(config):
    fold_parallel.check_plan(config, folds, jax.device_count())
  logging.info("%d LOSO fold(s) over %d subjects, %d clips; %d device(s), step_mode=%s",
               len(folds), len(index.subjects), len(index), jax.device_count(), config.step_mode)
  flow_features = None
  if config.input.get("representation", "frames") == "flow":
    flow_features = motion_input.load_flow_features(config, index)
    logging.info("flow features %s from %s (%s); apex sources %s",
                 flow_features.features.shape, flow_features.cache_path,
                 "computed" if flow_features.computed else "reused", flow_features.apex_sources)

  writer = metric_writers.create_writer(workdir, just_logging=not is_main)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), (steps_lib.AXIS,))
  steps = steps_lib.compile_steps(config.step_mode, mesh, label_smoothing=config.label_smoothing)

  # Folds: finished ones are read back (verified), the others trained (one by one, or
  # several folds and seeds at once as one program: mer_jax.fold_parallel).
  start = time.time()
  if fold_parallel.uses_device_loop(config):
    predictions, per_seed = _train_folds_in_parallel(
        config, folds, index, _resident_inputs(config, builder, index, flow_features), run_dir,
        identity, writer)
  else:
    predictions, per_seed = _train_folds_serially(config, folds, builder, index, flow_features,
                                                  run_dir, identity, writer, mesh, steps), None

  # Report: pooled over every fold, written once.
  protocol = {
      "protocol": "leave-one-subject-out, predictions pooled over folds",
      "model_selection": ("fixed schedule (last step)" if config.model_selection == "last" else
                          f"best validation UF1 on {config.num_validation_subjects} subject(s) "
                          "carved from each fold's training subjects"),
      "num_folds": len(folds),
      "dataset": builder.info.full_name,
  }
  if flow_features is not None:
    protocol["input"] = {
        "representation": "flow",
        "pairs": "onset->apex" + (" and apex->offset" if config.flow.apex_offset else ""),
        "apex_rule": "the record's apex field; clips without an annotated apex use their "
                     "builder's stated rule, counted here by apex_source",
        "apex_sources": flow_features.apex_sources}
  if per_seed is not None:
    protocol["seeds"] = per_seed
  results = {}
  if is_main:
    results = evaluation.write_reports(run_dir, predictions, extra=protocol)
    overall = results["overall"]
    logging.info("LOSO pooled: UF1 %.4f  UAR %.4f  accuracy %.4f  (%d clips, %d folds, %.0f s)",
                 overall["uf1"], overall["uar"], overall["accuracy"], overall["num_samples"],
                 len(folds), time.time() - start)
    writer.write_scalars(len(folds) * config.num_train_steps,
                         {"test/uf1": overall["uf1"], "test/uar": overall["uar"],
                          "test/accuracy": overall["accuracy"]})
    run_dir.write_json(run_dir.timing_json, {"wall_seconds_this_run": time.time() - start},
                       indent=None)
  writer.flush()
  return results
