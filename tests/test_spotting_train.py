"""The LOSO spotting trainer on the tiny synthetic long videos: results, identity, kill-resume."""

import json

import numpy as np
import pytest

from configs import spotting as spotting_config
from mer_jax import checkpoints
from mer_jax import workdir as workdir_lib
from mer_jax.spotting import data as data_lib
from mer_jax.spotting import rescore
from mer_jax.spotting import train


def _config(cache, **train_overrides):
  config = spotting_config.get_config("tiny,final=false")
  config.dataset.data_dir = str(cache)
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


def test_batches_depend_only_on_seed_fold_and_step():
  v = data_lib.Video("s00/v00", "s00", 30.0, np.zeros((300, 8, 8), np.uint8),
                     np.random.default_rng(0).normal(size=(300, 4, 4, 3)).astype(np.float32),
                     np.zeros(300, np.int32), [], np.zeros((4, 2, 2, 3), np.float32),
                     np.arange(4, dtype=np.int32) % 3)
  config = _config("/nonexistent")
  a = train.sample_batch([v], config, 0, 7)
  b = train.sample_batch([v], config, 0, 7)
  c = train.sample_batch([v], config, 0, 8)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])
  assert a[0].shape == (4, 128, 4, 4, 3) and a[1].shape == (4, 128)


@pytest.mark.slow
def test_loso_run_writes_results_refuses_another_config_and_resumes_identically(tmp_path):
  cache = tmp_path / "cache"
  config = _config(cache)
  results = train.train_and_evaluate(config, str(tmp_path / "full"))
  saved = json.loads((tmp_path / "full" / "results.json").read_text())
  assert saved["num_folds"] == 2 and saved["num_videos"] == 2
  assert set(saved["spotting"]["per_type"]) == {"micro", "macro"}
  overall = saved["spotting"]["overall"]
  assert overall["tp"] + overall["fn"] == 6  # tiny: 2 videos x (2 micro + 1 macro)
  assert "strs" in saved["spot_then_recognise"]
  assert saved["pair_distance_k"] == {"30.0": 5}
  assert results["spotting"] == saved["spotting"]

  # Re-scoring the finished run from its stored probabilities with its own peak
  # parameters reproduces results.json: the same intervals, apexes, classes, scores.
  run = rescore.load_run(str(tmp_path / "full"))
  videos = rescore.load_videos(run)
  again = rescore.rescore(run, videos, rescore.run_params(run))
  for key in ("dataset", "num_folds", "num_videos", "peaks", "spotting", "spot_then_recognise",
              "predictions", "run_identity"):
    assert json.loads(json.dumps(again[key])) == saved[key], key
  assert sum(len(p) for p in saved["predictions"].values()) > 0
  # The spotting-only path of the grid search agrees with it.
  assert rescore.spotting_scores(run, videos, rescore.run_params(run)).as_dict() == (
      saved["spotting"])
  # Another threshold through the command line: fewer or as many intervals, same truths.
  out = tmp_path / "rescored.json"
  assert rescore.main(["--workdir", str(tmp_path / "full"), "--out", str(out),
                       "--threshold", "0.95"]) == 0
  strict = json.loads(out.read_text())["results"]
  assert strict["peaks"] == dict(saved["peaks"], threshold=0.95)
  count = lambda r: sum(len(p) for p in r["predictions"].values())
  assert count(strict) <= count(saved)
  assert strict["spotting"]["overall"]["tp"] + strict["spotting"]["overall"]["fn"] == 6
  assert strict["rescored_from"]["run_peaks"] == saved["peaks"]
  # A changed result-relevant field is refused before any compute, naming it.
  changed = _config(cache, learning_rate=1e-3)
  with pytest.raises(workdir_lib.WorkdirMismatchError, match="train.learning_rate"):
    train.train_and_evaluate(changed, str(tmp_path / "full"))

  # Kill during fold s01 (after its first checkpoint), then rerun the same command.
  saves = {"count": 0}
  real_save = checkpoints.save

  def dying_save(manager, step, state, metrics=None):
    real_save(manager, step, state, metrics)
    if "s01" in str(manager.directory):
      saves["count"] += 1
      if saves["count"] == 1:
        checkpoints.wait(manager)
        raise KeyboardInterrupt("killed")

  train.checkpoints.save = dying_save
  try:
    with pytest.raises(KeyboardInterrupt):
      train.train_and_evaluate(config, str(tmp_path / "resumed"))
  finally:
    train.checkpoints.save = real_save
  wd = workdir_lib.Workdir(str(tmp_path / "resumed"))
  assert wd.fold_names() == ["s00", "s01"]
  assert not (tmp_path / "resumed" / "results.json").exists()
  with pytest.raises(rescore.NotAFinishedRunError, match=r"resumed/results\.json does not exist"):
    rescore.load_run(str(tmp_path / "resumed"))
  train.train_and_evaluate(config, str(tmp_path / "resumed"))
  resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())
  assert resumed == saved
