"""The ablation runner (tiny LOSO runs, resume, errors) and every ablation / paper config."""

import glob
import json
import os
import textwrap

import jax
import jax.numpy as jnp
import pytest

from configs import tiny
from mer_jax import ablation
from mer_jax import input_pipeline
from mer_jax import train
from mer_jax.models import create_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_MEAN = """
from configs import tiny

def get_config():
  return tiny.get_config()
"""

TINY_HEAD = """
from configs import tiny

def get_config(config_string="gru"):
  config = tiny.get_config()
  config.model.temporal_head = config_string
  config.model.temporal_head_kwargs = {"hidden_size": 8}
  return config
"""


def _write(directory, name, text):
  path = os.path.join(directory, name)
  with open(path, "w") as f:
    f.write(textwrap.dedent(text))
  return path


def test_runner_writes_table_resumes_and_refuses_other_config(data_dir, tmp_path):
  mean_path = _write(tmp_path, "tiny_mean.py", TINY_MEAN)
  head_path = _write(tmp_path, "tiny_head.py", TINY_HEAD)
  specs = [ablation.parse_spec(mean_path), ablation.parse_spec(f"{head_path}:gru")]
  out_dir = str(tmp_path / "out")
  overrides = {"dataset.data_dir": data_dir, "dataset.build_if_missing": False,
               "folds": ("s00",), "num_train_steps": 4}

  report = ablation.run_ablation(specs, out_dir, overrides=overrides)

  with open(os.path.join(out_dir, "ablation.json")) as f:
    stored = json.load(f)
  assert stored == json.loads(json.dumps(report))
  assert report["baseline"] == "tiny_mean"
  rows = {r["name"]: r for r in report["rows"]}
  assert list(rows) == ["tiny_mean", "tiny_head-gru"]
  for row in rows.values():
    assert row["folds"] == ["synthetic_me/s00"]
    assert row["num_samples"] == 3  # One clip per class for the held-out subject.
    assert 0.0 <= row["uf1"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
    assert row["seconds_per_step"] > 0.0
    assert row["num_train_steps"] == 4 and not row["reused"]
    assert os.path.exists(os.path.join(out_dir, row["name"], "results.json"))
  mean, gru = rows["tiny_mean"], rows["tiny_head-gru"]
  assert (mean["temporal_head"], gru["temporal_head"]) == ("mean", "gru")
  # The GRU's cell (3 gates of 8 units over 16 inputs) adds parameters.
  assert gru["num_params"] > mean["num_params"] > 0
  assert mean["delta_uf1"] == 0.0 and mean["clips_won"] == mean["clips_lost"] == 0
  assert gru["delta_uf1"] == pytest.approx(gru["uf1"] - mean["uf1"])
  assert gru["delta_accuracy"] == pytest.approx(gru["accuracy"] - mean["accuracy"])
  # Paired counts explain the accuracy difference on the same 3 clips.
  assert (gru["clips_won"] - gru["clips_lost"]) / 3 == pytest.approx(gru["delta_accuracy"])
  with open(os.path.join(out_dir, "ablation.md")) as f:
    table = f.read()
  assert "| `tiny_mean` |" in table and "| `tiny_head-gru` |" in table
  assert "baseline for the deltas: `tiny_mean`" in table

  # Rerunning reuses the finished workdirs: no training, the same scores.
  results_file = os.path.join(out_dir, "tiny_head-gru", "results.json")
  mtime = os.path.getmtime(results_file)
  again = ablation.run_ablation(specs, out_dir, overrides=overrides)
  assert [r["reused"] for r in again["rows"]] == [True, True]
  assert [r["uf1"] for r in again["rows"]] == [r["uf1"] for r in report["rows"]]
  assert os.path.getmtime(results_file) == mtime

  # The same out_dir with another schedule would mix results: refused, naming the field.
  with pytest.raises(ValueError, match=r"num_train_steps: 4 in the workdir, 5 now"):
    ablation.run_ablation(specs, out_dir, overrides={**overrides, "num_train_steps": 5})


def test_bad_configs_give_clear_errors(tmp_path):
  with pytest.raises(ValueError, match=r"config file 'configs/no_such_config.py' not found"):
    ablation.run_ablation([ablation.parse_spec("configs/no_such_config.py")], str(tmp_path))
  with pytest.raises(ValueError, match=r"expected a Python config file"):
    ablation.parse_spec("configs/synthetic_gru")
  no_get_config = _write(tmp_path, "empty.py", "X = 1\n")
  with pytest.raises(ValueError, match=r"empty.py defines no get_config"):
    ablation.load_config(ablation.parse_spec(no_get_config))
  config = tiny.get_config()
  with pytest.raises(ValueError, match=r"override model.no_such_field=3: the config has no field"):
    ablation.apply_overrides(config, {"model.no_such_field": 3})
  with pytest.raises(ValueError, match=r"baseline 'nope' is not one of the configs run"):
    ablation.run_ablation([ablation.parse_spec("configs/synthetic_gru.py")], str(tmp_path),
                          baseline="nope")
  with pytest.raises(ValueError, match=r"N must be an integer in 11..17"):
    ablation.load_config(ablation.parse_spec("configs/paper_s32_smic.py:lstm,30"))
  with pytest.raises(ValueError, match=r"HEAD in \('lstm', 'bilstm'\)"):
    ablation.load_config(ablation.parse_spec("configs/paper_s32_smic.py:tcn"))


def test_config_list_splitting_and_values():
  assert ablation.split_config_list(
      "configs/a.py,configs/paper_s32_smic.py:bilstm,15,configs/b.py") == [
          "configs/a.py", "configs/paper_s32_smic.py:bilstm,15", "configs/b.py"]
  spec = ablation.parse_spec("configs/paper_s32_smic.py:bilstm,15")
  assert (spec.path, spec.config_string, spec.name) == (
      "configs/paper_s32_smic.py", "bilstm,15", "paper_s32_smic-bilstm-15")
  assert ablation.parse_value("('s00', 's01')") == ("s00", "s01")
  assert ablation.parse_value("/tmp/tfds") == "/tmp/tfds"
  assert ablation.parse_value("0.5") == 0.5


def _ablation_config_files():
  files = sorted(glob.glob(os.path.join(REPO, "configs", "synthetic_*.py")) +
                 glob.glob(os.path.join(REPO, "configs", "paper_s32_*.py")))
  return [f for f in files if not f.endswith("paper_s32_common.py")]


def test_every_suite_entry_exists():
  for suite in ablation.SUITES.values():
    for entry in suite:
      assert os.path.isfile(os.path.join(REPO, entry)), entry


@pytest.mark.parametrize("path", _ablation_config_files(), ids=os.path.basename)
def test_config_loads_and_builds_its_model(path, tmp_path):
  specs = [ablation.parse_spec(path)]
  if "paper_s32" in path:
    specs.append(ablation.parse_spec(f"{path}:bilstm,17"))
  for spec in specs:
    config = ablation.load_config(spec)
    train.validate_config(config, str(tmp_path / spec.name))
    if config.dataset.name == "synthetic_me":
      # Shapes only (no compute): the model accepts the config's own clips. The
      # real-dataset paper configs share paper_s32_synthetic's model (traced here)
      # and differ in image size, so they are only validated above.
      model = create_model(train.model_config(config))
      cfg = config.input
      logits = jax.eval_shape(
          lambda rng, m=model, c=cfg: m.init_with_output(
              rng, jnp.zeros((2, c.num_frames, c.image_size, c.image_size, 3), jnp.uint8),
              jnp.ones((2, c.num_frames), bool), train=False)[0],
          jax.random.key(0))
      per_frame = config.model.temporal_head == "frames"
      assert logits.shape == ((2, cfg.num_frames, 3) if per_frame else (2, 3))
    if "synthetic_" in path and "paper" not in path:
      # Only the temporal / spatial part differs from the demo.
      from configs import demo  # pylint: disable=import-outside-toplevel
      reference = demo.get_config()
      assert config.input == reference.input
      assert config.model.encoder_kwargs == reference.model.encoder_kwargs
      assert config.num_train_steps == reference.num_train_steps
    if "paper_s32" in path:
      # The builder config named exists (nothing is read or built here).
      config.dataset.data_dir = str(tmp_path / "tfds")
      builder = input_pipeline.get_builder(config.dataset)
      assert builder.builder_config.name == config.dataset.builder_config
    if spec.config_string == "bilstm,17":
      assert (config.model.temporal_head, config.input.num_frames) == ("bilstm", 17)
