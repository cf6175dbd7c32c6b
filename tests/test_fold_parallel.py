"""Fold-parallel LOSO (mer_jax.fold_parallel): equivalence with serial folds, isolation, layout.

The folds here are small: a toy clip index of 4 subjects x 6 clips whose 28 x 28 flow maps carry a
class pattern plus noise, the tiny flow config (batch 8, 6 steps, checkpoints every 3 steps) and
8 simulated CPU devices.
"""

import jax
import numpy as np
import pytest

from configs import default as default_config
from mer_jax import fold_parallel
from mer_jax import input_pipeline
from mer_jax import metric_writers
from mer_jax import motion_input
from mer_jax import steps as steps_lib
from mer_jax import train
from mer_jax import workdir as workdir_lib

# One worker runs the whole module, so the (session-scoped) training runs are made once.
pytestmark = pytest.mark.xdist_group("fold_parallel")


def _toy(num_subjects=4, clips_per_subject=6, size=28, channels=3):
  rows = num_subjects * clips_per_subject
  subjects = np.repeat([f"s{i:02d}" for i in range(num_subjects)], clips_per_subject)
  label = np.arange(rows) % 3
  index = input_pipeline.ClipIndex(
      clip_id=np.array([f"c{i:02d}" for i in range(rows)]),
      subject_key=np.array([f"toy/{s}" for s in subjects]), dataset=np.array(["toy"] * rows),
      label=label, num_frames=np.full(rows, 10), onset=np.zeros(rows, int),
      apex=np.full(rows, 5), offset=np.full(rows, 9))
  rng = np.random.default_rng(0)
  maps = rng.normal(size=(rows, size, size, channels)).astype(np.float32)
  for c in range(3):  # A class-specific patch: learnable in a few steps.
    maps[label == c, 4 * c:4 * c + 6, 4:10, 0] += 3.0
  features = motion_input.FlowFeatures(features=maps, cache_path="toy", apex_sources={},
                                       computed=False)
  return index, features


def _config(model="flow_linear", **overrides):
  config = default_config.get_config(f"input=flow,model={model},tiny")
  for key, value in overrides.items():
    config[key] = value
  return config


def _serial(config, index, features, folds, tmp_path):
  """The serial trainer's predictions, fold by fold (train.train_fold on all 8 devices)."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()), (steps_lib.AXIS,))
  steps = steps_lib.compile_steps(config.step_mode, mesh, label_smoothing=config.label_smoothing)
  run_dir = workdir_lib.Workdir(str(tmp_path / "serial"))
  writer = metric_writers.create_writer(str(tmp_path / "serial"), just_logging=True)
  return [train.train_fold(config, fold, i, None, index, run_dir, mesh, writer, steps, features)
          for i, fold in enumerate(folds)]


def _parallel(config, index, features, folds, tmp_path, name="parallel"):
  (members,) = fold_parallel.plan_chunks(config, folds)
  return members, fold_parallel.train_chunk(config, members, index,
                                            fold_parallel.FlowInputs(features, index, config),
                                            str(tmp_path / name / "ckpt"))


def _probabilities(predictions):
  return np.array([[p for r in fold for p in r["probabilities"]] for fold in predictions])


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
  """Two folds of STSTNet (BatchNorm, dropout 0.3): serially, and as one chunk with 2 seeds.

  The chunk uses `fold_devices=1`, so each member's batch is split over the same 8-device data
  axis as the serial run's (the same BatchNorm shards and dropout keys per shard).
  """
  tmp = tmp_path_factory.mktemp("fold_parallel")
  index, features = _toy()
  folds = input_pipeline.loso_folds(index)[:2]
  serial = _serial(_config("ststnet"), index, features, folds, tmp)
  config = _config("ststnet", parallel_folds=2, num_seeds=2, fold_devices=1)
  members, parallel = _parallel(config, index, features, folds, tmp)
  alone = fold_parallel.train_chunk(config, members[:1], index,
                                    fold_parallel.FlowInputs(features, index, config),
                                    str(tmp / "alone"))
  return dict(index=index, features=features, folds=folds, serial=serial, members=members,
              parallel=parallel, config=config, alone=alone)


@pytest.mark.slow
def test_parallel_folds_equal_serial_folds(runs):
  members, parallel, serial = runs["members"], runs["parallel"], runs["serial"]
  assert [m.name for m in members] == ["toy__s00", "toy__s00.seed1", "toy__s01",
                                       "toy__s01.seed1"]
  first_seed = [p for m, p in zip(members, parallel) if m.is_first_seed]
  for s, p in zip(serial, first_seed):
    assert [r["clip_id"] for r in s] == [r["clip_id"] for r in p]
    assert [r["prediction"] for r in s] == [r["prediction"] for r in p]
  # A chunk of one member runs the serial computation bit for bit (same batches, keys and step).
  np.testing.assert_allclose(_probabilities(runs["alone"]), _probabilities(serial[:1]), rtol=0,
                             atol=1e-6)
  # Several members: vmap batches the convolutions (grouped over members), which round
  # differently (~1e-7); Adam divides each gradient by its running RMS, so a parameter whose
  # gradient is near zero gets a full-size update of either sign from that rounding. A few
  # steps turn it into differences of ~1e-3 in the probabilities; the predictions agree.
  np.testing.assert_allclose(_probabilities(first_seed), _probabilities(serial), rtol=0,
                             atol=5e-3)
  # The model learned something (not a comparison of two untrained states).
  assert not np.allclose(_probabilities(serial), 1 / 3, atol=0.05)


@pytest.mark.slow
def test_seeds_are_a_second_member_axis(runs):
  """Seed config.seed + 1 trains apart: other predictions, named apart, summarised."""
  members, parallel = runs["members"], runs["parallel"]
  assert not np.allclose(_probabilities([parallel[1]]), _probabilities([parallel[0]]), atol=1e-4)
  assert all(r["seed"] == 1 for r in parallel[1]) and "seed" not in parallel[0][0]
  by_seed = {0: parallel[0] + parallel[2], 1: parallel[1] + parallel[3]}
  summary = fold_parallel.seed_summary(by_seed)
  assert [s["seed"] for s in summary["per_seed"]] == [0, 1]
  uf1 = [s["uf1"] for s in summary["per_seed"]]
  assert summary["mean_std"]["uf1"]["mean"] == pytest.approx(np.mean(uf1))
  assert summary["mean_std"]["uf1"]["std"] == pytest.approx(np.std(uf1, ddof=1))


@pytest.mark.slow
def test_a_resumed_chunk_ends_where_an_uninterrupted_one_ends(runs, tmp_path):
  """Stop after the first checkpoint (step 3 of 6), rerun: the uninterrupted run's predictions."""
  index, features, folds, config = runs["index"], runs["features"], runs["folds"], runs["config"]
  stopped = _config("ststnet", parallel_folds=2, num_seeds=2, fold_devices=1, num_train_steps=3)
  _parallel(stopped, index, features, folds, tmp_path)  # Its last checkpoint: step 3.
  _, resumed = _parallel(config, index, features, folds, tmp_path)
  np.testing.assert_array_equal(_probabilities(resumed), _probabilities(runs["parallel"]))


