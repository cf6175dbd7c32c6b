"""Re-scoring finished spotting runs with other peak parameters (mer_jax.spotting.rescore).

The strong check (re-scoring with the run's own parameters reproduces the
trainer's results.json) needs a trained run, so it lives in the slow trainer
test of tests/test_spotting_train.py; these are the fast ones.
"""

import dataclasses
import json

import numpy as np
import pytest

from configs import spotting as spotting_config
from mer_jax.spotting import data as data_lib
from mer_jax.spotting import metrics
from mer_jax.spotting import peaks as peaks_lib
from mer_jax.spotting import rescore


def _video(video_id, truths, num_frames=300):
  return data_lib.Video(video_id, video_id.split("/")[0], 30.0,
                        np.zeros((num_frames, 4, 4), np.uint8),
                        np.zeros((num_frames, 2, 2, 3), np.float32),
                        np.zeros(num_frames, np.int32), truths,
                        np.zeros((0, 2, 2, 3), np.float32), np.zeros(0, np.int32))


def _probabilities(num_frames, events):
  """(T, 3) probabilities with p(type) = 0.9 over each (onset, offset, type), else background."""
  p = np.zeros((num_frames, 3))
  p[:, 0] = 1.0
  for onset, offset, kind in events:
    column = 1 if kind == "micro" else 2
    p[onset:offset + 1] = 0.05
    p[onset:offset + 1, column] = 0.9
  return p


def _run(folds):
  config = spotting_config.get_config("tiny")
  # The numbers below are worked out for the a-priori parameters (3-frame smoothing).
  config.peaks.update(dataclasses.asdict(peaks_lib.A_PRIORI))
  return rescore.FinishedRun("/fake", config, {"num_folds": len(folds)}, folds)


def test_grid_search_scores_every_point_and_picks_the_best_earliest_on_ties():
  # One true micro (15 frames) and macro (60 frames) per video; the "spotter" also
  # fires for 3 frames on a nuisance: smoothed over 3 frames, it is 0.6, 0.9, 0.6 there,
  # so min_length_s = 0.15 s (4 frames) or threshold 0.7 (1 frame left) removes it.
  truths = {
      "s00/v00": [metrics.Interval(50, 64, "micro"), metrics.Interval(150, 209, "macro")],
      "s01/v00": [metrics.Interval(20, 34, "micro"), metrics.Interval(100, 159, "macro")]}
  videos = {vid: _video(vid, t) for vid, t in truths.items()}
  folds = {vid.split("/")[0]: {vid: {
      "probabilities": _probabilities(300, [(t.onset, t.offset, t.type) for t in ts]
                                      + [(250, 252, "micro")]),
      "intervals": []}} for vid, ts in truths.items()}
  run = _run(folds)
  base = rescore.run_params(run)
  assert base == peaks_lib.A_PRIORI
  scores = rescore.spotting_scores(run, videos, base)
  assert (scores.overall.tp, scores.overall.fp, scores.overall.fn) == (4, 2, 0)

  grid = {"min_length_s": (0.1, 0.15, 0.2), "threshold": (0.5, 0.7)}
  rows, chosen = rescore.grid_search(run, videos, grid)
  assert [(r["peaks"]["min_length_s"], r["peaks"]["threshold"]) for r in rows] == [
      (0.1, 0.5), (0.1, 0.7), (0.15, 0.5), (0.15, 0.7), (0.2, 0.5), (0.2, 0.7)]
  assert [r["overall"]["fp"] for r in rows] == [2, 0, 0, 0, 0, 0]
  assert [r["overall"]["tp"] for r in rows] == [4] * 6
  # Five points tie at F1 1: the earliest in grid order is chosen.
  assert chosen == dict(rows[1]["peaks"]) and chosen["threshold"] == 0.7
  assert chosen["smooth_s"] == base.smooth_s  # fields off the grid keep the run's
  assert chosen["drop_by_duration"] is False
  with pytest.raises(ValueError, match=r"\['thresh'\] are not PeakParams fields"):
    rescore.grid_search(run, videos, {"thresh": (0.5,)})


