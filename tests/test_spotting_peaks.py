"""Peak detection: constructed per-frame probability curves -> intervals (NumPy only, fast)."""

import dataclasses

import numpy as np
import pytest

from mer_jax.spotting import metrics
from mer_jax.spotting import peaks


def _probs(num_frames, micro=(), macro=(), level=0.9):
  """(T, 3) probabilities with micro / macro runs [onset, offset] at `level`."""
  p = np.zeros((num_frames, 3))
  for (on, off) in micro:
    p[on:off + 1, 1] = level
  for (on, off) in macro:
    p[on:off + 1, 2] = level
  p[:, 0] = 1 - p[:, 1] - p[:, 2]
  return p


def _params(**fields):
  """The a-priori parameters (no hysteresis, merge gap 0.1 s) with `fields` changed: the
  mechanics below are worked out for them, not for whatever the dev grid chose."""
  return dataclasses.replace(peaks.A_PRIORI, **fields)


def test_smooth_keeps_constants_and_edges():
  np.testing.assert_allclose(peaks.smooth(np.full(10, 0.3), 5), 0.3)
  # An even width is made odd (4 -> 5); edges average the frames that exist.
  out = peaks.smooth(np.array([0, 0, 1, 0, 0, 0.0]), 4)
  np.testing.assert_allclose(out, [1 / 3, 1 / 4, 1 / 5, 1 / 5, 1 / 4, 0])


def test_runs_above_and_merging():
  curve = np.array([0, 1, 1, 0, 1, 0, 0, 0, 1, 1.0])
  assert peaks.runs_above(curve, 0.5) == [(1, 2), (4, 4), (8, 9)]
  assert peaks.runs_above(curve, 0.5, merge_gap=2) == [(1, 4), (8, 9)]
  assert peaks.runs_above(np.zeros(5), 0.5) == []


def test_clean_runs_become_the_intervals_with_type_and_peak():
  p = _probs(200, micro=[(20, 31)], macro=[(80, 139)])
  p[25, 1] = 0.95  # the micro run's peak
  p[25, 0] = 0.05
  found = peaks.find_intervals(p, fps=30.0, params=_params(smooth_s=0.0))
  assert [(i.onset, i.offset, i.type) for i in found] == [(20, 31, "micro"), (80, 139, "macro")]
  assert found[0].apex == 25
  assert found[0].score == pytest.approx((0.9 * 11 + 0.95) / 12)


def test_smoothing_bridges_a_one_frame_dip_and_short_blips_are_dropped():
  p = _probs(120, micro=[(10, 24)], macro=[])
  p[17, 1], p[17, 0] = 0.0, 1.0   # a one-frame dip inside the micro run
  p[60:62, 1], p[60:62, 0] = 0.9, 0.1  # a 2-frame blip (< 0.1 s = 3 frames at 30 fps)
  raw = peaks.find_intervals(p, 30.0, _params(smooth_s=0.0, merge_gap_s=0.0))
  assert [(i.onset, i.offset) for i in raw] == [(10, 16), (18, 24)]  # the dip splits
  smoothed = peaks.find_intervals(p, 30.0, _params(smooth_s=0.1))
  assert [(i.onset, i.offset) for i in smoothed] == [(10, 24)]


def test_nms_keeps_the_likelier_type_of_one_event():
  p = np.zeros((100, 3))
  p[30:60, 1] = 0.55   # micro candidate, weaker
  p[30:60, 2] = 0.6    # macro candidate on the same frames (probabilities need not sum
  p[:, 0] = 0.0        # to 1 for the post-processing)
  # The 1 s micro run would be dropped by duration before suppression: rule off here.
  params = _params(smooth_s=0.0, drop_by_duration=False)
  found = peaks.find_intervals(p, 30.0, params)
  assert [(i.onset, i.offset, i.type) for i in found] == [(30, 59, "macro")]
  # Overlap of at most nms_overlap of the shorter interval keeps both.
  p2 = np.zeros((100, 3))
  p2[10:20, 1] = 0.9
  p2[15:60, 2] = 0.8   # shares 5 of the micro's 10 frames = 0.5: not above 0.5
  found = peaks.find_intervals(p2, 30.0, params)
  assert [(i.onset, i.offset, i.type) for i in found] == [(10, 19, "micro"), (15, 59, "macro")]


def test_parameters_are_seconds_so_they_scale_with_fps():
  # 0.1 s min length: 3 frames at 30 fps, 20 frames at 200 fps.
  params = _params(smooth_s=0.1, min_length_s=0.1)
  p = _probs(400, micro=[(100, 109)])  # 10 frames
  assert len(peaks.find_intervals(p, 30.0, params)) == 1
  assert peaks.find_intervals(p, 200.0, params) == []


