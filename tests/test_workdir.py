"""The run directory: identity refusals, moving aside, verified fold predictions, storage faults."""

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from conftest import tiny_config
from mer_jax import checkpoints
from mer_jax import config_checks
from mer_jax import train
from mer_jax import workdir as workdir_lib

FOLD = "synthetic_me__s00"


def _config(data_dir, **overrides):
  """The tiny config on one fold (s00)."""
  return tiny_config(data_dir, **{"folds": ("s00",), **overrides})


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
  """A finished one-fold tiny run: (config, workdir path, results)."""
  config = _config(data_dir)
  path = str(tmp_path_factory.mktemp("finished"))
  return config, path, train.train_and_evaluate(config, path)


def _copy(src, tmp_path):
  dst = str(tmp_path / "run")
  shutil.copytree(src, dst)
  return dst


# --------------------------------------------------------------------------------------------
# Identity.
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, field", [
    ({"learning_rate": 0.01}, "config.learning_rate: 0.005 -> 0.01"),
    ({"num_train_steps": 7}, "config.num_train_steps: 6 -> 7"),
    ({"model.temporal_head": "frames"}, "config.model.temporal_head: 'mean' -> 'frames'"),
    ({"dataset.builder_config": "default"}, "config.dataset.builder_config: 'tiny' -> 'default'"),
])
@pytest.mark.slow
def test_rerun_with_another_config_refuses_naming_the_field(finished, tmp_path, overrides, field):
  config, path, _ = finished
  run = _copy(path, tmp_path)
  changed = _config(config.dataset.data_dir, **overrides)
  with pytest.raises(workdir_lib.WorkdirMismatchError) as err:
    train.train_and_evaluate(changed, run)
  assert field in str(err.value) and "resume_mismatch=move_aside" in str(err.value)
  with open(os.path.join(path, "results.json")) as f, \
       open(os.path.join(run, "results.json")) as g:
    assert json.load(f) == json.load(g)  # Nothing was overwritten.


@pytest.mark.slow
def test_changed_dataset_records_refuse(finished, tmp_path):
  config, path, _ = finished
  run = _copy(path, tmp_path)
  recorded = workdir_lib.read_json(os.path.join(run, "run_identity.json"))
  recorded["dataset"]["version"] = "0.9.0"  # As if built by another builder version.
  workdir_lib.atomic_write_text(os.path.join(run, "run_identity.json"), json.dumps(recorded))
  with pytest.raises(workdir_lib.WorkdirMismatchError, match=r"dataset version: '0.9.0' ->"):
    train.train_and_evaluate(config, run)


@pytest.mark.slow
def test_unchanged_rerun_reads_the_finished_fold(finished, tmp_path):
  config, path, results = finished
  run = _copy(path, tmp_path)
  again = train.train_and_evaluate(config, run)
  assert again["predictions"] == results["predictions"]


@pytest.mark.slow
def test_partial_run_with_another_config_refuses_and_move_aside_keeps_it(finished, tmp_path):
  config, path, results = finished
  run = _copy(path, tmp_path)
  os.remove(os.path.join(run, "results.json"))  # A run killed before its report.
  changed = _config(config.dataset.data_dir, learning_rate=0.01)
  with pytest.raises(workdir_lib.WorkdirMismatchError, match="config.learning_rate"):
    train.train_and_evaluate(changed, run)
  changed.resume_mismatch = "move_aside"
  fresh = train.train_and_evaluate(changed, run)
  assert fresh["overall"]["num_samples"] == results["overall"]["num_samples"]
  superseded = os.listdir(os.path.join(run, "superseded"))
  assert len(superseded) == 1
  old = os.path.join(run, "superseded", superseded[0])
  assert os.path.exists(os.path.join(old, "folds", FOLD, "predictions.json"))
  assert workdir_lib.read_json(os.path.join(old, "run_identity.json"))["config"][
      "learning_rate"] == 0.005
  assert workdir_lib.read_json(os.path.join(run, "run_identity.json"))["config"][
      "learning_rate"] == 0.01


