"""The baselines command: chance rows, the table from fake cells, its rows' configs, errors."""

import json

import pytest

from configs import default as default_config
from mer_jax import baselines
from mer_jax import input_pipeline

# Three subjects, three clips each (labels 0 negative, 1 positive, 2 surprise).
LABELS = [0, 0, 1, 0, 1, 2, 0, 2, 2]
SUBJECTS = ["d/a"] * 3 + ["d/b"] * 3 + ["e/c"] * 3
DATASETS = ["d"] * 6 + ["e"] * 3


def test_majority_chance_follows_the_training_folds():
  rows = baselines.chance_scores(LABELS, SUBJECTS, DATASETS, num_draws=10)
  majority = rows["chance_majority"]
  # Fold a trains on b + c (classes 0, 1, 2 counted 2, 1, 3): predicts 2; folds b and c
  # predict 0. Pooled: class 0 has TP 2, FP 4, FN 2 -> F1 0.4; classes 1 and 2 score 0.
  assert majority["uf1"] == pytest.approx(0.4 / 3)
  assert majority["uar"] == pytest.approx((2 / 4) / 3)
  assert majority["uf1_std"] == 0.0
  # Dataset "e" is subject c alone: predicted 0 for labels 0, 2, 2 -> F1_0 = 2/4, recall 1.
  assert majority["per_dataset"]["e"]["uf1"] == pytest.approx(0.5 / 2)
  assert majority["per_dataset"]["e"]["uar"] == pytest.approx(1.0 / 2)
  assert set(majority["per_dataset"]) == {"d", "e"}


def test_chance_on_a_subset_of_folds_trains_on_every_other_subject():
  rows = baselines.chance_scores(LABELS, SUBJECTS, DATASETS, folds=["e/c"], num_draws=10)
  # Only subject c is scored (as in the full run: predicted 0); dataset d has no test clip.
  assert rows["chance_majority"]["uf1"] == pytest.approx(0.5 / 2)
  assert set(rows["chance_majority"]["per_dataset"]) == {"e"}
  # A bare id selects the same fold; an unknown one is refused.
  assert baselines.chance_scores(LABELS, SUBJECTS, DATASETS, folds=["c"], num_draws=10)[
      "chance_majority"]["uf1"] == pytest.approx(0.5 / 2)
  with pytest.raises(ValueError, match=r"no clip of the folds \['x/y'\]"):
    baselines.chance_scores(LABELS, SUBJECTS, DATASETS, folds=["x/y"], num_draws=10)


def test_uniform_chance_is_simulated_around_a_third():
  labels = [c for c in range(3) for _ in range(30)]
  subjects = [f"d/s{i % 10}" for i in range(90)]
  rows = baselines.chance_scores(labels, subjects, ["d"] * 90, num_draws=400, seed=1)
  uniform = rows["chance_uniform"]
  # Balanced classes: E[UAR] = 1/3 exactly; UF1 close to it. The spread is real, not zero.
  assert uniform["uar"] == pytest.approx(1 / 3, abs=0.01)
  assert uniform["uf1"] == pytest.approx(1 / 3, abs=0.02)
  assert 0.02 < uniform["uf1_std"] < 0.1
  again = baselines.chance_scores(labels, subjects, ["d"] * 90, num_draws=400, seed=1)
  assert again["chance_uniform"]["uf1"] == uniform["uf1"]  # Deterministic from the seed.


def test_chance_scores_refuse_bad_input():
  with pytest.raises(ValueError, match=r"equally long"):
    baselines.chance_scores([0, 1], ["d/a"], ["d", "d"])
  with pytest.raises(ValueError, match=r"at least two subjects"):
    baselines.chance_scores([0, 1], ["d/a", "d/a"], ["d", "d"])
  with pytest.raises(ValueError, match=r"num_draws"):
    baselines.chance_scores(LABELS, SUBJECTS, DATASETS, num_draws=1)


def _done(uf1, std, per_dataset=None, seeds=(0, 1, 2), **extra):
  return {"status": "done", "uf1": uf1, "uf1_std": std, "uar": uf1 - 0.01, "uar_std": std,
          "per_dataset": per_dataset or {}, "seeds": list(seeds), "num_params": 444, **extra}


