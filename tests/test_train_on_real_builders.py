"""The trainer reads a real dataset's builder: the schema is shared (fake CASME II tree)."""

import math

import pytest

import fake_trees
from configs import default as default_config
from data_builders import build
from mer_jax import input_pipeline
from mer_jax import train

pytestmark = pytest.mark.slow  # Builds and trains on a fake tree end to end.


def test_build_command_and_one_epoch_on_fake_casme2(tmp_path, capsys):
  manual = fake_trees.make_fake_casme2(tmp_path / "manual")
  data_dir = str(tmp_path / "data")
  assert build.main(["casme2/raw_128", f"--manual_dir={manual}", f"--data_dir={data_dir}"]) == 0
  assert "built casme2/raw_128" in capsys.readouterr().out

  config = default_config.get_config("tiny")
  config.dataset.name = "casme2"
  config.dataset.builder_config = "raw_128"
  config.dataset.data_dir = data_dir
  config.dataset.build_if_missing = False
  config.input.num_frames = 4
  config.input.short_clip = "pad"
  builder = input_pipeline.get_builder(config.dataset)
  index = input_pipeline.read_clip_index(builder)
  test_subject = index.subjects[0]
  config.folds = (test_subject.split("/")[1],)
  num_train = int((index.subject_key != test_subject).sum())
  config.num_train_steps = math.ceil(num_train / config.batch_size)  # One epoch.
  config.checkpoint_every_steps = config.num_train_steps

  results = train.train_and_evaluate(config, str(tmp_path / "work"))
  predicted = {r["clip_id"] for r in results["predictions"]}
  assert predicted == set(index.clip_id[index.subject_key == test_subject].tolist())
  assert results["per_dataset"].keys() == {"casme2"}
  assert results["dataset"] == "casme2/raw_128/2.0.0"


def test_build_command_rejects_unknown_names(tmp_path):
  import pytest  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="unknown dataset 'casme9'"):
    build.build("casme9/raw_128", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="has no config 'raw_512'"):
    build.build("casme2/raw_512", data_dir=str(tmp_path))
