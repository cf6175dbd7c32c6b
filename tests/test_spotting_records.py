"""The spotting trainer on a real release's layout: a fake CAS(ME)^2 tree, built and read by index."""

import json
import os

import pytest

from configs import spotting as spotting_config
from mer_jax import input_pipeline
from mer_jax.spotting import rescore
from mer_jax.spotting import train
from test_long_video_builders import make_fake_casme_sq


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  """A fake CAS(ME)^2 manual download and the folder its records are built into (once)."""
  root = tmp_path_factory.mktemp("casme_sq")
  return str(make_fake_casme_sq(root / "manual")), str(root / "tfds")


def _config(release, tmp_path):
  config = spotting_config.get_config("dataset=casme_sq,tiny,final=false")
  config.dataset.manual_dir, config.dataset.data_dir = release
  config.dataset.features_dir = str(tmp_path / "features")
  config.features.size = 32  # small frames: the test is about reading records, not accuracy
  config.train.num_steps = 2
  config.train.checkpoint_every = 2
  config.peaks.threshold = 0.5
  return config


def test_a_casme_sq_release_trains_loso_from_its_records_and_rescores(release, tmp_path):
  config = _config(release, tmp_path)
  assert config.dataset.builder_config == "raw_128" and config.dataset.extra_train_presets == ""
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  saved = json.loads((tmp_path / "run" / "results.json").read_text())
  assert results["spotting"] == saved["spotting"]
  # Subjects s15 and s16 are the folds; all four recordings are scored, the unannotated
  # one too (its predictions can only be false positives).
  assert saved["num_folds"] == 2 and saved["num_videos"] == 4
  assert sorted(saved["predictions"]) == ["s15/15_0102happytalk", "s15/15_0401girlcrashing",
                                          "s15/15_0503unannotated", "s16/16_0401girlcrashing"]
  overall = saved["spotting"]["overall"]
  assert overall["tp"] + overall["fn"] == 4          # the builder's four intervals
  assert saved["pair_distance_k"] == {"30.0": 5}
  assert saved["dataset"]["name"] == "casme_sq/raw_128"
  cached = os.listdir(tmp_path / "features" / "casme_sq" / "raw_128")
  assert len(cached) == 1 and saved["dataset"]["features"] == cached[0]
  # The feature cache is not part of the run identity; the records' fingerprint is.
  assert saved["dataset"]["fingerprint"] in (tmp_path / "run" / "run_identity.json").read_text()
  # Re-scoring reads the same cache and reproduces the results.
  run = rescore.load_run(str(tmp_path / "run"))
  again = rescore.rescore(run, rescore.load_videos(run), rescore.run_params(run))
  for key in ("dataset", "spotting", "spot_then_recognise", "predictions"):
    assert json.loads(json.dumps(again[key])) == saved[key], key


def test_datasets_go_to_their_own_trainer_with_a_clear_error(release, tmp_path):
  config = _config(release, tmp_path)
  builder = input_pipeline.prepare_builder(input_pipeline.get_builder(config.dataset),
                                           config.dataset)
  with pytest.raises(ValueError, match="long-video .spotting. dataset.*mer_jax.spotting.train"):
    input_pipeline.read_clip_index(builder)
  config.dataset.name = "casme2"
  with pytest.raises(ValueError, match=r"config.dataset.name='casme2'.*python -m mer_jax.main"):
    train.dataset_videos(config)
  with pytest.raises(ValueError, match=r"dataset='casme3' must be one of"):
    spotting_config.get_config("dataset=casme3")