def test_a_joint_grid_over_several_runs_picks_the_best_mean():
  truths = {"s00/v00": [metrics.Interval(50, 64, "micro")],
            "s01/v00": [metrics.Interval(20, 34, "micro")]}
  videos = {vid: _video(vid, t) for vid, t in truths.items()}

  def run_at(level, workdir):
    folds = {}
    for vid, ts in truths.items():
      p = _probabilities(300, [(t.onset, t.offset, t.type) for t in ts])
      p[p[:, 1] == 0.9, 1] = level   # this seed's spotter is this sure of the expressions
      folds[vid.split("/")[0]] = {vid: {"probabilities": p, "intervals": []}}
    run = _run(folds)
    return dataclasses.replace(run, workdir=workdir, results={**run.results, "dataset": "d"})

  sure, unsure = run_at(0.9, "/sure"), run_at(0.6, "/unsure")
  grid = {"threshold": (0.7, 0.5)}
  rows, chosen = rescore.grid_search_runs([sure, unsure], [videos, videos], grid)
  assert [[r["overall"]["f1"] for r in row["per_run"]] for row in rows] == [[1.0, 0.0],
                                                                           [1.0, 1.0]]
  assert [row["mean_f1"] for row in rows] == [0.5, 1.0] and chosen["threshold"] == 0.5
  assert [r["workdir"] for r in rows[0]["per_run"]] == ["/sure", "/unsure"]
  # The sure run alone keeps the earlier point (a tie at F1 1).
  assert rescore.grid_search(sure, videos, grid)[1]["threshold"] == 0.7
  other = dataclasses.replace(unsure, results={**unsure.results, "dataset": "e"})
  with pytest.raises(ValueError, match="a joint grid needs runs of one instance"):
    rescore.grid_search_runs([sure, other], [videos, videos], grid)


def test_several_workdirs_need_the_grid(tmp_path, capsys):
  with pytest.raises(SystemExit):
    rescore.main(["--workdir", f"{tmp_path}/a,{tmp_path}/b", "--out", str(tmp_path / "x")])
  assert "several --workdir values need --grid" in capsys.readouterr().err


def test_grid_lists_the_earlier_choice_first_and_holds_the_defaults():
  for name, values in rescore.GRID.items():
    assert values[0] == getattr(peaks_lib.FIRST_DEV_CHOICE, name), name
    assert getattr(peaks_lib.PeakParams(), name) in values, name
  # The trainer's config carries the same defaults as PeakParams.
  config = spotting_config.get_config()
  assert peaks_lib.PeakParams(**config.peaks.to_dict()) == peaks_lib.PeakParams()


def test_rescoring_what_is_not_a_finished_run_names_the_path(tmp_path, capsys):
  missing = tmp_path / "nothing"
  with pytest.raises(rescore.NotAFinishedRunError, match="nothing.*is not a directory"):
    rescore.load_run(str(missing))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(rescore.NotAFinishedRunError, match=r"empty/config\.json does not exist"):
    rescore.load_run(str(empty))
  # A recognition workdir: a config without peaks.
  (empty / "config.json").write_text(json.dumps({"model": {"name": "resnet18"}}))
  with pytest.raises(rescore.NotAFinishedRunError, match="is not a spotting config"):
    rescore.load_run(str(empty))
  # A spotting config whose run has not finished (no results.json).
  (empty / "config.json").write_text(spotting_config.get_config("tiny").to_json())
  with pytest.raises(rescore.NotAFinishedRunError, match=r"empty/results\.json does not exist"):
    rescore.load_run(str(empty))
  # A results.json, but a LOSO fold without its predictions.
  (empty / "results.json").write_text(json.dumps({"spotting": {}, "run_identity": "x",
                                                  "num_folds": 2}))
  (empty / "folds" / "s00").mkdir(parents=True)
  with pytest.raises(rescore.NotAFinishedRunError, match=r"s00/predictions\.json does not exist"):
    rescore.load_run(str(empty))
  # The command line: one error line naming the path, exit status 2.
  assert rescore.main(["--workdir", str(missing), "--out", str(tmp_path / "o.json")]) == 2
  assert f"error: {str(missing)!r} is not a directory" in capsys.readouterr().err
  assert not (tmp_path / "o.json").exists()