def _identity(lr=0.005, version="1.0.0"):
  return workdir_lib.RunIdentity(config={"learning_rate": lr, "model.temporal_head": "mean"},
                                 dataset={"name": "synthetic_me", "version": version},
                                 package_version="0.1.0")


def test_claim_refuses_another_identity_and_move_aside_keeps_the_old_run(tmp_path):
  run = workdir_lib.Workdir(str(tmp_path / "run"))
  run.claim(_identity())
  run.write_fold_predictions(FOLD, _identity().digest, [{"clip_id": "a", "label": 0,
                                                         "prediction": 0, "dataset": "d",
                                                         "subject": "s00",
                                                         "probabilities": [1, 0, 0]}])
  run.claim(_identity())  # The same identity resumes.
  with pytest.raises(workdir_lib.WorkdirMismatchError) as err:
    run.claim(_identity(lr=0.01, version="1.1.0"))
  assert "config.learning_rate: 0.005 -> 0.01" in str(err.value)
  assert "dataset version: '1.0.0' -> '1.1.0'" in str(err.value)
  run.claim(_identity(lr=0.01), on_mismatch="move_aside")
  (moved,) = os.listdir(tmp_path / "run" / "superseded")
  old = tmp_path / "run" / "superseded" / moved
  assert (old / "folds" / FOLD / "predictions.json").exists()
  assert workdir_lib.read_json(str(old / "run_identity.json"))["config"]["learning_rate"] == 0.005
  assert not (tmp_path / "run" / "folds").exists()


def test_fold_predictions_are_verified_before_pooling(tmp_path):
  run = workdir_lib.Workdir(str(tmp_path))
  record = lambda c: {"clip_id": c, "label": 0, "prediction": 1, "dataset": "d", "subject": "s",
                      "probabilities": [0.2, 0.8, 0.0]}
  run.write_fold_predictions(FOLD, "id1", [record("a"), record("b")])
  assert [p["clip_id"] for p in run.read_fold_predictions(FOLD, "id1", ["b", "a"])] == ["a", "b"]
  assert run.read_fold_predictions("synthetic_me__s01", "id1", ["a"]) is None  # Not finished.
  with pytest.raises(workdir_lib.WorkdirMismatchError, match="made under run identity 'id1'"):
    run.read_fold_predictions(FOLD, "id2", ["a", "b"])
  with pytest.raises(workdir_lib.WorkdirMismatchError, match=r"missing \['c'\]"):
    run.read_fold_predictions(FOLD, "id1", ["a", "b", "c"])
  path = run.predictions_json(FOLD)
  with open(path, "w") as f:
    f.write('{"format": "mer_jax.fold_pred')
  with pytest.raises(workdir_lib.WorkdirMismatchError, match="not valid JSON"):
    run.read_fold_predictions(FOLD, "id1", ["a", "b"])


def test_identity_ignores_paths_and_logging_cadence(data_dir):
  a = workdir_lib.config_identity(_config(data_dir))
  b = workdir_lib.config_identity(_config("/elsewhere", log_every_steps=1))
  assert a.differences(b) == [] and a.digest == b.digest
  c = workdir_lib.config_identity(_config(data_dir, seed=1))
  assert a.differences(c) == ["config.seed: 1 -> 0"]


# --------------------------------------------------------------------------------------------
# Fold predictions files.
# --------------------------------------------------------------------------------------------

def _damage(run, how):
  path = os.path.join(run, "folds", FOLD, "predictions.json")
  data = workdir_lib.read_json(path)
  if how == "empty_list":
    text = "[]"
  elif how == "truncated":
    text = open(path).read()[:40]
  elif how == "other_fold":
    data["fold"] = "synthetic_me__s01"
    text = json.dumps(data)
  elif how == "missing_clip":
    data["predictions"] = data["predictions"][1:]
    text = json.dumps(data)
  elif how == "duplicated_clip":
    data["predictions"] = data["predictions"] + data["predictions"][:1]
    text = json.dumps(data)
  elif how == "other_identity":
    data["run_identity"] = "0123456789abcdef"
    text = json.dumps(data)
  with open(path, "w") as f:
    f.write(text)
  return path