@pytest.mark.slow
def test_scanned_steps_equal_dispatched_steps(runs, tmp_path):
  """scan_steps="scan" (the GPU/TPU default: the steps between checkpoints as one lax.scan)
  trains the chunk that "dispatch" (the CPU default) trains."""
  config = _config("ststnet", parallel_folds=2, num_seeds=2, fold_devices=1, scan_steps="scan")
  _, scanned = _parallel(config, runs["index"], runs["features"], runs["folds"], tmp_path)
  np.testing.assert_allclose(_probabilities(scanned), _probabilities(runs["parallel"]), rtol=0,
                             atol=1e-5)


@pytest.mark.slow
def test_without_dropout_and_batchnorm_the_layout_does_not_matter(tmp_path):
  """flow_linear without dropout: 1 or 4 devices on the fold axis give the same model.

  (With dropout, each data shard draws its own mask; with BatchNorm, each shard normalises by
  its own statistics; then only the same data-axis size reproduces the serial run exactly.)
  """
  index, features = _toy()
  folds = input_pipeline.loso_folds(index)
  results = []
  for fold_devices in (1, 4):
    config = _config("flow_linear", parallel_folds=-1, fold_devices=fold_devices)
    config.model.dropout_rate = 0.0
    results.append(_parallel(config, index, features, folds, tmp_path, f"d{fold_devices}")[1])
  np.testing.assert_allclose(_probabilities(results[1]), _probabilities(results[0]), atol=1e-5)


def test_no_member_ever_trains_on_its_held_out_or_validation_subjects():
  index, features = _toy()
  config = _config("flow_linear", parallel_folds=-1, num_validation_subjects=1)
  folds = input_pipeline.loso_folds(index, num_validation_subjects=1)
  (members,) = fold_parallel.plan_chunks(config, folds)
  trainer = fold_parallel.ChunkTrainer(config, members, index,
                                       fold_parallel.FlowInputs(features, index, config),
                                       jax.devices())
  for member, schedule in zip(trainer.padded, trainer.schedules):
    rows = schedule.steps(0, 50)["rows"]  # 50 steps x 8 = 400 draws from 12 training clips.
    drawn = set(index.subject_key[rows.ravel()].tolist())
    assert drawn == set(member.fold.train_subjects)
    assert member.fold.test_subject not in drawn
    assert not drawn & set(member.fold.validation_subjects)


@pytest.mark.parametrize("overrides,members,message", [
    ({"fold_devices": 3}, 4, r"config.fold_devices=3 does not divide the 8 device"),
    ({"fold_devices": 2, "batch_size": 6}, 4,
     r"config.batch_size=6 does not divide over the data axis of 4 device"),
])
def test_layouts_that_do_not_divide_fail_before_compute(overrides, members, message):
  config = _config("flow_linear", **overrides)
  with pytest.raises(ValueError, match=message):
    fold_parallel.layout(members, 8, batch_size=config.batch_size,
                         eval_batch_size=config.eval_batch_size,
                         fold_devices=config.fold_devices)


