"""End-to-end LOSO training: folds, isolation, 8 devices, kill-and-resume, two hosts, bad input."""

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import tiny_config
from mer_jax import input_pipeline
from mer_jax import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir, **overrides):
  return tiny_config(data_dir, **overrides)


def _index(config):
  return input_pipeline.read_clip_index(input_pipeline.get_builder(config.dataset))


def test_loso_folds_partition_subjects(data_dir):
  index = _index(_config(data_dir))
  folds = input_pipeline.loso_folds(index, num_validation_subjects=1, seed=3)
  subjects = set(index.subjects)
  assert len(subjects) == 3
  assert {f.test_subject for f in folds} == subjects
  for fold in folds:
    parts = [{fold.test_subject}, set(fold.train_subjects), set(fold.validation_subjects)]
    assert set.union(*parts) == subjects
    assert sum(map(len, parts)) == len(subjects)  # Disjoint.
    assert len(fold.validation_subjects) == 1


@pytest.mark.slow
def test_no_test_subject_sample_reaches_training(data_dir):
  config = _config(data_dir)
  builder = input_pipeline.get_builder(config.dataset)
  index = input_pipeline.read_clip_index(builder)
  for fold in input_pipeline.loso_folds(index):
    stream = input_pipeline.create_train_dataset(builder, "train", fold.train_subjects,
                                                 config.input, batch_size=4, seed=0, index=index)
    seen = set()
    for _ in range(3 * len(index) // 4):  # ~3 epochs.
      batch = next(stream)
      seen |= {f"{d.decode()}/{s.decode()}" for d, s in zip(batch["dataset"], batch["subject"])}
    assert fold.test_subject not in seen
    assert seen == set(fold.train_subjects)
    held_out = input_pipeline.create_eval_dataset(builder, "train", [fold.test_subject],
                                                  config.input, batch_size=4)
    clips = [c for b in held_out for c in b["clip_id"]]
    assert len(clips) == int((index.subject_key == fold.test_subject).sum())


def test_training_stream_is_a_function_of_step(data_dir):
  # Resuming at step s yields the batches an uninterrupted stream yields from s.
  config = _config(data_dir)
  builder = input_pipeline.get_builder(config.dataset)
  subjects = _index(config).subjects[:2]
  make = lambda start: input_pipeline.create_train_dataset(
      builder, "train", subjects, config.input, batch_size=2, seed=7, start_step=start)
  full = make(0)
  expected = [next(full) for _ in range(5)][3:]
  resumed = make(3)
  for batch in expected:
    got = next(resumed)
    assert (got["clip_id"] == batch["clip_id"]).all()
    assert (got["frames"] == batch["frames"]).all()


@pytest.mark.slow
def test_end_to_end_on_eight_devices(data_dir, tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  assert jax.device_count() == 8
  config = _config(data_dir)
  results = train.train_and_evaluate(config, str(tmp_path))
  index = _index(config)
  predicted = sorted(r["clip_id"] for r in results["predictions"])
  assert predicted == sorted(index.clip_id.tolist())  # Every clip once, from its own fold.
  for record in results["predictions"]:
    assert record["fold"] == f"synthetic_me__{record['subject']}"
    assert abs(sum(record["probabilities"]) - 1) < 1e-4
  assert results["num_folds"] == 3
  assert 0.0 <= results["overall"]["uf1"] <= 1.0
  for name in ("results.json", "results.md", "confusion_matrix.png", "megc_predictions.txt",
               "config.json"):
    assert os.path.getsize(tmp_path / name) > 0
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))