@pytest.mark.parametrize("how, message", [
    ("empty_list", "not a mer_jax fold predictions file"),
    ("truncated", "not valid JSON"),
    ("other_fold", "holds the predictions of fold 'synthetic_me__s01'"),
    ("missing_clip", "do not cover the held-out clips"),
    ("duplicated_clip", "do not cover the held-out clips"),
    ("other_identity", "made under run identity '0123456789abcdef'"),
])
@pytest.mark.slow
def test_a_bad_predictions_file_is_refused_by_name(finished, tmp_path, how, message):
  config, path, _ = finished
  run = _copy(path, tmp_path)
  bad = _damage(run, how)
  with pytest.raises(workdir_lib.WorkdirMismatchError) as err:
    train.train_and_evaluate(config, run)
  assert message in str(err.value) and bad in str(err.value)
  assert "to train fold synthetic_me__s00 again" in str(err.value)


# --------------------------------------------------------------------------------------------
# Storage faults.
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_unreadable_latest_checkpoint_falls_back_to_the_previous_step(finished, tmp_path):
  config, path, results = finished
  run = _copy(path, tmp_path)
  fold = os.path.join(run, "folds", FOLD)
  os.remove(os.path.join(fold, "predictions.json"))
  os.remove(os.path.join(run, "results.json"))
  steps = sorted(int(s) for s in os.listdir(os.path.join(fold, "checkpoints")) if s.isdigit())
  assert steps == [3, 6]
  # Empty every file of the latest checkpoint (a crash mid-write on a careless filesystem).
  for root, _, files in os.walk(os.path.join(fold, "checkpoints", "6")):
    for name in files:
      open(os.path.join(root, name), "w").close()
  again = train.train_and_evaluate(config, run)
  # Resumed from step 3 and retrained steps 4..6 deterministically: the same predictions.
  assert again["predictions"] == results["predictions"]


@pytest.mark.slow
def test_restore_latest_raises_naming_the_steps_when_none_restores(finished, tmp_path):
  config, path, _ = finished
  run = _copy(path, tmp_path)
  ckpt = os.path.join(run, "folds", FOLD, "checkpoints")
  for root, _, files in os.walk(ckpt):
    for name in files:
      open(os.path.join(root, name), "w").close()
  from mer_jax import train_state  # pylint: disable=import-outside-toplevel
  from mer_jax.models import create_model  # pylint: disable=import-outside-toplevel
  model = create_model(train_state.model_config(config))
  target = train_state.initial_state(config, model, jax.random.key(0))
  manager = checkpoints.create_manager(ckpt, validation_selection=False)
  with pytest.raises(checkpoints.CheckpointError, match=r"steps \[6, 3\]"):
    checkpoints.restore_latest(manager, jax.tree.map(np.asarray, target))
  manager.close()


def test_checkpoint_directory_that_cannot_be_written_stops_at_once(data_dir, tmp_path):
  # A file where the checkpoints folder should be: no permission trick needed (root ignores
  # permission bits), and creating the directory fails.
  run = tmp_path / "run"
  config = _config(data_dir)
  workdir_lib.Workdir(str(run)).claim(workdir_lib.config_identity(config))
  (run / "folds" / FOLD).mkdir(parents=True)
  (run / "folds" / FOLD / "checkpoints").write_text("not a directory")
  with pytest.raises(checkpoints.CheckpointError, match=r"cannot write checkpoints to .*"
                     r"synthetic_me__s00/checkpoints"):
    train.train_and_evaluate(config, str(run))


