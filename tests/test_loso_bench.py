"""The LOSO wall-time benchmark (benchmarks/loso_bench.py): a smoke run of two modes."""

import json

import pytest

from benchmarks import loso_bench
from benchmarks import member_step_bench


@pytest.mark.slow
def test_loso_bench_times_modes_in_fresh_processes(data_dir, tmp_path):
  out = tmp_path / "loso.json"
  # Frame input: the serial run decodes clips with Grain, the resident one gathers them from
  # the frames decoded once on the device (the flow path runs in the member-step test below).
  assert loso_bench.main(["--tiers", "tiny", "--modes", "serial,resident", "--data_dir",
                          data_dir, "--folds", "s00", "--num_train_steps", "2", "--input",
                          "frames", "--quiet_load", "0", "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  assert result["input"] == "frames"
  tier = result["tiers"]["tiny"]
  assert set(tier["runs"]) == {"serial", "resident"}
  for runs in tier["runs"].values():
    (run,) = runs
    assert run["folds"] == 1 and run["seconds"] > 0 and run["peak_rss_mib"] > 0
    # --quiet_load 0: no wait, and so no claim that the machine was quiet.
    assert run["waited_s"] == pytest.approx(0.0, abs=1.0) and run["quiet"] is False
  # The same fold, steps and batches (one device each): the same model, the same scores.
  assert tier["runs"]["serial"][0]["uf1"] == pytest.approx(tier["runs"]["resident"][0]["uf1"])
  assert tier["speedup_over_serial"]["serial"] == 1.0


def test_loso_bench_refuses_unknown_modes(tmp_path):
  with pytest.raises(SystemExit):
    loso_bench.main(["--modes", "warp", "--data_dir", str(tmp_path), "--out",
                     str(tmp_path / "x.json")])


def test_markdown_marks_runs_started_on_a_busy_machine():
  run = {"folds": 2, "uf1": 0.5, "peak_rss_mib": 100.0}
  result = {"device": "CPU", "date": "2026-11-30", "quiet_load": 1.0, "tiers": {"tiny": {
      "runs": {"serial": [{**run, "load_before": 0.4, "quiet": True}],
               "parallel": [{**run, "load_before": 1.7, "quiet": False}]},
      "median_seconds": {"serial": 10.0, "parallel": 5.0},
      "speedup_over_serial": {"serial": 1.0, "parallel": 2.0}}}}
  table = loso_bench.markdown(result)
  assert "| 0.40 |" in table and "| 1.70* |" in table and "provisional" in table


@pytest.mark.slow
def test_member_step_bench_times_each_layout(data_dir, tmp_path):
  out = tmp_path / "member_step.json"
  assert member_step_bench.main(["--data_dir", data_dir, "--tier", "tiny", "--layouts",
                                 "1x1,2x2", "--steps", "2", "--rounds", "2",
                                 "--quiet_load", "0", "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  rows = {(r["members"], r["devices"]): r for r in result["layouts"]}
  assert set(rows) == {(1, 1), (2, 2)}
  for (members, _), row in rows.items():
    assert len(row["rounds_ms_per_step"]) == 2 and row["ms_per_step"] > 0
    assert row["ms_per_member_step"] == pytest.approx(row["ms_per_step"] / members)
    # --quiet_load 0 does not wait, so no span counts as quiet.
    assert len(row["rounds_load_before"]) == 2 and row["quiet"] is False


def test_member_step_bench_refuses_bad_layouts(tmp_path):
  for bad in ("2", "0x1", "ax2"):
    with pytest.raises(SystemExit):
      member_step_bench.main(["--data_dir", str(tmp_path), "--layouts", bad,
                              "--out", str(tmp_path / "x.json")])