def _logged_scalars(workdir, tag):
  """`{step: value}` of a scalar the trainer logged to TensorBoard."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  values = {}
  for name in os.listdir(workdir):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, name)):
        for value in event.summary.value:
          if value.tag == tag:
            values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


@pytest.mark.slow
def test_validation_selection_restores_the_best_checkpoint(data_dir, tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from mer_jax import checkpoints, predict, steps as steps_lib, train_state  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from mer_jax.models import create_model  # pylint: disable=import-outside-toplevel
  config = _config(data_dir, **{"folds": ("s00",), "model_selection": "validation",
                                "num_validation_subjects": 1, "num_train_steps": 9,
                                "learning_rate": 0.05})
  results = train.train_and_evaluate(config, str(tmp_path))
  assert "validation" in results["model_selection"]
  steps = {r["selected_step"] for r in results["predictions"]}
  assert len(steps) == 1
  selected = steps.pop()
  # The selected step has the highest validation UF1 the trainer logged (fold 0: no offset).
  logged = _logged_scalars(str(tmp_path), "synthetic_me__s00/validation_uf1")
  assert sorted(logged) == [3, 6, 9]
  assert logged[selected] == max(logged.values())

  # The test predictions are exactly those of the selected checkpoint.
  model = create_model(train_state.model_config(config))
  template = train_state.initial_state(config, model, train_state.fold_rngs(config, 0)[0])
  manager = checkpoints.create_manager(str(tmp_path / "folds" / "synthetic_me__s00" /
                                           "checkpoints"), validation_selection=True)
  restored = checkpoints.restore(manager, selected, jax.tree.map(np.asarray, template))
  manager.close()
  mesh = jax.sharding.Mesh(np.array(jax.devices()), (steps_lib.AXIS,))
  compiled = steps_lib.compile_steps("pmap", mesh, label_smoothing=0.0)
  builder = input_pipeline.get_builder(config.dataset)
  expected = predict.predict(compiled, steps_lib.place_state(restored, "pmap", mesh), builder,
                             "train", ["synthetic_me/s00"], config, mode="pmap", mesh=mesh)
  got = {r["clip_id"]: r["probabilities"] for r in results["predictions"]}
  assert got == {r["clip_id"]: r["probabilities"] for r in expected}


def _command(workdir, data_dir, *extra):
  return [sys.executable, "-m", "mer_jax.main", "--config=configs/default.py:tiny",
          f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
          "--config.dataset.build_if_missing=False", *extra]


def _env(devices):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), TF_CPP_MIN_LOG_LEVEL="2")
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


RESUME_ARGS = ("--config.folds=('s00','s01')", "--config.num_train_steps=12",
               "--config.checkpoint_every_steps=4", "--config.log_every_steps=4")


@pytest.fixture(scope="module")
def resume_reference(data_dir, tmp_path_factory):
  """An uninterrupted run of the resume settings: (workdir, wall seconds)."""
  reference = tmp_path_factory.mktemp("reference")
  start = time.time()
  subprocess.run(_command(reference, data_dir, *RESUME_ARGS), cwd=REPO, env=_env(2), check=True,
                 capture_output=True, timeout=600)
  return reference, time.time() - start


def _same_results(reference, workdir):
  with open(reference / "results.json") as f:
    expected = json.load(f)
  with open(workdir / "results.json") as f:
    return json.load(f) == expected


@pytest.mark.slow
@pytest.mark.xdist_group("resume_reference")  # One reference run for both.
def test_kill_and_resume_gives_identical_results(resume_reference, data_dir, tmp_path):
  reference, _ = resume_reference
  interrupted = tmp_path / "interrupted"
  proc = subprocess.Popen(_command(interrupted, data_dir, *RESUME_ARGS), cwd=REPO, env=_env(2),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  # Kill once the second fold has its first finalised checkpoint.
  marker = interrupted / "folds" / "synthetic_me__s01" / "checkpoints" / "4"
  deadline = time.time() + 500
  while not marker.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert marker.exists(), "the run ended or timed out before the kill point"
  assert not (interrupted / "results.json").exists(), "killed too late to test resuming"
  assert (interrupted / "folds" / "synthetic_me__s00" / "predictions.json").exists()

  rerun = subprocess.run(_command(interrupted, data_dir, *RESUME_ARGS), cwd=REPO, env=_env(2),
                         capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "fold synthetic_me__s00 (1 of 2): already done" in rerun.stderr
  assert re.search(r"fold synthetic_me__s01: resumed from step (4|8)", rerun.stderr)
  assert _same_results(reference, interrupted)


@pytest.mark.slow
@pytest.mark.xdist_group("resume_reference")  # One reference run for both.
def test_killed_at_random_moments_resumes_to_identical_results(resume_reference, data_dir,
                                                               tmp_path):
  # The kill-anywhere guarantee as a property: SIGKILL at seeded random moments of the run
  # (start-up, data, training, checkpoint writes, reports), rerun, compare.
  reference, duration = resume_reference
  rng = random.Random(20261129)
  work = tmp_path / "work"
  kills = []
  for _ in range(2):
    proc = subprocess.Popen(_command(work, data_dir, *RESUME_ARGS), cwd=REPO, env=_env(2),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    delay = rng.uniform(0.15, 0.9) * duration
    try:
      proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      kills.append(round(delay, 1))
  final = subprocess.run(_command(work, data_dir, *RESUME_ARGS), cwd=REPO, env=_env(2),
                         capture_output=True, text=True, timeout=600)
  assert final.returncode == 0, final.stderr[-3000:]
  assert kills, "no kill happened: the runs finished before every kill point"
  assert _same_results(reference, work), f"killed at {kills} s"


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_in_lockstep(data_dir, tmp_path):
  port = _free_port()
  procs = []
  for process_id in range(2):
    args = _command(tmp_path / "work", data_dir, "--config.folds=('s02',)",
                    "--config.distributed.initialize=True",
                    f"--config.distributed.coordinator_address=localhost:{port}",
                    "--config.distributed.num_processes=2",
                    f"--config.distributed.process_id={process_id}",
                    "--config.distributed.cpu_collectives=gloo")
    procs.append(subprocess.Popen(args, cwd=REPO, env=_env(2), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  logs = [p.communicate(timeout=600)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  fingerprints = [re.findall(r"process (\d) finished at step (\d+), parameter fingerprint (\w+)",
                             log) for log in logs]
  assert [f[0][0] for f in fingerprints] == ["0", "1"]
  assert fingerprints[0][0][1:] == fingerprints[1][0][1:]  # Same step, same parameters.
  assert "process 1 of 2, 2 local / 4 global devices" in logs[1]
  with open(tmp_path / "work" / "results.json") as f:
    assert json.load(f)["overall"]["num_samples"] == 3  # Written by process 0.


@pytest.mark.parametrize("overrides, message", [
    ({"model.encoder": "resnet_9000"}, "unknown encoder 'resnet_9000'"),
    ({"model.temporal_head_kwargs": {"hidden": 3}}, "temporal_head_kwargs"),
    ({"dataset.name": "casme4"}, "config.dataset.name: unknown dataset 'casme4'"),
    ({"step_mode": "pjit"}, "config.step_mode"),
    ({"batch_size": 12}, "config.batch_size=12 must be divisible by the number of devices"),
    ({"folds": ("s99",)}, "config.folds: subject 's99' is not in the dataset"),
    ({"dataset.split": "train[:0]"}, "has no examples"),
    ({"input.num_frames": 500, "input.short_clip": "error"},
     "config.input.num_frames=500 exceeds the frames available"),
])
def test_bad_config_fails_before_compute(data_dir, tmp_path, overrides, message):
  config = _config(data_dir, **overrides)
  with pytest.raises(ValueError, match=re.escape(message)):
    train.train_and_evaluate(config, str(tmp_path / "work"))
  assert not (tmp_path / "work" / "folds").exists()  # Nothing trained.


def test_workdir_that_is_a_file(data_dir, tmp_path):
  path = tmp_path / "results"
  path.write_text("not a directory")
  with pytest.raises(ValueError, match="is a file, not a directory"):
    train.train_and_evaluate(_config(data_dir), str(path))


def test_unknown_config_field_on_the_command_line(data_dir, tmp_path):
  result = subprocess.run(_command(tmp_path, data_dir, "--config.input.num_frame=5"), cwd=REPO,
                          env=_env(1), capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert ("--config.input.num_frame: the config has no such field (closest: input.num_frames"
          in result.stderr)
  assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_nan_loss_stops_the_fold_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
  config = _config(data_dir, **{"folds": ("s00",), "num_train_steps": 12,
                                "checkpoint_every_steps": 3, "log_every_steps": 1,
                                "learning_rate": 1e30, "grad_clip_norm": 0.0,
                                "optimizer": "sgd"})
  with pytest.raises(train.NonFiniteLossError, match=r"at step \d+") as err:
    train.train_and_evaluate(config, str(tmp_path))
  step = int(re.search(r"at step (\d+)", str(err.value)).group(1))
  checkpoints = tmp_path / "folds" / "synthetic_me__s00" / "checkpoints"
  kept = sorted(int(p) for p in os.listdir(checkpoints) if p.isdigit())
  assert all(k < step for k in kept)  # No checkpoint of a diverged state.
  assert f"last good checkpoint (step {kept[-1] if kept else None})" in str(err.value)