def test_table_from_fake_cells():
  composite = {"synthetic_smic_hs": {"uf1": 0.61, "uf1_std": 0.02, "uar": 0.6, "uar_std": 0.0},
               "synthetic_samm": {"uf1": 0.8, "uf1_std": 0.01, "uar": 0.8, "uar_std": 0.0}}
  cells = {
      ("default", "flow_linear"): _done(0.7, 0.1, wall_seconds_per_seed=95.0, loads=[2.0, 3.5]),
      ("composite", "flow_linear"): _done(0.65, 0.03, composite, seeds=(0,)),
      ("default", "chance_uniform"): {"status": "done", "uf1": 0.33, "uf1_std": 0.03,
                                      "uar": 0.333, "uar_std": 0.03, "per_dataset": {}},
      ("default", "resnet50_lstm"): {"status": "not_run", "reason": "needs an accelerator",
                                     "command": "baselines --tiers=default --rows=x"},
      ("composite", "resnet50_lstm"): {"status": "not_run", "reason": "needs an accelerator",
                                       "command": "baselines --tiers=composite --rows=x"},
      # Another command (a dev-only setting): a note of its own.
      ("composite_dev", "resnet50_lstm"): {"status": "not_run", "reason": "needs an accelerator",
                                           "command": "baselines --tiers=composite_dev --rows=x "
                                                      "--set=folds=1"},
      ("composite_dev", "flow_resnet"): _done(0.72, 0.0, seeds=(0,)),
  }
  text = baselines.markdown_report(
      cells, rows=["chance_uniform", "flow_linear", "resnet50_lstm"],
      tiers=["default", "composite"], dev_rows=["flow_resnet", "resnet50_lstm"],
      dev_tiers=["composite_dev"],
      ours="flow_resnet", protocol={"seeds": [0, 1, 2]})
  assert text.startswith(baselines.BEGIN_MARK) and text.rstrip().endswith(baselines.END_MARK)
  lines = text.splitlines()
  flow = next(l for l in lines if l.startswith("| flow linear"))
  # Mean ± std per tier; a cell with one seed says so; params from any tier's cell.
  assert "| 444 | 0.700 ± 0.100 / 0.690 ± 0.100 | 0.650 / 0.640 (n=1) |" in flow
  chance = next(l for l in lines if l.startswith("| chance: uniform"))
  assert "0.330 ± 0.030 / 0.333 ± 0.030 | - |" in chance  # No composite cell: "-".
  resnet = next(l for l in lines if l.startswith("| ResNet-50"))
  assert resnet.endswith("| not run [1] | not run [1] |")
  # One note per row and reason, its command covering every tier it names.
  assert ("1. resnet50_lstm on `default`, `composite`: not run: needs an accelerator; command: "
          "`baselines --tiers=default,composite --rows=x`") in lines
  assert ("2. resnet50_lstm on `composite_dev`: not run: needs an accelerator; command: "
          "`baselines --tiers=composite_dev --rows=x --set=folds=1`") in lines
  # Per sub-dataset columns of the composite tier, sorted by name.
  header = lines.index("| method | `synthetic_samm` | `synthetic_smic_hs` |")
  assert lines[header + 2] == "| `flow_linear` | 0.800 ± 0.010 | 0.610 ± 0.020 |"
  dev = next(l for l in lines if "**(ours, chosen on dev)**" in l)
  assert "flow_resnet" in dev and "| 0.720 / 0.710 (n=1) |" in dev
  assert "| `default` | `flow_linear` | 0,1,2 | 95 | 2.0 3.5 |" in lines


def test_generated_block_replaces_only_its_part():
  block = f"{baselines.BEGIN_MARK}\nnew\n{baselines.END_MARK}\n"
  text = f"# Title\n\nprose\n\n{baselines.BEGIN_MARK}\nold\n{baselines.END_MARK}\n\nafter\n"
  assert baselines.replace_block(text, block) == (
      f"# Title\n\nprose\n\n{baselines.BEGIN_MARK}\nnew\n{baselines.END_MARK}\n\nafter\n")
  assert baselines.replace_block("# T\n", block) == "# T\n\n" + block
  with pytest.raises(ValueError, match=r"doc.md: the generated table's end mark"):
    baselines.replace_block(f"{baselines.BEGIN_MARK}\nold\n", block, path="doc.md")


def test_argument_errors_name_the_argument():
  with pytest.raises(ValueError, match=r"--rows: unknown row\(s\) \['flow_lin'\]"):
    baselines.parse_rows("flow_lin,ststnet", default=[])
  assert baselines.parse_rows("all", default=[]) == [r.key for r in baselines.ROWS]
  assert baselines.parse_rows(None, default=["ststnet"]) == ["ststnet"]
  with pytest.raises(ValueError, match=r"tier\(s\) \['composit'\] unknown"):
    baselines.parse_tiers("default,composit", default=())
  assert baselines.parse_tiers("", default=("x",)) == []
  with pytest.raises(ValueError, match=r"--seeds='0,a': expected comma-separated integers"):
    baselines.parse_seeds("0,a")
  with pytest.raises(ValueError, match=r"each once"):
    baselines.parse_seeds("1,1")
  assert baselines.parse_sets(["folds=('d/a', 'e/c')", "dataset.data_dir=/x"], "--set") == {
      "folds": ("d/a", "e/c"), "dataset.data_dir": "/x"}
  with pytest.raises(ValueError, match=r"--dev_set expects KEY=VALUE, got 'folds'"):
    baselines.parse_sets(["folds"], "--dev_set")
  # A command that fills a cell survives the shell: values are quoted Python literals.
  command = baselines.cell_command("ststnet", "composite_dev", [0], "/o", {"folds": ("d/a",)})
  assert command.endswith("--seeds=0 \"--set=folds=('d/a',)\"")
  assert baselines.cell_command("ststnet", "default", [0], "/o", {"x": 'a"b'}).endswith(
      "--seeds=0 '--set=x='\"'\"'a\"b'\"'\"''")
  with pytest.raises(ValueError, match=r"input=onset takes no model argument"):
    default_config.get_config("input=onset,model=ststnet")
  with pytest.raises(ValueError, match=r"model='ststnet': with input=frames the models are "
                                       r"\['pixel_linear', 'small_cnn'\]; the motion models"):
    default_config.get_config("model=ststnet")