@pytest.mark.parametrize("fps", [30.0, 200.0])
def test_candidates_whose_duration_contradicts_their_type_are_dropped(fps):
  # Runs given in seconds from onset to offset frame: (offset - onset) / fps, the duration
  # metrics.expression_type judges. Consistent: a 0.3 s micro, a 1 s macro; inconsistent:
  # a 0.6 s micro and a 0.3 s macro; on the boundary: a micro of exactly 0.5 s.
  def run(start_s, duration_s):
    onset = int(round(start_s * fps))
    return onset, onset + int(round(duration_s * fps))
  micro_ok, macro_ok = run(1.0, 0.3), run(3.0, 1.0)
  micro_long, macro_short, micro_edge = run(6.0, 0.6), run(8.0, 0.3), run(10.0, 0.5)
  p = _probs(int(12 * fps), micro=[micro_ok, micro_long, micro_edge],
             macro=[macro_ok, macro_short])
  assert metrics.expression_type(*micro_long, fps) == "macro"
  assert metrics.expression_type(*macro_short, fps) == "micro"
  assert metrics.expression_type(*micro_edge, fps) == "micro"
  off = peaks.find_intervals(p, fps, _params(smooth_s=0.0, drop_by_duration=False))
  assert [(i.onset, i.offset, i.type) for i in off] == [
      (*micro_ok, "micro"), (*macro_ok, "macro"), (*micro_long, "micro"),
      (*macro_short, "macro"), (*micro_edge, "micro")]
  on = peaks.find_intervals(p, fps, _params(smooth_s=0.0, drop_by_duration=True))
  assert [(i.onset, i.offset, i.type) for i in on] == [
      (*micro_ok, "micro"), (*macro_ok, "macro"), (*micro_edge, "micro")]
  # Kept intervals are unchanged by the rule (apex, score).
  assert on == [i for i in off if (i.onset, i.offset) != micro_long
                and (i.onset, i.offset) != macro_short]


def test_a_dropped_candidate_no_longer_suppresses_the_other_type():
  # One 0.6 s event at 30 fps scored likelier micro than macro: without the rule the micro
  # candidate wins the suppression; with it, it is dropped first and the macro one stays.
  p = np.zeros((100, 3))
  p[30:49, 1] = 0.8   # frames 30..48: (48 - 30) / 30 = 0.6 s
  p[30:49, 2] = 0.6
  off = peaks.find_intervals(p, 30.0, _params(smooth_s=0.0, drop_by_duration=False))
  assert [(i.onset, i.offset, i.type) for i in off] == [(30, 48, "micro")]
  on = peaks.find_intervals(p, 30.0, _params(smooth_s=0.0, drop_by_duration=True))
  assert [(i.onset, i.offset, i.type) for i in on] == [(30, 48, "macro")]


def test_the_duration_rule_option():
  assert peaks.FIRST_DEV_CHOICE.drop_by_duration is True  # chosen by the first dev grid
  assert peaks.PeakParams().drop_by_duration is True      # chosen for today's ensemble
  assert peaks.A_PRIORI.drop_by_duration is False         # the behaviour before it
  # Configs reach PeakParams through float(): 1.0 / 0.0 are read as booleans.
  assert peaks.PeakParams(drop_by_duration=1.0).drop_by_duration is True
  assert peaks.PeakParams(drop_by_duration=0.0) == peaks.PeakParams(drop_by_duration=False)
  with pytest.raises(ValueError, match="PeakParams.drop_by_duration must be a boolean"):
    peaks.PeakParams(drop_by_duration=0.5)
  with pytest.raises(ValueError, match="PeakParams.drop_by_duration must be a boolean"):
    peaks.PeakParams(drop_by_duration="yes")


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="probabilities must be"):
    peaks.find_intervals(np.zeros((10, 2)), 30.0)
  with pytest.raises(ValueError, match="fps"):
    peaks.find_intervals(np.zeros((10, 3)), 0.0)
  with pytest.raises(ValueError, match="threshold"):
    peaks.PeakParams(threshold=1.5)
  with pytest.raises(ValueError, match="smooth_s"):
    peaks.PeakParams(smooth_s=-1)


def test_hysteresis_keeps_a_sagging_expression_whole():
  # A 1.5 s macro-expression whose score sags on its motionless plateau (frames 40..69),
  # then a bump that stays under the threshold.
  p = _probs(200, macro=[(30, 39), (70, 79)])
  p[40:70, 2], p[40:70, 0] = 0.4, 0.6
  p[120:140, 2], p[120:140, 0] = 0.45, 0.55
  plain = peaks.find_intervals(p, 30.0, _params(smooth_s=0.0))
  assert [(i.onset, i.offset) for i in plain] == [(30, 39), (70, 79)]   # two fragments
  held = peaks.find_intervals(p, 30.0, _params(smooth_s=0.0, low_threshold=0.3))
  assert [(i.onset, i.offset, i.type) for i in held] == [(30, 79, "macro")]
  assert held[0].score == pytest.approx((20 * 0.9 + 30 * 0.4) / 50)
  # The bump reaches low_threshold but never threshold: no interval, with or without.
  assert peaks.find_intervals(p[100:], 30.0, _params(smooth_s=0.0, low_threshold=0.3)) == []
  # low_threshold at or above threshold is the plain rule.
  assert peaks.find_intervals(p, 30.0, _params(smooth_s=0.0, low_threshold=0.7)) == plain
  with pytest.raises(ValueError, match="PeakParams.low_threshold must be in"):
    peaks.PeakParams(low_threshold=-0.1)


def test_defaults_are_the_dev_choice_and_old_fields_have_their_former_behaviour():
  chosen = peaks.PeakParams()
  assert (chosen.threshold, chosen.low_threshold, chosen.merge_gap_s, chosen.smooth_s,
          chosen.min_length_s, chosen.drop_by_duration) == (0.5, 1.0, 0.3, 0.2, 0.2, True)
  # Each value in BEFORE_FIELD gives the behaviour from before its field existed, as the
  # a-priori parameters (which predate every added field) hold.
  for name, value in peaks.BEFORE_FIELD.items():
    assert getattr(peaks.A_PRIORI, name) == value, name