def test_peaks_from_reads_a_grid_output_or_results(tmp_path):
  grid_out = tmp_path / "grid.json"
  grid_out.write_text(json.dumps({"chosen": {"threshold": 0.7}, "results": {}}))
  assert rescore.params_from_file(str(grid_out)) == {"threshold": 0.7}
  other = tmp_path / "other.json"
  other.write_text(json.dumps({"spotting": {}}))
  with pytest.raises(ValueError, match="other.json: holds neither 'chosen'"):
    rescore.params_from_file(str(other))


def test_duration_rule_of_the_run_the_flags_and_peaks_from(tmp_path):
  # A run whose spotter fires micro for 0.6 s on its true macro-expression (frames
  # 100..159): scored without the duration rule that is a micro FP (and a macro FN); with
  # it, the micro candidate is dropped and the weaker macro candidate on the same frames
  # (suppressed before) becomes the TP.
  truths = {"s00/v00": [metrics.Interval(100, 159, "macro")],
            "s01/v00": [metrics.Interval(50, 64, "micro")]}
  videos = {vid: _video(vid, t) for vid, t in truths.items()}
  p = _probabilities(300, [(100, 117, "micro")])
  p[100:160, 2] = 0.6
  p[100:160, 0] = 0.0
  folds = {"s00": {"s00/v00": {"probabilities": p, "intervals": []}},
           "s01": {"s01/v00": {"probabilities": _probabilities(300, [(50, 64, "micro")]),
                               "intervals": []}}}
  run = _run(folds)
  base = rescore.run_params(run)
  assert base.drop_by_duration is False
  without = rescore.spotting_scores(run, videos, base).per_type
  assert (without["micro"].fp, without["macro"].tp, without["macro"].fn) == (1, 0, 1)
  with_rule = rescore.spotting_scores(
      run, videos, dataclasses.replace(base, drop_by_duration=True)).per_type
  assert (with_rule["micro"].fp, with_rule["macro"].tp, with_rule["micro"].tp) == (0, 1, 1)

  # A run made before the option existed has no such config field: it was scored
  # without the rule, whatever today's default.
  old = _run(folds)
  del old.config.peaks["drop_by_duration"], old.config.peaks["low_threshold"]
  assert rescore.run_params(old).drop_by_duration is False
  assert rescore.run_params(old).low_threshold == 1.0  # no hysteresis: the rule before it
  assert rescore.run_params(_run(folds)) == peaks_lib.A_PRIORI

  # Flags and --peaks_from: true/false parsed; fields a file lacks keep the run's own.
  parser = rescore.build_parser()
  args = parser.parse_args(["--workdir", "w", "--out", "o", "--drop_by_duration", "TRUE"])
  assert rescore.chosen_params(base, args).drop_by_duration is True
  old_grid = tmp_path / "old_grid.json"   # a --grid output written before the option
  old_grid.write_text(json.dumps({"chosen": {"threshold": 0.7, "min_length_s": 0.2}}))
  args = parser.parse_args(["--workdir", "w", "--out", "o", "--peaks_from", str(old_grid)])
  assert rescore.chosen_params(base, args) == dataclasses.replace(
      base, threshold=0.7, min_length_s=0.2)
  args = parser.parse_args(["--workdir", "w", "--out", "o", "--peaks_from", str(old_grid),
                            "--drop_by_duration", "1"])
  assert rescore.chosen_params(base, args).drop_by_duration is True
  with pytest.raises(SystemExit):
    parser.parse_args(["--workdir", "w", "--out", "o", "--drop_by_duration", "maybe"])
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"chosen": {"threshold": 0.7, "drop_short": True}}))
  with pytest.raises(ValueError, match=r"bad.json: 'chosen' holds \['drop_short'\]"):
    rescore.params_from_file(str(bad))
