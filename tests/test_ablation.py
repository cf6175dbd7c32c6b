"""The ablation runner (tiny LOSO runs, resume, errors) and every ablation / paper config."""

import glob
import json
import os
import textwrap

import jax
import jax.numpy as jnp
import pytest

from configs import default as default_config
from mer_jax import ablation
from mer_jax import config_checks
from mer_jax import input_pipeline
from mer_jax import train_state
from mer_jax.models import create_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_MEAN = """
from configs import default as default_config

def get_config():
  return default_config.get_config("tiny")
"""

TINY_HEAD = """
from configs import default as default_config

def get_config(config_string="gru"):
  config = default_config.get_config("tiny,head=" + config_string)
  config.model.temporal_head_kwargs.hidden_size = 8
  return config
"""


def _write(directory, name, text):
  path = os.path.join(directory, name)
  with open(path, "w") as f:
    f.write(textwrap.dedent(text))
  return path


@pytest.mark.slow
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
  with pytest.raises(ValueError, match=r"config.num_train_steps: 4 -> 5"):
    ablation.run_ablation(specs, out_dir, overrides={**overrides, "num_train_steps": 5})


def test_bad_configs_give_clear_errors(tmp_path):
  with pytest.raises(ValueError, match=r"config file 'configs/no_such_config.py' not found"):
    ablation.run_ablation([ablation.parse_spec("configs/no_such_config.py")], str(tmp_path))
  with pytest.raises(ValueError, match=r"expected a Python config file"):
    ablation.parse_spec("configs/default")
  no_get_config = _write(tmp_path, "empty.py", "X = 1\n")
  with pytest.raises(ValueError, match=r"empty.py defines no get_config"):
    ablation.load_config(ablation.parse_spec(no_get_config))
  config = default_config.get_config("tiny")
  with pytest.raises(ValueError, match=r"override model.no_such_field=3: the config has no field"):
    ablation.apply_overrides(config, {"model.no_such_field": 3})
  with pytest.raises(ValueError, match=r"baseline 'nope' is not one of the configs run"):
    ablation.run_ablation([ablation.parse_spec("configs/default.py:head=gru")], str(tmp_path),
                          baseline="nope")
  with pytest.raises(ValueError, match=r"frames must be in 11..17"):
    ablation.load_config(ablation.parse_spec("configs/paper_s32.py:frames=30"))
  with pytest.raises(ValueError, match=r"head must be one of \('lstm', 'bilstm'\)"):
    ablation.load_config(ablation.parse_spec("configs/paper_s32.py:head=tcn"))
  with pytest.raises(ValueError, match=r"unknown config argument 'haed' \(did you mean head"):
    ablation.load_config(ablation.parse_spec("configs/default.py:haed=gru"))
  with pytest.raises(ValueError, match=r"unknown temporal_head 'gruu'"):
    ablation.load_config(ablation.parse_spec("configs/default.py:head=gruu"))


def test_config_list_splitting_and_values():
  assert ablation.split_config_list(
      "configs/a.py,configs/paper_s32.py:head=bilstm,frames=15,configs/b.py") == [
          "configs/a.py", "configs/paper_s32.py:head=bilstm,frames=15", "configs/b.py"]
  spec = ablation.parse_spec("configs/paper_s32.py:head=bilstm,frames=15")
  assert (spec.path, spec.config_string, spec.name) == (
      "configs/paper_s32.py", "head=bilstm,frames=15", "paper_s32-head-bilstm-frames-15")
  assert ablation.parse_value("('s00', 's01')") == ("s00", "s01")
  assert ablation.parse_value("/tmp/tfds") == "/tmp/tfds"
  assert ablation.parse_value("0.5") == 0.5


def _ablation_config_specs():
  """Every config string the suites and docs run: each suite entry and the paper configs."""
  entries = {e for suite in ablation.SUITES.values() for e in suite}
  entries |= {f"configs/paper_s32.py:dataset={d},head=bilstm,frames=17"
              for d in ("smic", "casme2", "megc2019_composite", "synthetic")}
  entries |= {f"configs/paper_s31.py:policy={p}" for p in ("I", "II", "III")}
  entries |= {"configs/paper_s31.py:policy=II,dataset=smic", "configs/default.py:tiny"}
  return sorted(entries)


def test_every_suite_entry_exists():
  for suite in ablation.SUITES.values():
    for entry in suite:
      assert os.path.isfile(os.path.join(REPO, entry.partition(":")[0])), entry


