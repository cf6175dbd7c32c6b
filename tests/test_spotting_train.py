"""The LOSO spotting trainer on the tiny synthetic long videos: results, identity, kill-resume."""

import json

import ml_collections
import numpy as np
import pytest

from configs import spotting as spotting_config
from mer_jax import checkpoints
from mer_jax import workdir as workdir_lib
from mer_jax.spotting import data as data_lib
from mer_jax.spotting import rescore
from mer_jax.spotting import train
from conftest import xla_optimised

# The two trainer tests share one feature cache (rendering the tiny videos is most of a
# test's set-up), so they stay on one xdist worker.
pytestmark = pytest.mark.xdist_group("spotting_cache")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """A spotting feature cache for this module, filled here by the trainer's own loaders for
  every video the tests train on (the tiny preset, the extra preset, their mp4v copies) with
  XLA's optimisations on: their TV-L1 features are most of the module's time otherwise. The
  tests read it (one cache folder per preset and feature settings)."""
  folder = tmp_path_factory.mktemp("spotting_cache")
  config = _config(folder)
  config.dataset.extra_train_presets = "tiny_extra"
  with xla_optimised():
    train.dataset_videos(config)
    train.codec_copies(config, ["mp4v"])
    train.extra_training_videos(config, ["mp4v"])
  return folder


def _config(cache, **train_overrides):
  config = spotting_config.get_config("tiny,final=false")
  config.dataset.data_dir = str(cache)
  # The tiny 40-step spotter's probabilities seldom reach the real one's threshold of 0.7:
  # a lower one, so that the runs below find intervals to check.
  config.peaks.threshold = 0.5
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


def _killed_after_first_save(config, workdir, fold):
  """Runs the trainer into `workdir` and kills it right after `fold`'s first checkpoint."""
  saves = {"count": 0}
  real_save = checkpoints.save

  def dying_save(manager, step, state, metrics=None):
    real_save(manager, step, state, metrics)
    if fold in str(manager.directory):
      saves["count"] += 1
      if saves["count"] == 1:
        checkpoints.wait(manager)
        raise KeyboardInterrupt("killed")

  train.checkpoints.save = dying_save
  try:
    with pytest.raises(KeyboardInterrupt):
      train.train_and_evaluate(config, str(workdir))
  finally:
    train.checkpoints.save = real_save


def _training_sets(config, workdir):
  """Runs the trainer into `workdir`; returns {fold: sorted ids of the videos it trained on}."""
  trained_on = {}
  real_train_fold = train.train_fold

  def recording_train_fold(config, wd, fold, fold_index, videos):
    trained_on[fold] = sorted(v.video_id for v in videos)
    return real_train_fold(config, wd, fold, fold_index, videos)

  train.train_fold = recording_train_fold
  try:
    train.train_and_evaluate(config, str(workdir))
  finally:
    train.train_fold = real_train_fold
  return trained_on


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
def test_loso_run_writes_results_refuses_another_config_and_resumes_identically(tmp_path, cache):
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
  _killed_after_first_save(config, tmp_path / "resumed", fold="s01")
  wd = workdir_lib.Workdir(str(tmp_path / "resumed"))
  assert wd.fold_names() == ["s00", "s01"]
  assert not (tmp_path / "resumed" / "results.json").exists()
  with pytest.raises(rescore.NotAFinishedRunError, match=r"resumed/results\.json does not exist"):
    rescore.load_run(str(tmp_path / "resumed"))
  train.train_and_evaluate(config, str(tmp_path / "resumed"))
  resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())
  assert resumed == saved