# --------------------------------------------------------------------------------------------
# Config values: every bad value fails by name before compute.
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"learning_rate": -1.0}, "config.learning_rate must be in (0, inf], got -1.0"),
    ({"learning_rate": float("nan")}, "config.learning_rate must be finite"),
    ({"learning_rate": float("inf")}, "config.learning_rate must be finite"),
    ({"weight_decay": float("nan")}, "config.weight_decay must be finite"),
    ({"warmup_steps": -5}, "config.warmup_steps must be in [0, inf], got -5"),
    ({"label_smoothing": 2.0}, "config.label_smoothing must be in [0, 1), got 2.0"),
    ({"model.dropout_rate": 1.5}, "config.model.dropout_rate must be in [0, 1), got 1.5"),
    ({"input.temporal_jitter": -3}, "config.input.temporal_jitter must be in [0, inf], got -3"),
    ({"input.resize_size": -5}, "config.input.resize_size must be in [1, inf], got -5"),
    ({"grad_clip_norm": -1.0}, "config.grad_clip_norm must be in [0, inf], got -1.0"),
    ({"input.image_size": -32}, "config.input.image_size must be in [1, inf], got -32"),
    ({"input.image_size": 2}, "config.model / config.input: the model cannot take clips of 6 x 2"),
    ({"checkpoint_every_steps": 0}, "config.checkpoint_every_steps must be in [1, inf], got 0"),
    ({"log_every_steps": 0}, "config.log_every_steps must be in [1, inf], got 0"),
    ({"input.num_workers": -1}, "config.input.num_workers must be in [0, inf], got -1"),
    ({"input.sampling": "unifrom"}, "config.input.sampling must be one of ('uniform', 'apex'), "
                                    "got 'unifrom' (did you mean 'uniform'?)"),
    ({"input.short_clip": "padd"}, "config.input.short_clip must be one of"),
    ({"optimizer": "adam"}, "config.optimizer must be one of ('adamw', 'sgd'), got 'adam'"),
    ({"model.input_mode": "flow"},
     "config.input.representation='frames' with config.model.input_mode='flow'"),
    ({"model.input_mode": "depth"}, "config.model.input_mode must be one of"),
    ({"model.magnify": ml_collections.ConfigDict(
        {"fps": 6.0, "low_hz": 0.5, "high_hz": 5.0, "alpha": 8.0})},
     "high_hz (5.0 Hz) is above the Nyquist frequency"),
    ({"transfer.policy": "IV"}, "config.transfer.policy must be one of"),
    ({"resume_mismatch": "overwrite"}, "config.resume_mismatch must be one of"),
    ({"dataset.split": "trian"}, "config.dataset.split must be one of ('train',), got 'trian' "
                                 "(did you mean 'train'?)"),
])
def test_bad_value_fails_by_name_before_any_data(tmp_path, overrides, message):
  # data_dir points nowhere: a check that reached the data would fail differently.
  config = _config(str(tmp_path / "no_data"), **overrides)
  with pytest.raises(ValueError) as err:
    config_checks.validate_config(config, str(tmp_path / "work"))
  assert message in str(err.value)
  assert not (tmp_path / "no_data").exists() and not (tmp_path / "work").exists()


@pytest.mark.slow
def test_two_concurrent_builds_of_one_dataset_reuse_the_finished_build(tmp_path):
  import fcntl  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  code = ("import sys\n"
          "from absl import logging\n"
          "logging.set_verbosity(logging.INFO)\n"
          "from conftest import tiny_config\n"
          "from mer_jax import input_pipeline\n"
          "config = tiny_config(sys.argv[1])\n"
          "config.dataset.build_if_missing = True\n"
          "builder = input_pipeline.prepare_builder(input_pipeline.get_builder(config.dataset),"
          " config.dataset)\n"
          "print(len(input_pipeline.read_clip_index(builder)))\n")
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests_dir, os.path.dirname(tests_dir)]))
  # Hold the build lock while both processes start, so both find the dataset missing and
  # wait; then let them race for it: one builds, the other must reuse that build.
  lock_dir = tmp_path / "tfds" / "synthetic_me" / "tiny"
  lock_dir.mkdir(parents=True)
  with open(lock_dir / ".1.0.0.build.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "tfds")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    time.sleep(15)  # Both past their imports and blocked on the lock.
    fcntl.flock(lock, fcntl.LOCK_UN)
  outputs = [p.communicate(timeout=600) for p in procs]
  for proc, (out, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-3000:]
    # Both read the one finished build (3 subjects x 3 clips); TFDS may print above it.
    assert out.strip().splitlines()[-1] == "9"
  # One build: TFDS announces a build on stdout; the other process reused it (it logs that
  # when it had been waiting on the lock, as both are here unless one started very late).
  assert sum("Downloading and preparing" in out for out, _ in outputs) == 1
  assert sum("built by another process" in err for _, err in outputs) <= 1