def test_layout_rule():
  # 16 members on 8 devices: 8 on the fold axis, no data split, no padding.
  assert fold_parallel.layout(16, 8, batch_size=8, eval_batch_size=8) == fold_parallel.Layout(
      fold_devices=8, data_devices=1, num_members=16, padded_members=16)
  # 3 members: 2 fold devices (largest divisor of 8 not above 3), batches split 4 ways, 1 pad.
  assert fold_parallel.layout(3, 8, batch_size=8, eval_batch_size=8) == fold_parallel.Layout(
      fold_devices=2, data_devices=4, num_members=3, padded_members=4)


def test_plan_errors_name_the_field():
  index, _ = _toy()
  folds = input_pipeline.loso_folds(index)
  with pytest.raises(ValueError, match=r"config.parallel_folds=5 is larger than the run's 4"):
    fold_parallel.plan_chunks(_config("flow_linear", parallel_folds=5), folds)
  per_fold_layer = default_config.get_config("tiny")
  per_fold_layer.parallel_folds = 2
  per_fold_layer.transfer.policy = "II"
  per_fold_layer.transfer.specific_layer = "auto"
  with pytest.raises(ValueError, match=r"specific_layer='auto' chooses a layer per fold"):
    fold_parallel.check_plan(per_fold_layer, folds, 8)


@pytest.mark.slow
def test_trainer_runs_folds_and_seeds_in_parallel_and_resumes(data_dir, tmp_path):
  """train_and_evaluate with parallel_folds=-1, num_seeds=2 on the tiny records; then the state a
  kill between the two checkpoints leaves (step-3 checkpoint, no predictions) resumes to the same
  results.json."""
  import json  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  config = default_config.get_config("input=flow,tiny")
  config.dataset.data_dir = data_dir
  config.dataset.build_if_missing = False
  config.flow.cache_dir = str(tmp_path / "flow")
  config.flow.size = 48
  config.folds = ("s00", "s01")
  config.parallel_folds = -1
  config.num_seeds = 2
  work = tmp_path / "work"
  results = train.train_and_evaluate(config, str(work))
  assert results["overall"]["num_samples"] == 6  # The first seed: two subjects x 3 clips.
  seeds = results["seeds"]
  assert [s["seed"] for s in seeds["per_seed"]] == [0, 1] and seeds["num_seeds"] == 2
  assert seeds["per_seed"][0]["uf1"] == pytest.approx(results["overall"]["uf1"])
  names = sorted(os.listdir(work / "folds"))
  assert names == ["chunk000", "synthetic_me__s00", "synthetic_me__s00.seed1",
                   "synthetic_me__s01", "synthetic_me__s01.seed1"]
  before = (work / "results.json").read_text()

  # What a kill after the step-3 checkpoint leaves: no step 6, no predictions, no report.
  checkpoint_dir = work / "folds" / "chunk000" / "checkpoints"
  assert sorted(os.listdir(checkpoint_dir)) == ["3", "6"]
  shutil.rmtree(checkpoint_dir / "6")
  for name in names[1:]:
    os.remove(work / "folds" / name / "predictions.json")
  os.remove(work / "results.json")
  train.train_and_evaluate(config, str(work))
  assert json.loads((work / "results.json").read_text()) == json.loads(before)


@pytest.mark.slow
def test_validation_selection_picks_each_members_best_checkpoint(tmp_path):
  """model_selection="validation": each member scored on its own validation subject at every
  checkpoint (steps 3 and 6); the state tested is the best one, its step recorded."""
  index, features = _toy()
  config = _config("flow_linear", parallel_folds=-1, model_selection="validation",
                   num_validation_subjects=1)
  folds = input_pipeline.loso_folds(index, num_validation_subjects=1)
  members, predictions = _parallel(config, index, features, folds, tmp_path)
  for member, records in zip(members, predictions):
    assert {r["selected_step"] for r in records} <= {3, 6}
    assert {r["subject"] for r in records} == {member.fold.test_subject.split("/")[1]}
  # The chunk checkpoint keeps each member's best validation UF1 beside the running state.
  from mer_jax import checkpoints  # pylint: disable=import-outside-toplevel
  trainer = fold_parallel.ChunkTrainer(config, members, index,
                                       fold_parallel.FlowInputs(features, index, config),
                                       jax.devices())
  manager = checkpoints.create_manager(str(tmp_path / "parallel" / "ckpt"),
                                       validation_selection=False)
  saved, step = checkpoints.restore_latest(manager, trainer.checkpoint_target())
  manager.close()
  assert step == 6
  chosen = [r[0]["selected_step"] for r in predictions]
  np.testing.assert_array_equal(saved["best_step"][:len(members)], chosen)
  assert (saved["best_uf1"][:len(members)] >= 0).all()