@pytest.mark.slow
def test_extra_presets_and_codec_copies_join_training_and_copies_are_scored_apart(tmp_path,
                                                                                  cache):
  # One run checks both ways of adding training videos (a run costs most of a test's time).
  config = _config(cache, num_steps=2, checkpoint_every=2)
  config.dataset.extra_train_presets = "tiny_extra"
  config.dataset.train_codecs = "mp4v"
  config.eval_codecs = "mp4v"
  extra, identities = train.extra_training_videos(config)
  assert [v.video_id for v in extra] == ["tiny_extra:s00/v00", "tiny_extra:s01/v00"]
  assert {v.subject for v in extra} == {"tiny_extra:s00", "tiny_extra:s01"}
  assert identities[0]["version"] == "tiny_extra"

  trained_on = _training_sets(config, tmp_path / "run")
  # Each fold: the other tiny subject and its mp4v copy, both extra videos and their copies;
  # the held-out subject never, neither original nor copy.
  extras = ["tiny_extra:s00/v00", "tiny_extra:s00/v00@mp4v", "tiny_extra:s01/v00",
            "tiny_extra:s01/v00@mp4v"]
  assert trained_on == {"s00": sorted(["s01/v00", "s01/v00@mp4v"] + extras),
                        "s01": sorted(["s00/v00", "s00/v00@mp4v"] + extras)}
  saved = json.loads((tmp_path / "run" / "results.json").read_text())
  assert saved["num_videos"] == 2                       # the LOSO figures: the preset's originals
  assert saved["dataset"]["version"] == "tiny"
  assert set(saved["predictions"]) == {"s00/v00", "s01/v00", "s00/v00@mp4v", "s01/v00@mp4v"}
  copies = saved["codecs"]["mp4v"]
  assert copies["num_videos"] == 2 and copies["dataset"]["codec"] == "mp4v"
  assert copies["spotting"]["overall"]["tp"] + copies["spotting"]["overall"]["fn"] == 6
  stored = (tmp_path / "run" / "run_identity.json").read_text()
  assert identities[0]["fingerprint"] in stored and copies["dataset"]["fingerprint"] in stored
  assert "| mp4v | 2 |" in (tmp_path / "run" / "results.md").read_text()
  # Re-scoring with the run's own parameters reproduces the copies' section too; the
  # grid's spotting-only scores leave the copies out.
  run = rescore.load_run(str(tmp_path / "run"))
  videos = rescore.load_videos(run)
  again = rescore.rescore(run, videos, rescore.run_params(run))
  assert json.loads(json.dumps(again["codecs"])) == saved["codecs"]
  assert json.loads(json.dumps(again["spotting"])) == saved["spotting"]
  assert rescore.spotting_scores(run, videos, rescore.run_params(run)).as_dict() == (
      saved["spotting"])
  # The same workdir without the extra subjects, or with other codecs, is refused, naming
  # the field.
  for field, value in (("dataset.extra_train_presets", ""), ("eval_codecs", "")):
    changed = ml_collections.ConfigDict(config.to_dict())
    section, _, name = field.rpartition(".")
    (changed[section] if section else changed)[name] = value
    with pytest.raises(workdir_lib.WorkdirMismatchError, match=field.split(".")[-1]):
      train.train_and_evaluate(changed, str(tmp_path / "run"))
  config.dataset.train_codecs = "h265"
  with pytest.raises(ValueError, match=r"config\.dataset\.train_codecs='h265'"):
    train.train_and_evaluate(config, str(tmp_path / "other"))
  assert not (tmp_path / "other").exists()               # refused before the workdir is made
  for bad, message in (("nope", "'nope' is not a synthetic_me_long preset"),
                       ("tiny", "names the run's own preset"),
                       ("tiny_extra,tiny_extra", "one preset twice")):
    config.dataset.extra_train_presets = bad
    with pytest.raises(ValueError, match=message):
      train.extra_training_videos(config)


def _fold_probabilities(workdir):
  wd = workdir_lib.Workdir(str(workdir))
  return {vid: np.asarray(rec["probabilities"])
          for fold in wd.fold_names()
          for vid, rec in json.loads(open(wd.predictions_json(fold)).read())["videos"].items()}


@pytest.mark.slow
def test_an_ensemble_averages_its_members_which_are_the_runs_of_their_seeds(tmp_path, cache):
  """train.ensemble=2 = the mean of the one-member runs with seeds 0 and 1; killed and resumed
  it ends where an uninterrupted run ends."""
  for seed in (0, 1):
    train.train_and_evaluate(_config(cache, seed=seed), str(tmp_path / f"seed{seed}"))
  ensemble = _config(cache, ensemble=2)
  _killed_after_first_save(ensemble, tmp_path / "ensemble", fold="s00")
  results = train.train_and_evaluate(ensemble, str(tmp_path / "ensemble"))

  one, two = _fold_probabilities(tmp_path / "seed0"), _fold_probabilities(tmp_path / "seed1")
  both = _fold_probabilities(tmp_path / "ensemble")
  assert sorted(both) == sorted(one) == ["s00/v00", "s01/v00"]
  for vid, probabilities in both.items():
    # Stored values are rounded to 1e-4 (train.PROBABILITY_DECIMALS), hence the tolerance.
    np.testing.assert_allclose(probabilities, (one[vid] + two[vid]) / 2, atol=1.01e-4)
  assert max(np.abs(one[v] - two[v]).max() for v in one) > 1e-2  # The seeds do differ.

  # The fold's checkpoint holds both members; the predictor and re-scoring read it.
  predictor, _ = train.load_predictor(str(tmp_path / "ensemble"), "s00")
  assert len(predictor._spot_params) == 2  # pylint: disable=protected-access
  run = rescore.load_run(str(tmp_path / "ensemble"))
  again = rescore.rescore(run, rescore.load_videos(run), rescore.run_params(run))
  assert json.loads(json.dumps(again["spotting"])) == results["spotting"]
  assert json.loads(json.dumps(again["predictions"])) == results["predictions"]


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "3"])
def test_a_bad_ensemble_size_is_named(bad):
  # As a config.json read back holds it (the config file's own field only takes integers).
  config = ml_collections.ConfigDict({"train": {"seed": 0, "ensemble": bad}})
  with pytest.raises(ValueError, match=r"config.train.ensemble must be an integer >= 1"):
    train.ensemble_size(config)
  assert train.ensemble_size(ml_collections.ConfigDict({"train": {"seed": 0}})) == 1  # old runs


def test_ensemble_member_m_trains_with_seed_plus_m():
  config = _config("/nonexistent", seed=5)
  assert train.member_config(config, 0) is config
  assert train.member_config(config, 2).train.seed == 7 and config.train.seed == 5


def test_the_command_summary_of_a_final_model_only_run(tmp_path):
  # train.loso=False returns no results: the command says where the model went (it used to
  # fail with a KeyError after training).
  text = train.summary_text({}, str(tmp_path))
  assert "config.train.loso=False" in text and str(tmp_path / "folds" / "all") in text
  scores = {"spotting": {"overall": {"f1": 0.5}, "macro_f1": 0.4},
            "spot_then_recognise": {"strs": 0.3}}
  assert json.loads(train.summary_text(scores, str(tmp_path))) == {
      "overall": {"f1": 0.5}, "macro_f1": 0.4, "strs": 0.3}