def test_every_row_loads_on_every_tier_and_the_onset_row_reads_the_onset():
  for row in baselines.ROWS:
    for tier in baselines.TEST_TIERS + baselines.DEV_TIERS:
      if row.config:
        _, config = baselines.row_config(row, tier, {"num_train_steps": 7})
        assert config.dataset.builder_config == tier and config.num_train_steps == 7
  assert baselines.OURS in baselines.DEV_CANDIDATES
  _, onset = baselines.row_config(baselines.ROW_BY_KEY["onset_only"], "default", {})
  assert (onset.input.num_frames, onset.model.input_mode) == (1, "rgb")
  cfg = onset.input
  for onset_frame, offset_frame in ((5, 20), (0, 3), (11, 11)):
    indices, mask = input_pipeline.sample_frame_indices(
        30, onset_frame, (onset_frame + offset_frame) // 2, offset_frame,
        num_frames=cfg.num_frames, sampling=cfg.sampling, short_clip=cfg.short_clip,
        jitter=cfg.temporal_jitter)
    assert indices.tolist() == [onset_frame] and mask.tolist() == [True]
  _, linear = baselines.row_config(baselines.ROW_BY_KEY["pixel_linear"], "default", {})
  assert (linear.model.encoder, linear.model.spatial_pool, linear.model.input_mode) == (
      "identity", "grid", "diff")
  assert linear.model.spatial_pool_kwargs.grid_size == 8


def test_unrun_cells_are_reported_with_their_command(tmp_path):
  out = str(tmp_path / "runs")
  row = baselines.ROW_BY_KEY["resnet50_lstm"]
  cell = baselines.learned_cell(row, "composite", [0, 1], out, {"num_train_steps": 5},
                                train_missing=False)
  assert cell["status"] == "not_run" and "accelerator" in cell["reason"]
  assert cell["command"] == (
      f"python -m mer_jax.baselines --out_dir={out} --rows=resnet50_lstm --tiers=composite "
      "--dev_tiers= --seeds=0,1 --set=num_train_steps=5")
  with pytest.raises(ValueError, match=r"override no_such_field=1: the config has no field"):
    baselines.learned_cell(baselines.ROW_BY_KEY["flow_linear"], "default", [0], out,
                           {"no_such_field": 1}, train_missing=False)
  json.dumps(cell)


def test_dev_ranking_uses_only_candidates_with_every_dev_tier(monkeypatch):
  monkeypatch.setattr(baselines, "OURS", "off_apexnet_linear")
  tiers = ["dev", "low_amplitude_dev", "composite_dev"]
  cells = {
      ("dev", "off_apexnet_linear"): _done(0.98, 0.0), ("dev", "off_apexnet_std"): _done(0.97, 0.0),
      ("low_amplitude_dev", "off_apexnet_linear"): _done(0.89, 0.0),
      ("low_amplitude_dev", "off_apexnet_std"): _done(0.93, 0.0),
      ("composite_dev", "off_apexnet_linear"): _done(0.77, 0.0),
      ("composite_dev", "off_apexnet_std"): _done(0.60, 0.0),
      # flow_resnet misses a dev tier: left out of the mean, not compared on fewer tiers.
      ("dev", "flow_resnet"): _done(0.99, 0.0),
      ("low_amplitude_dev", "flow_resnet"): {"status": "not_run", "reason": "x", "command": "y"},
  }
  ranking = baselines.dev_ranking(cells, tiers)
  assert [k for k, _ in ranking] == ["off_apexnet_linear", "off_apexnet_std"]
  assert ranking[0][1] == pytest.approx((0.98 + 0.89 + 0.77) / 3)
  assert baselines.dev_best_per_tier(cells, tiers) == {
      "dev": "flow_resnet", "low_amplitude_dev": "off_apexnet_std",
      "composite_dev": "off_apexnet_linear"}
  monkeypatch.setattr(baselines, "DEV_TIERS", tuple(tiers))
  text = baselines._ranking_text(ranking, tiers)
  assert text == "`off_apexnet_linear` 0.880, `off_apexnet_std` 0.833"
  # A recorded choice the dev cells contradict is flagged, not silently kept ...
  assert "WARNING" in baselines._ranking_text(list(reversed(ranking)), tiers)
  # ... but only when every dev tier took part.
  partial = baselines._ranking_text(list(reversed(ranking)), tiers[:1])
  assert "WARNING" not in partial and partial.endswith("the choice uses all of "
                                                       f"{tiers})")
  assert baselines.dev_ranking(cells, []) == []