@pytest.mark.parametrize("entry", _ablation_config_specs())
def test_config_loads_and_builds_its_model(entry, tmp_path):
  spec = ablation.parse_spec(entry)
  config = ablation.load_config(spec)
  # Every field checked and the model traced on the config's own clip shape (no compute).
  config_checks.validate_config(config, str(tmp_path / spec.name))
  if config.dataset.name == "synthetic_me":
    model = create_model(train_state.model_config(config))
    cfg = config.input
    logits = jax.eval_shape(
        lambda rng, m=model, c=cfg: m.init_with_output(
            rng, jnp.zeros((2, c.num_frames, c.image_size, c.image_size, 3), jnp.uint8),
            jnp.ones((2, c.num_frames), bool), train=False)[0],
        jax.random.key(0))
    per_frame = config.model.temporal_head == "frames"
    assert logits.shape == ((2, cfg.num_frames, 3) if per_frame else (2, 3))
  if spec.path == "configs/default.py" and "tiny" not in (spec.config_string or ""):
    # Only the temporal / spatial part (or magnification) differs from the default run.
    reference = default_config.get_config()
    assert config.input == reference.input
    assert config.model.encoder_kwargs == reference.model.encoder_kwargs
    assert config.num_train_steps == reference.num_train_steps
  if "dataset=" in (spec.config_string or "") and "synthetic" not in spec.config_string:
    # The builder config named exists (nothing is read or built here).
    config.dataset.data_dir = str(tmp_path / "tfds")
    builder = input_pipeline.get_builder(config.dataset)
    assert builder.builder_config.name == config.dataset.builder_config
  if "head=bilstm,frames=17" in (spec.config_string or ""):
    assert (config.model.temporal_head, config.input.num_frames) == ("bilstm", 17)


def test_switching_a_part_by_argument_resets_its_arguments():
  grid = default_config.get_config()
  assert grid.model.spatial_pool_kwargs.to_dict() == {"grid_size": 4}
  mean = default_config.get_config("pool=mean")
  assert (mean.model.spatial_pool, mean.model.spatial_pool_kwargs.to_dict()) == ("mean", {})
  lstm = default_config.get_config("head=lstm")
  # Recommended settings over the class defaults; every field present and settable.
  assert lstm.model.temporal_head_kwargs.hidden_size == 32
  assert lstm.model.temporal_head_kwargs.num_layers == 1
  lstm.lock()
  lstm.model.temporal_head_kwargs.num_layers = 2


def test_switching_a_part_by_override_alone_is_named_before_data():
  config = default_config.get_config()
  config.model.spatial_pool = "mean"  # grid_size stays: the error says how to switch.
  with pytest.raises(ValueError, match=r"grid_size.*configs/default.py:pool=mean"):
    config_checks.validate_config(config)


def test_seeds_aggregate_to_mean_and_standard_deviation():
  def row(seed, uf1, smic):
    return {"name": "m", "seed": seed, "uf1": uf1, "uar": uf1, "accuracy": uf1,
            "per_dataset": {"smic": {"uf1": smic, "uar": smic}, "samm": {"uf1": 0.5, "uar": 0.5}},
            "wall_seconds": 10.0, "workdir": f"/out/m/seed{seed}", "reused": False}
  merged = ablation.aggregate_seeds([row(0, 0.6, 0.4), row(1, 0.8, 0.6), row(2, 0.7, 0.5)])
  assert merged["uf1"] == pytest.approx(0.7) and merged["uf1_std"] == pytest.approx(0.1)
  assert merged["per_dataset"]["smic"]["uf1"] == pytest.approx(0.5)
  assert merged["per_dataset"]["smic"]["uf1_std"] == pytest.approx(0.1)
  assert merged["per_dataset"]["samm"]["uf1_std"] == 0.0
  assert merged["seeds"] == [0, 1, 2] and merged["wall_seconds"] == 30.0
  assert merged["workdir"] == "/out/m" and len(merged["per_seed"]) == 3
  merged.update({"spatial_pool": "grid", "temporal_head": "mean", "magnify": False,
                 "num_params": 10, "seconds_per_step": None, "folds": ["x/s00"],
                 "delta_uf1": None, "delta_uar": None, "delta_accuracy": None,
                 "clips_won": None, "clips_lost": None})
  table = ablation.markdown_report([merged], None, {"seeds": [0, 1, 2]})
  assert "0.700 ± 0.100" in table and "| samm | smic |" in table


def test_parameter_counts_of_flow_and_frames_configs():
  # Flow configs take a one-frame float "clip" of 3 or 6 channels (docs/motion_models.md).
  counts = {entry: ablation.count_parameters(ablation.load_config(ablation.parse_spec(entry)))
            for entry in ("configs/default.py:input=flow,model=flow_linear",
                          "configs/default.py:input=flow,model=ststnet",
                          "configs/default.py:input=flow,model=flow_resnet",
                          "configs/default.py:model=pixel_linear")}
  assert counts == {"configs/default.py:input=flow,model=flow_linear": 444,
                    "configs/default.py:input=flow,model=ststnet": 1683,
                    "configs/default.py:input=flow,model=flow_resnet": 20519,
                    # 8 x 8 cells x 3 channels into 3 classes, plus biases.
                    "configs/default.py:model=pixel_linear": 8 * 8 * 3 * 3 + 3}


def test_reading_without_training_gives_none_for_a_missing_run(tmp_path):
  spec = ablation.parse_spec("configs/default.py:tiny")
  config = ablation.load_config(spec)
  assert ablation.run_config(spec, config, str(tmp_path), "seed0", train_missing=False) is None
  assert not os.path.exists(tmp_path / "seed0" / "results.json")
