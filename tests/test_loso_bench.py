"""The LOSO wall-time benchmark (benchmarks/loso_bench.py): a smoke run of two modes."""

import json

import pytest

from benchmarks import loso_bench


@pytest.mark.slow
def test_loso_bench_times_modes_in_fresh_processes(data_dir, tmp_path):
  out = tmp_path / "loso.json"
  assert loso_bench.main(["--tiers", "tiny", "--modes", "serial,resident", "--data_dir",
                          data_dir, "--folds", "s00", "--num_train_steps", "2",
                          "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  tier = result["tiers"]["tiny"]
  assert set(tier["runs"]) == {"serial", "resident"}
  for runs in tier["runs"].values():
    (run,) = runs
    assert run["folds"] == 1 and run["seconds"] > 0 and run["peak_rss_mib"] > 0
  # The same fold, steps and batches (one device each): the same model, the same scores.
  assert tier["runs"]["serial"][0]["uf1"] == pytest.approx(tier["runs"]["resident"][0]["uf1"])
  assert tier["speedup_over_serial"]["serial"] == 1.0


def test_loso_bench_refuses_unknown_modes(tmp_path):
  with pytest.raises(SystemExit):
    loso_bench.main(["--modes", "warp", "--data_dir", str(tmp_path), "--out",
                     str(tmp_path / "x.json")])
